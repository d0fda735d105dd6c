"""PostgreSQL server parameters (GUCs): the catalogue of one server binary, and the judging of
parameter names and values against it. Pure: no IO (:mod:`pgha.pg.catalogue` asks the binary).

A :class:`ParamCatalogue` comes from ``postgres --describe-config`` of the binary in
``postgresql.bin_dir`` (name, context, type, min, max; :func:`parse_describe_config`) and its
major version (``postgres --version``; :func:`parse_version`). What describe-config does not print
is supplied by :mod:`pgha.config.pg_catalogue_data`: the units of integer/real parameters, the
values of enums (from ``pg_settings`` of PostgreSQL 15 and the release notes of 12 to 18; an enum
absent from that table accepts any value), and the developer options describe-config leaves out.
When the binary cannot be asked, :meth:`ParamCatalogue.fallback` is the name list of majors 12 to
18 with no types: names are judged, values only for being a single line.

:func:`judge_parameters` judges one ``parameters`` mapping:

* renames: ``wal_keep_segments`` (up to 12) <-> ``wal_keep_size`` (13 and later; 16 MB a segment,
  as Patroni converts), ``ssl_ecdh_curve`` <-> ``ssl_groups`` (18), and PostgreSQL's own old
  aliases ``sort_mem``/``vacuum_mem``: written under the name the catalogue's major knows. When both
  names are given, the one valid for the major wins (reported in ``conflicts``);
* names: extension names (with a dot) are always kept; a name the catalogue does not know
  (unknown, removed in this major, read-only) is reported in ``dropped``;
* values: a value PostgreSQL would reject is reported in ``invalid``: not one line of text, not a
  boolean, not a number (with a unit only where the parameter has one), outside min/max, not one
  of the enum's values; or below the agent's minimum for the parameters it passes on the
  command line (:data:`AGENT_MINIMUMS`, Patroni's bounds: such a value is not used, the
  default is).

Names are matched case-insensitively, as PostgreSQL does; ``kept`` keeps the spelling given
(translated names are lower-case).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pgha.config.pg_catalogue_data import (
    KNOWN_PG_PARAMETERS,
    READ_ONLY,
    REMOVED,
    UNITS,
    UNLISTED,
    enum_values,
    hidden_enum_values,
)

__all__ = [
    "KNOWN_PG_PARAMETERS", "ParamCatalogue", "ParamJudgement", "ParamSpec",
    "changed_value_errors", "check_value",
    "filter_pg_parameters", "is_known_pg_parameter", "judge_parameters",
    "parse_describe_config", "parse_version",
]

_TYPES = {"BOOLEAN": "bool", "INTEGER": "integer", "REAL": "real", "STRING": "string",
          "ENUM": "enum"}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: ``context`` as in ``pg_settings`` (``postmaster`` needs a restart),
    ``vartype`` one of bool/integer/real/string/enum (``unknown`` in the fallback list),
    ``unit`` the base unit (None: no unit), ``min``/``max`` in that unit, ``enumvals`` the
    visible enum values (None: not known, any value accepted). ``unit_known`` is False for a
    number whose unit pgha has no record of (then any unit is accepted, unranged)."""

    name: str
    context: str
    vartype: str
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    enumvals: tuple[str, ...] | None = None
    unit_known: bool = True

    @property
    def needs_restart(self) -> bool:
        """A change takes effect only after a restart of the postmaster."""
        return self.context == "postmaster"


@dataclass(frozen=True)
class ParamCatalogue:
    """The parameters of one PostgreSQL major version, keyed by lower-case name. ``major`` is
    None when unknown (then nothing is renamed); ``typed`` is False for the fallback name list
    (values are then only checked for being one line)."""

    major: int | None
    specs: Mapping[str, ParamSpec]
    source: str
    typed: bool = True

    @classmethod
    def fallback(cls, major: int | None = None,
                 source: str = "pgha's list of parameter names") -> ParamCatalogue:
        """The name list of majors 12 to 18 (no types, ranges or contexts)."""
        specs = {name: ParamSpec(name, "unknown", "unknown") for name in KNOWN_PG_PARAMETERS}
        return cls(major, specs, source, typed=False)

    def spec(self, name: str) -> ParamSpec | None:
        return self.specs.get(name.lower())

    def knows(self, name: str) -> bool:
        """An extension name (with a dot) or a parameter of this catalogue."""
        return "." in name or name.lower() in self.specs

    def needs_restart(self, name: str) -> bool:
        """True when a change of ``name`` needs a restart (its context is ``postmaster``)."""
        spec = self.spec(name)
        return spec is not None and spec.needs_restart


