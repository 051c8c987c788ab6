"""SQLite storage: one writer thread, reader threads, schema migrations per feature."""

from .database import Database, register_migrations

__all__ = ["Database", "register_migrations"]
