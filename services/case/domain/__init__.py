"""Pure case-domain logic: no FastAPI, no SQLAlchemy, no I/O."""
