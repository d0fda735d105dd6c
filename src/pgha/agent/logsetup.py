"""The agent's logging: the ``log`` section applied to Python's logging, written off the loop.

Contract:

- Two steps, as in Patroni: the root logger has one :class:`RecordQueue` handler that only
  puts records in a bounded in-memory queue (``log.max_queue_size``); a listener thread takes
  them out and writes them to stderr and, with ``log.dir``, to ``<dir>/pgha.log`` (rotated at
  ``file_size`` bytes, ``file_num`` old files kept, permissions ``mode``). Logging never blocks
  the event loop: when the queue is full the record is dropped and counted
  (:attr:`RecordQueue.records_lost`), and the count is logged as a WARNING ahead of the next
  record that fits.
- Each record is made self-contained in the thread that logs it (message formatted, traceback
  rendered to text, or left out below ``traceback_level``), so the listener never touches
  objects the agent still changes. The ``extra=`` attributes of a record travel with it: the
  JSON lines carry every one of them as a field.
- :meth:`AgentLogging.prepare` opens everything a section needs (the directory, the file)
  and raises :class:`LogSettingError` naming the key when it cannot, changing nothing;
  :meth:`AgentLogging.apply` then swaps the listener's destinations at once (no record is lost
  or written twice), closes the old ones and sets the levels. A reload uses both.
- :meth:`AgentLogging.stop` (clean stop and fatal exit alike) writes out everything queued,
  then routes later records straight to the same destinations, so the last lines (the exit
  reason) are never lost.
- ``deduplicate_heartbeat_logs``: :class:`HeartbeatDedup` drops a per-cycle ``decision ...``
  line of ``pgha.agent`` identical to the previous one; the line is written again when it
  changes, or :data:`HEARTBEAT_REPEAT` seconds after it was last written.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pgha.config.log import LogConfig
from pgha.errors import describe

#: The log file's name in ``log.dir`` (Patroni's is ``patroni.log``).
LOG_FILE = "pgha.log"
#: Levels pgha sets unless ``log.loggers`` names the logger.
DEFAULT_LOGGERS: dict[str, str] = {"aiohttp.access": "WARNING"}
#: Seconds after which an unchanged heartbeat line is written again.
HEARTBEAT_REPEAT = 600.0
#: Seconds :meth:`AgentLogging.stop` waits for room in a full queue for its end marker.
STOP_TIMEOUT = 10.0

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}

_active: AgentLogging | None = None


def active() -> AgentLogging | None:
    """The logging installed by :meth:`AgentLogging.install` (None: not installed, e.g. an
    agent run inside tests, whose logging belongs to the test runner)."""
    return _active


def logger_backlog() -> tuple[int, int]:
    """(records waiting to be written, records dropped since start) of the installed logging;
    (0, 0) when none is installed."""
    logs = _active
    return (logs.queue_size, logs.records_lost) if logs is not None else (0, 0)


class LogSettingError(Exception):
    """A ``log`` value that cannot be used: ``key`` is its dotted path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError, RecursionError):
        return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: the ``fields`` (``(record attribute, output name)`` pairs,
    ``asctime`` rendered with ``dateformat``), then ``static_fields``, then every attribute a
    record carries beyond LogRecord's own (``extra=``), then ``exc_info`` (the traceback text)
    and ``stack_info`` when present. A value JSON cannot hold is written as its ``str()``."""

    def __init__(self, fields: Sequence[tuple[str, str]], dateformat: str | None = None,
                 static_fields: dict[str, Any] | None = None) -> None:
        super().__init__(datefmt=dateformat)
        self.fields = list(fields)
        self.static_fields = dict(static_fields or {})

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        out: dict[str, Any] = {name: getattr(record, attr, None) for attr, name in self.fields}
        out.update(self.static_fields)
        out.update((k, v) for k, v in vars(record).items()
                   if k not in _STANDARD and not k.startswith("_"))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        try:
            return json.dumps(out, default=str, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            return json.dumps({str(k): _jsonable(v) for k, v in out.items()},
                              default=str, ensure_ascii=False)


def make_formatter(config: LogConfig) -> logging.Formatter:
    """The formatter of ``config.type``: a %-style line, or :class:`JsonFormatter`."""
    if config.type == "json":
        return JsonFormatter(config.fields(), config.dateformat, config.static_fields)
    return logging.Formatter(config.line_format(), config.dateformat)


class HeartbeatDedup(logging.Filter):
    """See the module docstring; ``clock`` is a monotonic clock in seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 repeat_after: float = HEARTBEAT_REPEAT) -> None:
        super().__init__()
        self.clock = clock
        self.repeat_after = repeat_after
        self._last: str | None = None
        self._written = 0.0
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "pgha.agent" or not str(record.msg).startswith("decision "):
            return True
        text = record.getMessage()
        now = self.clock()
        if text == self._last and now - self._written < self.repeat_after:
            self.suppressed += 1
            return False
        self._last, self._written = text, now
        return True


