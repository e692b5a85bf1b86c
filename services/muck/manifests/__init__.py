"""Electronic manifests (电子联单): issued for a load, moved along by the geofences and by people."""
