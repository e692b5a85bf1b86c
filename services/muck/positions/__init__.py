"""Positions: intake from terminals and vendors' platforms, the store, the latest of every truck, tracks."""
