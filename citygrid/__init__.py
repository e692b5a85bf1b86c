"""CityGrid shared kit: the plumbing every service stands on (no domain words live here)."""
