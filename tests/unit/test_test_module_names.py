"""Every test module's basename is unique across tests/: the test directories are not packages,
so pytest refuses to collect the whole suite when two share a name (a unit run alone would not
notice)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, count in names.items() if count > 1]
