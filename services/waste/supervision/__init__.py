"""Bin-side supervision: the AI boxes' events and the cameras' alarms at drop-off points."""
