"""Everything public is exported, and everything exported exists (after httpx's test)."""

from __future__ import annotations

import types

import floworchestrator


def test_all_names_exist() -> None:
    missing = [name for name in floworchestrator.__all__ if not hasattr(floworchestrator, name)]
    assert missing == []


def test_all_has_no_duplicates() -> None:
    assert len(floworchestrator.__all__) == len(set(floworchestrator.__all__))


def test_every_public_attribute_is_exported() -> None:
    public = {
        name
        for name, value in vars(floworchestrator).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - set(floworchestrator.__all__) == set()


def test_exported_members_belong_to_the_package() -> None:
    for name in floworchestrator.__all__:
        if name.startswith("__"):
            continue
        member = getattr(floworchestrator, name)
        assert member.__module__.split(".")[0] == "floworchestrator", name


def test_version_is_exported() -> None:
    assert "__version__" in floworchestrator.__all__
    assert isinstance(floworchestrator.__version__, str)
    assert floworchestrator.__version__