class RecordQueue(logging.handlers.QueueHandler):
    """The root logger's only handler: see the module docstring. ``traceback_level``: a
    record's traceback is kept when its logger is enabled for that level, otherwise the
    message ends with the exception's one-line description instead."""

    queue: queue.Queue[logging.LogRecord | None]

    def __init__(self, maxsize: int) -> None:
        super().__init__(queue.Queue(maxsize))
        self.traceback_level = logging.ERROR
        self.records_lost = 0  # since start
        self._unreported = 0  # lost since the last report

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        message = record.getMessage()
        if record.exc_info:
            if logging.getLogger(record.name).isEnabledFor(self.traceback_level):
                if not record.exc_text:
                    record.exc_text = logging.Formatter().formatException(record.exc_info)
            elif record.exc_info[1] is not None:
                message = f"{message} ({describe(record.exc_info[1])})"
                record.exc_text = None
        record.message = record.msg = message
        record.args = None
        record.exc_info = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        """Called under the handler's lock; never blocks."""
        try:
            if self._unreported:
                self.queue.put_nowait(self._lost_report(self._unreported))
                self._unreported = 0
            self.queue.put_nowait(record)
        except queue.Full:
            self.records_lost += 1
            self._unreported += 1

    @staticmethod
    def _lost_report(count: int) -> logging.LogRecord:
        text = f"logging queue was full: {count} log record(s) were dropped"
        record = logging.LogRecord("pgha.log", logging.WARNING, __file__, 0, text, None, None)
        record.message = text
        return record

    def resize(self, maxsize: int) -> None:
        with self.queue.mutex:
            self.queue.maxsize = maxsize


class _Listener(logging.handlers.QueueListener):
    """The writer thread; its destinations can be swapped while it runs."""

    def __init__(self, records: queue.Queue[logging.LogRecord | None],
                 targets: list[logging.Handler]) -> None:
        super().__init__(records)
        self.records = records
        self._lock = threading.Lock()
        self.targets = targets

    def handle(self, record: logging.LogRecord) -> None:
        with self._lock:
            for target in self.targets:
                target.handle(record)

    def swap(self, targets: list[logging.Handler]) -> list[logging.Handler]:
        with self._lock:
            old, self.targets = self.targets, targets
        return old

    def drain(self) -> bool:
        """Stop the writer once it has written everything queued; False when it could not
        finish within :data:`STOP_TIMEOUT` (a destination blocks, e.g. a full stderr pipe)."""
        thread = self._thread
        if thread is None:
            return True
        try:
            self.records.put(None, timeout=STOP_TIMEOUT)  # waits for room in a full queue
        except queue.Full:
            return False
        thread.join(STOP_TIMEOUT)
        self._thread = None
        return not thread.is_alive()


class PermissionsRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating file whose every new file gets ``permissions`` (None: as the umask says)."""

    def __init__(self, filename: Path, max_bytes: int, backup_count: int,
                 permissions: int | None) -> None:
        self.permissions = permissions
        super().__init__(filename, maxBytes=max_bytes, backupCount=backup_count,
                         encoding="utf-8")

    def _open(self) -> Any:
        stream = super()._open()
        if self.permissions is not None:
            os.chmod(self.baseFilename, self.permissions)
        return stream


@dataclass
class Prepared:
    """What :meth:`AgentLogging.prepare` opened for one ``log`` section."""

    config: LogConfig
    targets: list[logging.Handler]

    def discard(self) -> None:
        """Close what was opened (a reload refused for another reason)."""
        for target in self.targets:
            target.close()


class AgentLogging:
    """See the module docstring. ``stream`` None: ``sys.stderr`` as it is when a section is
    prepared."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream
        self.handler = RecordQueue(1000)
        self.dedup = HeartbeatDedup()
        self.config: LogConfig | None = None
        self._listener: _Listener | None = None
        self._loggers: dict[str, str] = {}

    @classmethod
    def install(cls, config: LogConfig, stream: IO[str] | None = None,
                exclusive: bool = True) -> AgentLogging:
        """Start logging per ``config`` (raises :class:`LogSettingError` before changing
        anything); ``exclusive`` removes every other handler of the root logger first."""
        global _active
        self = cls(stream)
        prepared = self.prepare(config)
        root = logging.getLogger()
        if exclusive:
            for old in root.handlers[:]:
                root.removeHandler(old)
        self._listener = _Listener(self.handler.queue, [])
        self.apply(prepared)
        self._listener.start()
        root.addHandler(self.handler)
        _active = self
        return self

    def prepare(self, config: LogConfig) -> Prepared:
        """Open the destinations of ``config``; :class:`LogSettingError` (nothing changed)
        when ``log.dir`` or its file cannot be used."""
        formatter = make_formatter(config)
        targets: list[logging.Handler] = [logging.StreamHandler(self.stream or sys.stderr)]
        if config.dir:
            try:
                Path(config.dir).mkdir(parents=True, exist_ok=True)
                targets.append(PermissionsRotatingFileHandler(
                    Path(config.dir) / LOG_FILE, config.file_size, config.file_num,
                    config.mode))
            except OSError as exc:
                raise LogSettingError("log.dir", f"cannot write {LOG_FILE} in {config.dir}: "
                                      f"{describe(exc)}") from None
        for target in targets:
            target.setFormatter(formatter)
        return Prepared(config, targets)

    def apply(self, prepared: Prepared) -> None:
        """Put ``prepared`` in force: destinations, queue size, levels, traceback level and
        heartbeat deduplication. Cannot fail."""
        config = prepared.config
        assert self._listener is not None, "install() first"
        for old in self._listener.swap(prepared.targets):
            old.close()
        self.handler.resize(config.max_queue_size)
        self.handler.traceback_level = logging.getLevelNamesMapping()[config.traceback_level]
        if config.deduplicate_heartbeat_logs:
            self.handler.addFilter(self.dedup)
        else:
            self.handler.removeFilter(self.dedup)
        logging.getLogger().setLevel(config.level)
        wanted = {**DEFAULT_LOGGERS, **config.loggers}
        for name in self._loggers.keys() - wanted.keys():
            logging.getLogger(name).setLevel(logging.NOTSET)
        for name, level in wanted.items():
            logging.getLogger(name).setLevel(level)
        self._loggers = wanted
        self.config = config

    def reconfigure(self, config: LogConfig) -> None:
        """:meth:`prepare` then :meth:`apply`."""
        self.apply(self.prepare(config))

    @property
    def queue_size(self) -> int:
        return self.handler.queue.qsize()

    @property
    def records_lost(self) -> int:
        return self.handler.records_lost

    def stop(self) -> None:
        """Write out everything queued (waits for the writer thread, at most about twice
        :data:`STOP_TIMEOUT` when a destination blocks), then send later records straight to
        the same destinations. Idempotent."""
        global _active
        listener, self._listener = self._listener, None
        if listener is None:
            return
        root = logging.getLogger()
        root.removeHandler(self.handler)
        if listener.drain():
            for target in listener.targets:
                root.addHandler(target)
        # else the writer is stuck in a destination: later records are dropped rather than
        # making the exit hang on it too
        if _active is self:
            _active = None

    def close(self) -> None:
        """:meth:`stop`, then detach and close the destinations (tests; a process that
        exits lets :func:`logging.shutdown` close them)."""
        targets = self._listener.targets if self._listener else []
        self.stop()
        root = logging.getLogger()
        for target in targets:
            root.removeHandler(target)
            target.close()
