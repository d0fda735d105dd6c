"""The ``log`` section (Patroni's keys, validated; applied by :mod:`pgha.agent.logsetup`).

Contract: a pure model, no I/O. Every value is checked here, so that applying a valid section
can only fail on the file system (``log.dir``): a bad value is one error naming its key
(``log.type: must be plain or json``). Level names are upper-cased (``warn`` -> ``WARN``);
``mode`` also accepts text in C ``strtol`` base-0 form (``"0640"`` is octal, as Patroni reads
``PATRONI_LOG_MODE``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from pgha.config.base import _Section

#: pgha's default line format: Patroni's (``%(asctime)s %(levelname)s: %(message)s``) with the
#: logger name added.
DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_FIELD = re.compile(r"%\((\w+)\)")


def _level_name(value: Any) -> str:
    name = str(value).strip().upper()
    if isinstance(value, bool) or name not in logging.getLevelNamesMapping() \
            or name == "NOTSET":
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return name


def _check_line_format(fmt: str) -> None:
    """Refuse a plain format that would fail on a record: no ``%(name)s`` field, another
    ``%`` conversion, or an attribute a LogRecord does not have."""
    record = logging.LogRecord("pgha", logging.INFO, __file__, 1, "message", None, None)
    for name in _FIELD.findall(fmt):
        if name not in vars(record) and name not in ("message", "asctime"):
            raise ValueError(f"%({name})s is not a LogRecord attribute")
    try:
        logging.Formatter(fmt, validate=True).format(record)
    except (ValueError, TypeError, KeyError):
        raise ValueError("must name at least one record attribute as %(name)s, with no "
                         "other % conversion (write %% for a percent sign)") from None


def json_fields(fmt: str | list[Any] | None) -> list[tuple[str, str]]:
    """The ``(record attribute, output name)`` pairs of a JSON line, in order: a format
    string names its attributes as ``%(name)s``; a list holds names or ``{name: alias}``."""
    if fmt is None:
        fmt = DEFAULT_FORMAT
    if isinstance(fmt, str):
        return [(name, name) for name in _FIELD.findall(fmt)]
    out: list[tuple[str, str]] = []
    for item in fmt:
        if isinstance(item, str):
            out.append((item, item))
        else:
            out += [(str(k), str(v)) for k, v in item.items()]
    return out


class LogConfig(_Section):
    """``log``: see docs/configuration.md. ``type`` is declared before ``format`` because
    the check of ``format`` depends on it."""

    level: str = "INFO"
    traceback_level: str = "ERROR"
    type: str = "plain"
    format: str | list[Any] | None = None
    dateformat: str | None = None
    static_fields: dict[str, Any] = Field(default_factory=dict)
    max_queue_size: int = Field(default=1000, ge=1)
    dir: str | None = None
    mode: int | None = None
    file_num: int = Field(default=4, ge=0)
    file_size: int = Field(default=25000000, ge=0)
    loggers: dict[str, str] = Field(default_factory=dict)
    deduplicate_heartbeat_logs: bool = False

    @field_validator("level", "traceback_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> str:
        return _level_name(value)

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> str:
        kind = str(value).strip().lower()
        if kind not in ("plain", "json"):
            raise ValueError("must be plain or json")
        return kind

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            if info.data.get("type", "plain") == "plain":
                _check_line_format(value)
            elif not _FIELD.search(value):
                raise ValueError("must name at least one record attribute as %(name)s")
            return value
        if not isinstance(value, list):
            raise ValueError("must be a string or a list")
        if info.data.get("type", "plain") == "plain":
            raise ValueError("must be a string when log.type is plain (a list is for json)")
        if not value:
            raise ValueError("must name at least one field")
        for item in value:
            ok = (isinstance(item, str) and item.strip()) or (
                isinstance(item, dict) and item and all(
                    isinstance(k, str) and isinstance(v, str) and v for k, v in item.items()))
            if not ok:
                raise ValueError("each item must be a field name or {field: new name}")
        return value

    @field_validator("dateformat", mode="before")
    @classmethod
    def _dateformat(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be a string (a strftime format)")
        return value or None

    @field_validator("static_fields", mode="before")
    @classmethod
    def _static(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError("must be a mapping of field names to values")
        return value

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected file permissions such as 0640")
        if isinstance(value, str):
            text = value.strip().lower()
            try:
                value = int(text, 8) if re.fullmatch(r"0[0-7]+", text) else int(text, 0)
            except ValueError:
                raise ValueError("expected file permissions such as 0640") from None
        if not isinstance(value, int) or not 0 <= value <= 0o777:
            raise ValueError("expected file permissions from 0 to 0777, such as 0640")
        return value

    @field_validator("loggers", mode="before")
    @classmethod
    def _loggers(cls, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise ValueError("must be a mapping of logger names to levels")
        out: dict[str, str] = {}
        for name, level in value.items():
            try:
                out[str(name)] = _level_name(level)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return out

    def fields(self) -> list[tuple[str, str]]:
        """See :func:`json_fields`."""
        return json_fields(self.format)

    def line_format(self) -> str:
        """The %-style format of a plain line (only meaningful for ``type: plain``)."""
        return self.format if isinstance(self.format, str) else DEFAULT_FORMAT
