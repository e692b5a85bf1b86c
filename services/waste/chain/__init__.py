"""The collection chain: pickups, weighings and movements in, trips and their checks, figures."""
