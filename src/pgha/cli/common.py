"""Shared plumbing of the operator commands: configuration, the one-shot DCS read, member
selection, timestamps, watching and errors.

Exit codes: 2 for usage and configuration errors (:func:`usage_error`), 1 for operational
failures (:func:`fail`): DCS unreachable, a member refused or failed, a lost race.

The DCS is read and written only through :class:`pgha.dcs.store.ClusterStore` (the agent's own
domain operations) and seen as the core's :class:`~pgha.core.model.ClusterView`; the CLI has no
model of the keys of its own. The KVStore under it comes from the module-level seam
:data:`kv_factory` (tests replace it with an in-memory store). The CLI never opens a session:
it reads every key in one consistent read and writes persistent keys with compare-and-set.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

from pgha.cli.rest import DEFAULT_TIMEOUT, Call, Reply, RestError, call_all
from pgha.config import Config, ConfigError
from pgha.core.model import ClusterView, Member
from pgha.dcs.base import DCSError, KVStore
from pgha.dcs.factory import open_kv
from pgha.dcs.store import ClusterStore

T = TypeVar("T")

DCS_TIMEOUT = 5.0
ROLES = ("leader", "primary", "standby-leader", "replica", "standby", "any")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``Error: message`` on stderr and exit with ``code`` (1: operation failed)."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def usage_error(message: str) -> NoReturn:
    """Print ``Error: message`` on stderr and exit 2 (bad usage or configuration)."""
    fail(message, 2)


def _default_kv(config: Config, timeout: float) -> KVStore:
    return open_kv(config, ttl=30, timeout=timeout)


#: Seam: builds the (not yet connected) KVStore for a configuration. Tests replace it.
kv_factory: Callable[[Config, float], KVStore] = _default_kv


def get_config(ctx: typer.Context, cluster: str | None = None) -> Config:
    """The configuration given with ``-c`` (exit 2 when missing or invalid). ``cluster``
    (a positional CLUSTER argument) addresses another scope of the same namespace."""
    from pgha.cli.daemon import load_or_exit

    obj = ctx.find_root().obj or {}
    path: Path | None = obj.get("config_file")
    if path is None:
        usage_error("no configuration: pass -c CONFIG (or set PGHA_CONFIG_FILE)")
    config = load_or_exit(path)
    if cluster and cluster != config.scope:
        config = config.model_copy(update={"scope": cluster})
    return config


def insecure(ctx: typer.Context) -> bool:
    """The global ``-k/--insecure`` flag."""
    obj = ctx.find_root().obj or {}
    return bool(obj.get("insecure", False))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion; DCS and network failures exit 1 with their message, a DCS
    backend this build cannot use exits 2."""
    try:
        return asyncio.run(coro)
    except ConfigError as exc:
        usage_error("; ".join(f"{key}: {msg}" for key, msg in exc.errors))
    except (DCSError, TimeoutError, OSError) as exc:
        fail(f"cannot reach the DCS: {exc or type(exc).__name__}")


# ----------------------------------------------------------------------------- the DCS


async def use_store(config: Config, operation: Callable[[ClusterStore], Awaitable[T]],
                    timeout: float = DCS_TIMEOUT, budget: float | None = None) -> T:
    """Run ``operation`` on the :class:`~pgha.dcs.store.ClusterStore` of ``config``'s
    cluster, over a KVStore from :data:`kv_factory` (``timeout`` per request), all of it
    within ``budget`` seconds (default ``2 * timeout``). No session is opened: the CLI reads,
    and writes persistent keys with compare-and-set. Raises DCSError/TimeoutError."""
    async with asyncio.timeout(budget if budget is not None else 2 * timeout):
        async with kv_factory(config, timeout) as kv:
            return await operation(ClusterStore(kv, config.namespace, config.scope, config.name))


async def load_view(config: Config, timeout: float = DCS_TIMEOUT) -> ClusterView:
    """One consistent read of every key of ``config``'s cluster (``ClusterStore.load``).
    Raises DCSError/TimeoutError."""
    return await use_store(config, lambda store: store.load(), timeout)


def read_view(config: Config) -> ClusterView:
    """:func:`load_view` from synchronous code (exits 1 when the DCS cannot be read)."""
    return run(load_view(config))


def on_store(config: Config, operation: Callable[[ClusterStore], Awaitable[T]],
             budget: float | None = None) -> T:
    """:func:`use_store` from synchronous code (exits 1 when the DCS cannot be reached)."""
    return run(use_store(config, operation, budget=budget))


# ----------------------------------------------------------------------------- the view


def leader_name(view: ClusterView) -> str | None:
    """The name in the ``leader`` key, None when there is none."""
    return view.leader.name if view.leader else None


def is_standby_cluster(view: ClusterView) -> bool:
    """A ``standby_cluster`` section in the dynamic configuration, or a lock holder that
    publishes the role ``standby_leader``."""
    if (view.config or {}).get("standby_cluster"):
        return True
    leader = view.leader_member
    return leader is not None and leader.role == "standby_leader"


def ordered(view: ClusterView) -> list[Member]:
    """Members, the leader first, then by name."""
    leader = leader_name(view)
    names = sorted(view.members, key=lambda n: (n != leader, n))
    return [view.members[n] for n in names]


# ----------------------------------------------------------------------------- members


