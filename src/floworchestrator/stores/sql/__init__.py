"""Explicit SQL, kept per dialect in ``.sql`` files next to this module.

Each dialect folder holds ``schema.sql`` (the whole current schema),
``migrations/NNNN_name.sql`` (ordered steps from version NNNN-1 to NNNN) and
``queries.sql`` (named queries, each introduced by a ``-- name: <name>``
line). :func:`queries` loads the named queries once; a test checks every
dialect defines the same names.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def _read(dialect: str, name: str) -> str:
    return resources.files(__package__).joinpath(dialect, name).read_text(encoding="utf-8")


@functools.cache
def queries(dialect: str) -> dict[str, str]:
    """The named queries of a dialect."""
    text = _read(dialect, "queries.sql")
    parts = _NAME.split(text)
    out: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = "\n".join(line for line in body.strip().splitlines() if not line.lstrip().startswith("--")).strip()
        if name in out:
            raise ValueError(f"query {name!r} is defined twice in {dialect}/queries.sql")
        out[name] = sql.rstrip(";")
    return out


def schema(dialect: str) -> str:
    """The full current schema of a dialect."""
    return _read(dialect, "schema.sql")


@functools.cache
def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration of a dialect, in order."""
    folder = resources.files(__package__).joinpath(dialect, "migrations")
    out = []
    for entry in folder.iterdir():
        m = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(out)


def schema_version(dialect: str) -> int:
    """The schema version this code expects: 1, or the number of the newest migration."""
    steps = migrations(dialect)
    return steps[-1][0] if steps else 1
