"""The API gateway: the one door of CityGrid for frontends and other departments."""