def normalize_role(role: str) -> str:
    """``master`` is accepted for ``primary``; unknown roles exit 2."""
    role = role.lower()
    if role == "master":
        return "primary"
    if role not in ROLES:
        usage_error(f"unknown role {role!r}: use one of {', '.join(ROLES)} (or master)")
    return role


def has_role(view: ClusterView, member: Member, role: str) -> bool:
    """Whether ``member`` matches a (normalized) ``-r`` role: leader = the lock holder,
    primary / standby-leader = the lock holder in a normal / standby cluster, replica and
    standby = every other member, any = all."""
    is_leader = member.name == leader_name(view)
    if role == "any":
        return True
    if role == "leader":
        return is_leader
    if role == "primary":
        return is_leader and not is_standby_cluster(view)
    if role == "standby-leader":
        return is_leader and is_standby_cluster(view)
    return not is_leader


def strip_cluster(config: Config, names: Sequence[str]) -> list[str]:
    """Member arguments without a leading cluster name (``restart batman pg1`` as in
    patronictl), unless a member carries the cluster's name."""
    out = list(names)
    if out and out[0] == config.scope:
        out = out[1:]
    return out


def select_members(scope: str, view: ClusterView, names: Sequence[str],
                   role: str) -> list[Member]:
    """The members of cluster ``scope`` named (all when none) that match ``role``, leader
    first. Unknown names exit 1 naming them."""
    unknown = [n for n in names if n not in view.members]
    if unknown:
        fail(f"{', '.join(unknown)}: not a member of cluster {scope}")
    chosen = [m for m in ordered(view) if (not names or m.name in names)]
    return [m for m in chosen if has_role(view, m, role)]


def member_list(members: Sequence[Member]) -> str:
    return ", ".join(m.name for m in members)


def confirm(question: str, force: bool) -> None:
    """Ask ``question`` unless ``force``; a "no" prints ``Aborted!`` and exits 1."""
    if not force:
        typer.confirm(question, abort=True)


def api(ctx: typer.Context, config: Config, member: Member, method: str, path: str,
        body: Any = None, timeout: float = DEFAULT_TIMEOUT) -> Reply:
    """One REST call from synchronous code. Raises RestError when the member does not
    answer (see :mod:`pgha.cli.rest`)."""
    return api_all(ctx, config, [Call(member, method, path, body)], timeout)[0].unwrap()


def api_all(ctx: typer.Context, config: Config, calls: list[Call],
            timeout: float = DEFAULT_TIMEOUT) -> list[Answer]:
    """Every call concurrently (see :func:`pgha.cli.rest.call_all`)."""
    results = asyncio.run(call_all(config, calls, insecure=insecure(ctx), timeout=timeout))
    return [Answer(c.member, r) for c, r in zip(calls, results, strict=True)]


@dataclass(frozen=True)
class Answer:
    """A member's reply to one call, or the error that stood in for it."""

    member: Member
    result: Reply | RestError

    def unwrap(self) -> Reply:
        if isinstance(self.result, RestError):
            raise self.result
        return self.result


def report(answer: Answer, action: str, ok: Mapping[int, str]) -> bool:
    """Print the outcome of ``action`` on ``answer.member``: ``ok`` maps the accepted status
    codes to their message (``{name}`` is replaced by the member's name); anything else
    prints ``Failed: <action> for member X, status code=N, (body)``. True when accepted."""
    name = answer.member.name
    result = answer.result
    if isinstance(result, RestError):
        typer.echo(f"Failed: {action} for member {name}, {result}")
        return False
    if result.status in ok:
        typer.echo(ok[result.status].format(name=name))
        return True
    typer.echo(f"Failed: {action} for member {name}, status code={result.status}, "
               f"({result.reason()})")
    return False


# ----------------------------------------------------------------------------- time


def parse_when(text: str | None, what: str = "scheduled time") -> datetime | None:
    """``None``/``""``/``now`` -> None (immediately); otherwise an ISO 8601 instant, read in
    the local timezone when it has none. Unparsable or past instants exit 2."""
    if text is None or text.strip().lower() in ("", "now"):
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        usage_error(f"cannot parse the {what} {text!r}: use ISO 8601, e.g. 2030-01-31T12:00+00:00")
    if when.tzinfo is None:
        when = when.astimezone()
    if when < datetime.now(UTC):
        usage_error(f"the {what} {when.isoformat()} is in the past")
    return when


def now_stamp() -> str:
    """Local wall-clock time as ``YYYY-MM-DD HH:MM:SS.ffffff`` for result lines."""
    return datetime.now().isoformat(sep=" ", timespec="microseconds")


# ----------------------------------------------------------------------------- watching

#: Seam: the pause between watch iterations (tests replace it to end the loop).
sleep: Callable[[float], None] = time.sleep


def watch_interval(watch: bool, every: float | None) -> float | None:
    """``-W`` means every 2 s, ``-w N`` every N s; None: print once."""
    if every is not None:
        if every <= 0:
            usage_error("-w needs a positive number of seconds")
        return every
    return 2.0 if watch else None


def repeat(render: Callable[[], str], interval: float | None) -> None:
    """Print ``render()`` once, or every ``interval`` seconds until Ctrl-C (exit 0); the
    screen is cleared between iterations when stdout is a terminal."""
    try:
        while True:
            text = render()
            if interval is not None and sys.stdout.isatty():
                typer.echo("\033[H\033[J", nl=False)
            typer.echo(text)
            if interval is None:
                return
            sleep(interval)
    except KeyboardInterrupt:
        return
