"""Sequence models: one backbone (`backbone.py`) and the swappable parts it is built from."""
