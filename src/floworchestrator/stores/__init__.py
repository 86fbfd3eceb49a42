"""Stores: where flows, runs and steps live. Pick one by URL with :func:`open_store`."""

from __future__ import annotations

from ..exceptions import ConfigurationError
from .base import Store

__all__ = ["Store", "open_store"]


def open_store(url: str) -> Store:
    """Create (not yet open) the store a URL names.

    ``memory://`` — in this process only; ``sqlite:///relative/path.db``,
    ``sqlite:////absolute/path.db`` or ``sqlite:///:memory:``;
    ``postgresql://user:password@host:5432/dbname`` (or ``postgres://``), which
    needs the ``postgres`` extra: ``pip install 'floworchestrator[postgres]'``.
    """
    if url == "memory://" or url == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite://"):
        from .sqlite import SQLiteStore

        path = url[len("sqlite://"):]
        if path.startswith("/"):
            path = path[1:]
        if not path:
            raise ConfigurationError(f"store URL {url!r} names no file; use sqlite:///path/to/file.db")
        return SQLiteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise ConfigurationError(
                f"store URL {url.split('://', 1)[0]}://... needs the PostgreSQL driver, which is not installed "
                f"({exc.name or exc}): pip install 'floworchestrator[postgres]'"
            ) from exc
        return PostgresStore(url)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ConfigurationError(
        f"unknown store URL scheme {scheme!r} in {url!r} (use memory://, sqlite:///path.db or postgresql://host/dbname)"
    )
