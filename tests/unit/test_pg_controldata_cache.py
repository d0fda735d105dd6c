"""ControlDataCache: pg_controldata runs again only when global/pg_control changed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from tests.support.pg_settings import local_pg_settings

from pgha.pg import controldata
from pgha.pg.controldata import ControlDataCache
from pgha.pg.settings import PgSettings


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each fake pg_controldata run appends to the list and reports its number."""
    calls: list[int] = []

    async def fake(settings: PgSettings) -> dict[str, str]:
        if not (settings.data_dir / "global" / "pg_control").exists():
            return {}
        calls.append(len(calls) + 1)
        return {"max_connections setting": str(len(calls))}

    monkeypatch.setattr(controldata, "read_controldata", fake)
    return calls


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_unchanged_settled_file_is_read_once(tmp_path: Path, runs: list[int]) -> None:
    settings = local_pg_settings(tmp_path)
    control = settings.data_dir / "global" / "pg_control"
    control.parent.mkdir(parents=True)
    control.write_bytes(b"x" * 8)
    _age(control, 10)
    cache = ControlDataCache()
    first = await cache.read(settings)
    first["max_connections setting"] = "changed by the caller"  # a copy
    assert await cache.read(settings) == {"max_connections setting": "1"}
    assert runs == [1]
    control.write_bytes(b"y" * 8)  # rewritten: read again
    _age(control, 5)
    assert await cache.read(settings) == {"max_connections setting": "2"}
    assert await cache.read(settings) == {"max_connections setting": "2"}
    assert runs == [1, 2]


async def test_recently_written_file_is_read_every_time(tmp_path: Path,
                                                        runs: list[int]) -> None:
    settings = local_pg_settings(tmp_path)
    control = settings.data_dir / "global" / "pg_control"
    control.parent.mkdir(parents=True)
    control.write_bytes(b"x" * 8)  # modified just now: a write in the same tick would not show
    cache = ControlDataCache()
    await cache.read(settings)
    await cache.read(settings)
    assert runs == [1, 2]


async def test_missing_file(tmp_path: Path, runs: list[int]) -> None:
    cache = ControlDataCache()
    assert await cache.read(local_pg_settings(tmp_path)) == {}
    assert runs == []
