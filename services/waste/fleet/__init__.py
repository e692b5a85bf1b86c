"""The sanitation fleet's positions: its terminals over JT/T 808 and its vendors' platforms over
HTTP, through the kit's fleet intake (``citygrid.fleet``), into the service's own positions table."""
