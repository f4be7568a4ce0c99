"""Storage on `databases` + SQLAlchemy Core: SQLite by default, PostgreSQL to scale out."""

from hub.store.sql import SqlStore

__all__ = ["SqlStore"]
