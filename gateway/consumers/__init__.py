"""API consumers: the register, their keys, the changes every replica follows, the admin routes."""
