"""Stores: where flows, runs and steps live. Pick one by URL with :func:`open_store`."""

from __future__ import annotations

from ..exceptions import ConfigurationError
from .base import Store

__all__ = ["Store", "open_store"]


def open_store(url: str) -> Store:
    """Create (not yet open) the store a URL names.

    ``memory://`` — in this process only; ``sqlite:///relative/path.db``,
    ``sqlite:////absolute/path.db`` or ``sqlite:///:memory:``.
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
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ConfigurationError(f"unknown store URL scheme {scheme!r} in {url!r} (use memory:// or sqlite:///path.db)")
