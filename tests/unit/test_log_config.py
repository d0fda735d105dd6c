"""The ``log`` section's keys: Patroni's names and defaults, one error naming the key for a bad
value, ``PATRONI_LOG_*`` / ``PGHA_LOG_*`` variables, and no "not supported" warning left."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pgha.config import ConfigError, parse_config
from pgha.config.keys import check_env

BASE: dict[str, Any] = {"scope": "demo", "name": "pg1", "etcd": {"host": "127.0.0.1:2379"},
                        "postgresql": {"data_dir": "/tmp/pg1", "bin_dir": "/opt/pg/bin"}}


def with_log(**log: Any) -> dict[str, Any]:
    return {**BASE, "log": log}


def test_defaults_are_patronis() -> None:
    log = parse_config(BASE, {}).log
    assert (log.type, log.level, log.traceback_level, log.max_queue_size, log.file_num,
            log.file_size, log.mode, log.dir, log.deduplicate_heartbeat_logs) == (
        "plain", "INFO", "ERROR", 1000, 4, 25000000, None, None, False)


@pytest.mark.parametrize(("log", "key", "words"), [
    ({"type": "xml"}, "log.type", "must be plain or json"),
    ({"level": "LOUD"}, "log.level", "expected DEBUG, INFO"),
    ({"traceback_level": "verbose"}, "log.traceback_level", "expected DEBUG"),
    ({"format": ["asctime"]}, "log.format", "must be a string when log.type is plain"),
    ({"format": "no fields"}, "log.format", "%(name)s"),
    ({"format": "%(asctime)s %d"}, "log.format", "%(name)s"),
    ({"format": "%(asctime)s %(reason)s"}, "log.format", "%(reason)s is not a LogRecord"),
    ({"type": "json", "format": []}, "log.format", "at least one field"),
    ({"type": "json", "format": [{"levelname": 5}]}, "log.format", "{field: new name}"),
    ({"type": "json", "format": 12}, "log.format", "a string or a list"),
    ({"dateformat": ["%Y"]}, "log.dateformat", "must be a string"),
    ({"static_fields": ["a"]}, "log.static_fields", "mapping"),
    ({"max_queue_size": 0}, "log.max_queue_size", ">= 1"),
    ({"max_queue_size": "many"}, "log.max_queue_size", "integer"),
    ({"file_num": -1}, "log.file_num", ">= 0"),
    ({"file_size": "big"}, "log.file_size", "integer"),
    ({"mode": 0o1777}, "log.mode", "from 0 to 0777"),
    ({"mode": "rw-r-----"}, "log.mode", "such as 0640"),
    ({"loggers": {"aiohttp": "LOUD"}}, "log.loggers", "aiohttp: expected DEBUG"),
    ({"loggers": "aiohttp"}, "log.loggers", "mapping"),
    ({"deduplicate_heartbeat_logs": "sometimes"}, "log.deduplicate_heartbeat_logs",
     "boolean"),
])
def test_bad_value_is_one_error_naming_the_key(log: dict[str, Any], key: str,
                                               words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_log(**log), {})
    assert len(info.value.errors) == 1, info.value.errors
    ((path, message),) = info.value.errors
    assert path == key and words in message, (path, message)
    assert "\n" not in message


def test_values_are_normalised() -> None:
    log = parse_config(with_log(level="warn", type="JSON", mode="0640",
                                loggers={"pgha.dcs": "debug"}, dateformat=""), {}).log
    assert (log.level, log.type, log.mode, log.loggers, log.dateformat) == (
        "WARN", "json", 0o640, {"pgha.dcs": "DEBUG"}, None)
    assert parse_config(with_log(mode=416), {}).log.mode == 0o640  # YAML 0640


def test_environment_variables_map_every_key() -> None:
    env = {"PATRONI_LOG_TYPE": "json", "PATRONI_LOG_LEVEL": "DEBUG",
           "PATRONI_LOG_TRACEBACK_LEVEL": "DEBUG",
           "PATRONI_LOG_FORMAT": "asctime, {levelname: level}, message",
           "PATRONI_LOG_DATEFORMAT": "%H:%M:%S", "PATRONI_LOG_STATIC_FIELDS": "app: pgha",
           "PATRONI_LOG_MAX_QUEUE_SIZE": "50", "PATRONI_LOG_DIR": "/var/log/pgha",
           "PATRONI_LOG_MODE": "0640", "PATRONI_LOG_FILE_NUM": "2",
           "PATRONI_LOG_FILE_SIZE": "1000", "PATRONI_LOG_LOGGERS": "{pgha.dcs: DEBUG}",
           "PATRONI_LOG_DEDUPLICATE_HEARTBEAT_LOGS": "true"}
    log = parse_config(BASE, env).log
    assert log.model_dump() == {
        "type": "json", "level": "DEBUG", "traceback_level": "DEBUG",
        "format": ["asctime", {"levelname": "level"}, "message"], "dateformat": "%H:%M:%S",
        "static_fields": {"app": "pgha"}, "max_queue_size": 50, "dir": "/var/log/pgha",
        "mode": 0o640, "file_num": 2, "file_size": 1000, "loggers": {"pgha.dcs": "DEBUG"},
        "deduplicate_heartbeat_logs": True}
    assert check_env(env) == []  # every one is read by pgha
    plain = parse_config(BASE, {"PGHA_LOG_FORMAT": "%(levelname)s %(message)s",
                                "PATRONI_LOG_FORMAT": "message"}).log
    assert plain.format == "%(levelname)s %(message)s"  # PGHA_ wins; a %-string stays one


def test_bad_environment_value_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE, {"PATRONI_LOG_LOGGERS": "{pgha.dcs: [", "PATRONI_LOG_MODE": "999"})
    assert dict(info.value.errors) == {
        "log.loggers": "must be a mapping of logger names to levels",
        "log.mode": "expected file permissions from 0 to 0777, such as 0640"}


def test_log_keys_no_longer_warn(caplog: pytest.LogCaptureFixture) -> None:
    data = with_log(type="json", format=["message"], dateformat="%H", static_fields={"a": 1},
                    traceback_level="DEBUG", max_queue_size=10, dir="/tmp/x", mode=0o600,
                    file_num=1, file_size=10, loggers={"a": "INFO"},
                    deduplicate_heartbeat_logs=True)
    with caplog.at_level(logging.WARNING, logger="pgha.config"):
        parse_config(data, {})
    assert not [r.getMessage() for r in caplog.records if "log" in r.getMessage()]
