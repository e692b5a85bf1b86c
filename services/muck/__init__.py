"""The muck service: construction-waste transport supervised from the trucks' JT/T 808 terminals."""