def parse_version(text: str) -> int:
    """The major version in ``postgres --version`` output (``postgres (PostgreSQL) 15.18
    (Debian ...)`` -> 15; ``9.6.24`` -> 9). Raises ValueError when there is none."""
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", text) or re.search(r"\b(\d+)\.\d+", text)
    if match is None:
        raise ValueError(f"no PostgreSQL version in {text.strip()[:80]!r}")
    return int(match[1])


def _number(text: str) -> float | None:
    try:
        return float(text) if text.strip() else None
    except ValueError:
        return None


def parse_describe_config(text: str, major: int | None, source: str = "") -> ParamCatalogue:
    """The catalogue in ``postgres --describe-config`` output (tab-separated: name, context,
    group, type, default, min, max, descriptions), completed with pgha's records of units,
    enum values and unlisted developer options for ``major``. Raises ValueError when the text
    holds no parameter at all."""
    specs: dict[str, ParamSpec] = {}
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) < 7 or cols[3] not in _TYPES or not cols[0]:
            continue
        name, kind = cols[0], _TYPES[cols[3]]
        key = name.lower()
        unit = UNITS.get(key) if kind in ("integer", "real") else None
        known = key in KNOWN_PG_PARAMETERS or key in UNITS
        specs[key] = ParamSpec(
            name=name, context=cols[1], vartype=kind, unit=unit,
            min=_number(cols[5]) if kind in ("integer", "real") else None,
            max=_number(cols[6]) if kind in ("integer", "real") else None,
            enumvals=enum_values(key, major) if kind == "enum" else None,
            unit_known=known or kind not in ("integer", "real"))
    if not specs:
        raise ValueError("no parameters in the --describe-config output")
    for name, context, kind, unit, low, high, first, last in UNLISTED:
        if name in specs or major is None or major < first or (last is not None and major > last):
            continue
        specs[name] = ParamSpec(name, context, kind, unit, low, high,
                                enum_values(name, major) if kind == "enum" else None)
    return ParamCatalogue(major, specs, source)


# ---------------------------------------------------------------------------------- values

