"""Database layer: typed models, async engine and sessions, Alembic migrations."""
