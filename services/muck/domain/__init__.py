"""Pure rules of the muck service: windows, manifests, geofences, violation rules, tracks."""