_MEMORY = {"B": 1, "kB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}
_TIME = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_BASE = {"B": 1, "kB": 1024, "8kB": 8192, "MB": 1024 ** 2, "ms": 1, "s": 1000, "min": 60_000}
_INT = re.compile(r"\s*[+-]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_REAL = re.compile(r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)", re.I)
_UNIT = re.compile(r"([A-Za-z0-9]+)\s*")
_BOOL_WORDS = (("true", 1, True), ("false", 1, False), ("yes", 1, True), ("no", 1, False),
               ("on", 2, True), ("off", 2, False))


def value_text(value: Any) -> str | None:
    """``value`` as PostgreSQL reads it from postgresql.conf (booleans as on/off); None for
    anything that is not a single scalar."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float | str):
        return str(value)
    return None


def parse_bool(text: str) -> bool | None:
    """PostgreSQL's boolean spellings: any prefix of true/false/yes/no (case-insensitive), on,
    off (or of), 1, 0; None for anything else."""
    low = text.lower()
    if low in ("1", "0"):
        return low == "1"
    for word, shortest, result in _BOOL_WORDS:
        if len(low) >= shortest and word.startswith(low):
            return result
    return None


def _int_value(match: re.Match[str]) -> int:
    digits = match[0].strip()
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    if digits[:2].lower() == "0x":
        return sign * int(digits[2:], 16)
    if len(digits) > 1 and digits.startswith("0"):
        return sign * int(digits[1:], 8)
    return sign * int(digits)


def parse_number(text: str, vartype: str, unit: str | None,
                 unit_known: bool = True) -> tuple[float | None, str | None]:
    """``(value in the base unit, None)`` or ``(None, reason)``, as PostgreSQL parses an
    integer (octal/hex or a fraction, rounded) or real parameter, with an optional unit."""
    value: float
    match = _INT.match(text) if vartype == "integer" else None
    end = match.end() if match else 0
    if match is not None and (text[end:end + 1] not in (".", "e", "E") or end == len(text)) \
            and abs(_int_value(match)) < 2 ** 63:
        value = _int_value(match)
    else:
        real = _REAL.match(text)
        if real is None:
            return None, f"expected {'an integer' if vartype == 'integer' else 'a number'}"
        value, end = float(real[0]), real.end()
        if math.isnan(value):
            return None, "expected a number"
    rest = text[end:].lstrip()
    if rest:
        if not unit_known:
            return None, None  # a unit pgha has no record of: PostgreSQL judges it
        found = _UNIT.fullmatch(rest)
        family = _MEMORY if unit in _MEMORY or unit == "8kB" else _TIME
        if unit is None or found is None or found[1] not in family:
            if unit is None:
                return None, "takes no unit"
            return None, f"invalid unit (valid units: {', '.join(family)})"
        value = value * family[found[1]] / _BASE[unit]
    if vartype == "integer":
        value = round(value) if math.isfinite(value) else value
        if not -2 ** 31 <= value <= 2 ** 31 - 1:
            return None, "exceeds the integer range"
    return value, None


def _fmt(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and float(value).is_integer() \
        else f"{value:g}"


def check_value(spec: ParamSpec, value: Any, major: int | None = None) -> str | None:
    """Why PostgreSQL would reject ``value`` for ``spec``; None when it is accepted."""
    text = value_text(value)
    if text is None:
        return "expected a single value (a string, number or boolean)"
    if any(c in text for c in "\n\r\0"):
        return "must not contain a newline"
    if spec.vartype == "bool":
        return None if parse_bool(text) is not None else \
            "expected a boolean (on/off, true/false, yes/no, 1/0)"
    if spec.vartype in ("integer", "real"):
        number, reason = parse_number(text, spec.vartype, spec.unit, spec.unit_known)
        if reason is not None:
            return reason
        low = -math.inf if spec.min is None else spec.min
        high = math.inf if spec.max is None else spec.max
        if number is not None and not low <= number <= high:
            unit = f" {spec.unit}" if spec.unit else ""
            return f"must be between {_fmt(low)} and {_fmt(high)}{unit}"
    if spec.vartype == "enum" and spec.enumvals is not None:
        accepted = {v.lower() for v in (*spec.enumvals,
                                        *hidden_enum_values(spec.name.lower(), spec.enumvals,
                                                            major))}
        if text.lower() not in accepted:
            return "expected one of: " + ", ".join(repr(v) for v in spec.enumvals)
    return None


#: Lower bounds (in the unit given) of the parameters Patroni passes on PostgreSQL's command
#: line; Patroni uses its default for a smaller value, and so does pgha (judged ``invalid``:
#: left out, so the default applies; refused where an operator writes it).
AGENT_MINIMUMS: Mapping[str, tuple[int, str | None]] = {
    "max_connections": (25, None), "max_wal_senders": (3, None),
    "max_locks_per_transaction": (32, None), "max_replication_slots": (4, None),
    "max_worker_processes": (2, None), "wal_keep_segments": (1, None),
    "wal_keep_size": (16, "MB"),
}


def below_agent_minimum(name: str, value: Any) -> str | None:
    """Why ``value`` is under :data:`AGENT_MINIMUMS` for ``name`` (any case); None when it is
    not, or when its form is wrong (:func:`check_value` says why)."""
    bound = AGENT_MINIMUMS.get(name.lower())
    if bound is None:
        return None
    low, unit = bound
    number, reason = parse_number(value_text(value) or "", "integer", unit)
    if reason is not None or number is None or number >= low:
        return None
    return f"must be at least {low}{unit or ''} (a smaller value is not used: the default is)"


# ---------------------------------------------------------------------------------- renames

def _segments_to_size(value: Any) -> str:
    text = value_text(value)
    number, reason = parse_number(text or "", "integer", None)
    if text is None or reason is not None or number is None or number < 0:
        raise ValueError(reason or "expected a number of WAL segments")
    return f"{int(number) * 16}MB"


def _size_to_segments(value: Any) -> int:
    text = value_text(value)
    number, reason = parse_number(text or "", "integer", "MB")
    if text is None or reason is not None or number is None or number < 0:
        raise ValueError(reason or "expected a size such as 128MB")
    return (int(number) + 8) // 16


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Rename:
    """``old`` is called ``new`` from major ``since`` on; the converters translate a value
    (raising ValueError when it is invalid). ``since`` 0: PostgreSQL's own alias (old -> new
    only)."""

    old: str
    new: str
    since: int
    to_new: Callable[[Any], Any] = _same
    to_old: Callable[[Any], Any] | None = _same


RENAMES: tuple[Rename, ...] = (
    Rename("wal_keep_segments", "wal_keep_size", 13, _segments_to_size, _size_to_segments),
    Rename("ssl_ecdh_curve", "ssl_groups", 18),
    Rename("sort_mem", "work_mem", 0, to_old=None),
    Rename("vacuum_mem", "maintenance_work_mem", 0, to_old=None),
)
"""The renamed parameters pgha translates (Patroni translates wal_keep_segments/size)."""


# ---------------------------------------------------------------------------------- judging

@dataclass(frozen=True)
class ParamJudgement:
    """Outcome of :func:`judge_parameters`. ``kept``: what may be written, translated to the
    catalogue's major; ``dropped``/``invalid``: name as given -> reason (unknown or read-only
    names, no value / a value PostgreSQL rejects); ``notes``: translations made; ``conflicts``:
    an old and a new name both given (the one valid for the major was kept)."""

    kept: dict[str, Any] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()


def _find(params: Mapping[str, Any], name: str) -> str | None:
    for key in params:
        if isinstance(key, str) and key.lower() == name:
            return key
    return None


def _unknown_reason(name: str, major: int | None) -> str:
    key = name.lower()
    if key in READ_ONLY:
        return "read-only parameter"
    removed = REMOVED.get(key)
    if removed is not None and major is not None and major >= removed[0]:
        hint = f"; use {removed[1]}" if removed[1] else ""
        return f"removed in PostgreSQL {removed[0]}{hint}"
    return "unknown parameter" + (f" for PostgreSQL {major}" if major is not None else "")


def judge_parameters(params: Mapping[str, Any],
                     catalogue: ParamCatalogue | None) -> ParamJudgement:
    """Judge ``params`` (not modified) against ``catalogue`` (None: the fallback name list).
    See the module docstring."""
    cat = catalogue if catalogue is not None else ParamCatalogue.fallback()
    work: dict[Any, Any] = dict(params)
    origin: dict[str, str] = {}  # translated name -> name as given
    invalid: dict[str, str] = {}
    notes: list[str] = []
    conflicts: list[str] = []
    for rename in RENAMES:
        if cat.major is None and rename.since:
            continue
        use_new = cat.major is None or cat.major >= rename.since
        if not use_new and rename.to_old is None:
            continue
        target, source = (rename.new, rename.old) if use_new else (rename.old, rename.new)
        convert = rename.to_new if use_new else rename.to_old
        if not cat.knows(target) or convert is None:
            continue
        src, tgt = _find(work, source), _find(work, target)
        if src is None:
            continue
        version = f" (PostgreSQL {cat.major})" if cat.major is not None else ""
        if tgt is not None:
            conflicts.append(f"both {src} and {tgt} are set; using {tgt}{version}")
            del work[src]
            continue
        value = work.pop(src)
        try:
            work[target] = convert(value)
        except ValueError as exc:
            invalid[src] = str(exc)
            continue
        origin[target] = src
        notes.append(f"{src} = {value!r} is written as {target} = {work[target]!r}{version}")
    kept: dict[str, Any] = {}
    dropped: dict[str, str] = {}
    for name, value in work.items():
        if not isinstance(name, str) or not name:
            dropped[str(name)] = "not a parameter name"
            continue
        given = origin.get(name, name)
        if value is None:
            dropped[given] = "no value"
            continue
        spec = cat.spec(name)
        if "." in name:
            spec = ParamSpec(name, "user", "string")
        elif spec is None:
            dropped[given] = _unknown_reason(name, cat.major)
            continue
        if not cat.typed:
            spec = ParamSpec(spec.name, spec.context, "string")
        reason = check_value(spec, value, cat.major) or below_agent_minimum(name, value)
        if reason is not None:
            invalid[given] = reason
        else:
            kept[name] = value
    return ParamJudgement(kept, dropped, invalid, tuple(notes), tuple(conflicts))


# ------------------------------------------------------------------- name-only (compatibility)

def is_known_pg_parameter(name: str) -> bool:
    """True for a core parameter name of majors 12 to 18 (any case) or an extension name."""
    return "." in name or name.lower() in KNOWN_PG_PARAMETERS


def filter_pg_parameters(params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Split ``params`` into (known parameters, names of unknown ones) by name only, order
    preserved (the fallback list; a non-string key is unknown)."""
    kept: dict[str, Any] = {}
    removed: list[str] = []
    for name, value in params.items():
        if isinstance(name, str) and is_known_pg_parameter(name):
            kept[name] = value
        else:
            removed.append(str(name))
    return kept, removed


def _parameters_of(config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    section = config.get("postgresql") if isinstance(config, Mapping) else None
    params = section.get("parameters") if isinstance(section, Mapping) else None
    return params if isinstance(params, Mapping) else {}


def changed_value_errors(old: Mapping[str, Any] | None, new: Mapping[str, Any],
                         catalogue: ParamCatalogue | None) -> list[tuple[str, str]]:
    """``(postgresql.parameters.NAME, reason)`` for each parameter of the dynamic configuration
    ``new`` whose value differs from ``old``'s (None: every parameter) and that PostgreSQL
    would reject. Values already in ``old`` are not judged again (members ignore them)."""
    before = _parameters_of(old)
    changed = {k: v for k, v in _parameters_of(new).items()
               if old is None or k not in before or before[k] != v}
    judged = judge_parameters(changed, catalogue)
    return [(f"postgresql.parameters.{name}", why) for name, why in judged.invalid.items()]
