"""Timing values that would take the cluster down (issue 10 B8): ``ttl`` below 5 s,
``loop_wait`` or ``retry_timeout`` below 1 s (``retry_timeout: 0`` makes every DCS call time
out). Refused with the key and the valid range wherever an operator writes them (the model,
``PATCH``/``PUT /config``; ``edit-config`` and ``validate-config``/``run`` in their own test
files); when found in the DCS anyway, never used: the default instead, and one warning."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from pgha.agent.commands import CommandHandler
from pgha.agent.observe import Observer
from pgha.config import ConfigError, DynamicConfig, dynamic_config_warnings, parse_dynamic_config
from pgha.core.commands import PatchConfig, ReplaceConfig
from pgha.core.model import HA_MINIMUMS, HaSettings
from pgha.dcs.memory import MemoryBackend, MemoryStore
from pgha.dcs.store import ClusterStore

BAD = [("ttl", 0, "ttl: must be >= 5"), ("ttl", 4.9, "ttl: must be >= 5"),
       ("retry_timeout", 0, "retry_timeout: must be >= 1"),
       ("loop_wait", 0, "loop_wait: must be >= 1")]
GOOD = {"ttl": 10, "loop_wait": 1, "retry_timeout": 2}  # the smallest values our tests use


@pytest.mark.parametrize(("key", "value", "error"), BAD)
def test_the_model_refuses_values_below_the_minimum(key: str, value: float, error: str) -> None:
    with pytest.raises(ValidationError):
        DynamicConfig.model_validate({key: value})
    with pytest.raises(ConfigError) as info:
        parse_dynamic_config({**GOOD, key: value})
    assert str(info.value) == error  # one line: the key and the valid range


def test_the_minimums_themselves_and_the_values_in_use_are_valid() -> None:
    assert parse_dynamic_config(dict(HA_MINIMUMS)).ttl == 5
    assert parse_dynamic_config({"ttl": 5, "loop_wait": 1, "retry_timeout": 1}).ttl == 5
    assert parse_dynamic_config(GOOD).retry_timeout == 2


@pytest.mark.parametrize(("key", "value"), [("ttl", 0), ("ttl", 4), ("retry_timeout", 0),
                                            ("retry_timeout", 0.5), ("loop_wait", 0)])
def test_ha_settings_fall_back_to_the_default_below_the_minimum(key: str, value: float) -> None:
    settings = HaSettings.from_config({**GOOD, key: value})
    assert getattr(settings, key) == getattr(HaSettings(), key)
    assert dynamic_config_warnings({**GOOD, key: value}) == [
        f"config.{key}: {value!r} is not usable (a number >= {HA_MINIMUMS[key]:g} is "
        f"needed): using the default {getattr(HaSettings(), key):g}"]


def test_ha_settings_keep_values_at_the_minimum() -> None:
    settings = HaSettings.from_config({"ttl": 5, "loop_wait": 1, "retry_timeout": 1})
    assert (settings.ttl, settings.loop_wait, settings.retry_timeout) == (5, 1, 1)
    assert dynamic_config_warnings({"ttl": 5, "loop_wait": 1, "retry_timeout": 1}) == []


def parts(kv: MemoryStore) -> tuple[ClusterStore, Observer, CommandHandler]:
    store = ClusterStore(kv, "/service/", "demo", "m0")
    observer = Observer(store, SimpleNamespace(), SimpleNamespace(),  # type: ignore[arg-type]
                        HaSettings())
    handler = CommandHandler("m0", store, observer, SimpleNamespace(),  # type: ignore[arg-type]
                             asyncio.Event(), request_reload=lambda: None, restart_timeout=30.0)
    return store, observer, handler


@pytest.mark.parametrize(("key", "command"), [
    ("ttl", PatchConfig(patch={"ttl": 0})),
    ("retry_timeout", PatchConfig(patch={"retry_timeout": 0})),
    ("ttl", ReplaceConfig(config={**GOOD, "ttl": 0})),
    ("retry_timeout", ReplaceConfig(config={**GOOD, "retry_timeout": 0})),
], ids=["patch-ttl", "patch-retry", "put-ttl", "put-retry"])
async def test_patch_and_put_config_refuse_values_below_the_minimum(key: str,
                                                                    command: Any) -> None:
    kv = MemoryStore(MemoryBackend(), ttl=30, timeout=2.0)
    store, _, handler = parts(kv)
    async with kv:
        assert await store.write_config(GOOD)
        outcome = await handler.submit(command)
        assert outcome.code == 400
        assert f"{key}: must be >= {HA_MINIMUMS[key]:g}" in outcome.message
        assert "\n" not in outcome.message
        assert (await store.read_config())[0] == GOOD  # nothing written


async def test_a_member_ignores_values_below_the_minimum_in_the_dcs_and_warns_once(
        caplog: pytest.LogCaptureFixture) -> None:
    kv = MemoryStore(MemoryBackend(), ttl=30, timeout=2.0)
    store, observer, _ = parts(kv)
    async with kv:
        assert await store.write_config({"ttl": 0, "loop_wait": 1, "retry_timeout": 0})
        with caplog.at_level(logging.WARNING, logger="pgha.agent"):
            for _ in range(3):
                assert (await observer.dcs_view(2.0)) is not None
    settings = observer.settings
    assert (settings.ttl, settings.loop_wait, settings.retry_timeout) == (30, 1, 10)
    lines = [r.getMessage() for r in caplog.records if r.name == "pgha.agent"]
    assert lines == [
        "DCS config.ttl: 0 is not usable (a number >= 5 is needed): using the default 30",
        "DCS config.retry_timeout: 0 is not usable (a number >= 1 is needed): using the "
        "default 10"]


def test_numbers_written_as_strings_in_the_dcs_are_used_not_ignored() -> None:
    """PATCH /config writes the operator's JSON as it came: ``"20"`` passes validation (as in
    Patroni), so the members must use it rather than silently keep the default."""
    settings = HaSettings.from_config({"ttl": "20", "loop_wait": "2", "retry_timeout": "3s",
                                       "member_slots_ttl": "10min", "synchronous_node_count": "2",
                                       "maximum_lag_on_failover": "1000"})
    assert (settings.ttl, settings.loop_wait, settings.retry_timeout) == (20.0, 2.0, 3.0)
    assert settings.member_slots_ttl == 600.0
    assert settings.synchronous_node_count == 2
    assert settings.maximum_lag_on_failover == 1000
    assert HaSettings.from_config({"ttl": "soon"}).ttl == 30.0
