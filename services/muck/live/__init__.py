"""The live map feed: trucks' positions and transport violations as server-sent events."""
