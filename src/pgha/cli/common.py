"""Shared plumbing of the operator commands: configuration, the one-shot DCS read, member
selection, timestamps, watching and errors.

Configuration, as patronictl reads it (:func:`load_access`): the file of ``-c`` (or
``PGHA_CONFIG_FILE``/``PATRONICTL_CONFIG_FILE``), else ``~/.config/patroni/patronictl.yaml`` when
it exists; then the ``PATRONI_*``/``PGHA_*`` variables; then ``-d/--dcs-url`` (or ``DCS_URL``),
which replaces the DCS section. Only what reaching the cluster takes is validated
(:class:`~pgha.config.ClusterAccess`: scope, namespace, restapi, ctl, the DCS section), so a
file with nothing but a DCS section works. The scope is the command's CLUSTER argument when
given, else the file's (:func:`get_config`); ``--group`` is refused (:func:`refuse_group`).

Exit codes: 2 for usage and configuration errors (:func:`usage_error`), 1 for operational
failures and refusals (:func:`fail`, printed as patronictl's ``Error: ...``): DCS unreachable,
a check that refuses the action, a member that cannot be reached, a lost race. A member's own
refusal of a restart, reload, reinit or switchover is printed on its line with exit 0, as
patronictl does (see each command).

The DCS is read and written only through :class:`pgha.dcs.store.ClusterStore` (the agent's own
domain operations) and seen as the core's :class:`~pgha.core.model.ClusterView`; the CLI has no
model of the keys of its own. The KVStore under it comes from the module-level seam
:data:`kv_factory` (tests replace it with an in-memory store). The CLI never opens a session:
it reads every key in one consistent read and writes persistent keys with compare-and-set.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import typer

from pgha.cli.rest import DEFAULT_TIMEOUT, Call, Reply, RestError, call_all
from pgha.config import DCS_KINDS, ClusterAccess, ConfigError, parse_cluster_access, read_yaml
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


def _default_kv(config: ClusterAccess, timeout: float) -> KVStore:
    return open_kv(config, ttl=30, timeout=timeout)


#: Seam: builds the (not yet connected) KVStore for a configuration. Tests replace it.
kv_factory: Callable[[ClusterAccess, float], KVStore] = _default_kv

#: ``-d/--dcs-url`` schemes and their default ports (patronictl's; exhibitor is refused later).
DCS_URL_PORTS = {"zookeeper": 2181, "exhibitor": 8181, "consul": 8500, "etcd": 2379,
                 "etcd3": 2379}

GroupOption = Annotated[int | None, typer.Option(
    "--group", help="Citus group (refused: pgha does not manage Citus clusters)")]


def default_config_path() -> Path:
    """patronictl's default configuration file: ``~/.config/patroni/patronictl.yaml`` (the
    ``patroni`` application directory of the platform, ``$XDG_CONFIG_HOME`` when set)."""
    return Path(typer.get_app_dir("patroni")) / "patronictl.yaml"


def parse_dcs_url(url: str) -> dict[str, Any]:
    """``-d/--dcs-url`` ``[SCHEME://][HOST][:PORT][/NAMESPACE]`` as configuration keys, as
    patronictl reads it: without a scheme the port picks it (etcd by default), the host
    defaults to ``localhost`` and the port to the scheme's; a path sets ``namespace``. An
    unknown scheme exits 1 (``Unknown dcs scheme: X``), a bad port exits 2."""
    parts = urlsplit(url if "//" in url else "//" + url)
    try:
        port = parts.port
    except ValueError:
        usage_error(f"-d/--dcs-url {url!r}: the port is not a number from 0 to 65535")
    scheme = parts.scheme or next(
        (k for k, p in DCS_URL_PORTS.items() if p == port), "etcd")
    if scheme not in DCS_URL_PORTS:
        fail(f"Unknown dcs scheme: {scheme}")
    address = f"{parts.hostname or 'localhost'}:{port or DCS_URL_PORTS[scheme]}"
    section: dict[str, Any] = {"hosts": [address]} if scheme == "zookeeper" else {"host": address}
    out: dict[str, Any] = {scheme: section}
    if parts.path and parts.path.strip() != "/":
        out["namespace"] = parts.path.strip()
    return out


def _config_errors(source: object, exc: ConfigError) -> NoReturn:
    typer.echo(f"configuration error in {source}:", err=True)
    for key, message in exc.errors:
        typer.echo(f"  {key or '<top>'}: {message}", err=True)
    raise typer.Exit(2)


def _read_access(path: Path | None, dcs_url: str | None) -> ClusterAccess:
    """The configuration as patronictl reads it: ``path`` (``-c`` or its variables; when not
    given, patronictl's default file if it exists), the environment, then ``dcs_url``."""
    explicit = path is not None
    target = path if path is not None else default_config_path()
    data: dict[str, Any] = {}
    if target.exists() and os.access(target, os.R_OK):
        try:
            data = read_yaml(target)
        except ConfigError as exc:
            _config_errors(target, exc)
        except (ValueError, RecursionError) as exc:  # not UTF-8, nested too deeply
            usage_error(f"configuration error in {target}: cannot read it: "
                        f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
    elif explicit:
        usage_error(f"Provided config file {target} not existing or no read rights. "
                    "Check the -c/--config-file parameter")
    override = parse_dcs_url(dcs_url) if dcs_url is not None else None
    try:
        access = parse_cluster_access(data, override=override)
    except ConfigError as exc:
        _config_errors(target if explicit or data else "the environment", exc)
    if not any(getattr(access, k) is not None for k in ("etcd", "consul", "zookeeper")):
        usage_error("Can not find suitable configuration of distributed configuration store\n"
                    f"Available implementations: {', '.join(sorted(DCS_KINDS))}\n"
                    "(pass -c CONFIG, set PATRONICTL_CONFIG_FILE, use -d DCS_URL or create "
                    f"{default_config_path()})")
    return access


def load_access(ctx: typer.Context) -> ClusterAccess:
    """The configuration of this invocation, read once (see :func:`_read_access`). Exits 2
    listing every error when it is invalid or names no DCS."""
    obj = ctx.find_root().obj
    if obj is None:
        obj = ctx.find_root().obj = {}
    if "access" not in obj:
        obj["access"] = _read_access(obj.get("config_file"), obj.get("dcs_url"))
    access: ClusterAccess = obj["access"]
    return access


def refuse_group(group: int | None) -> None:
    """``--group`` addresses a Citus group; pgha has no Citus support: exit 2 saying so."""
    if group is not None:
        usage_error(f"--group {group}: Citus clusters are not supported by pgha, so there are "
                    "no groups to choose from; run the command without --group")


def get_config(ctx: typer.Context, cluster: str | None = None,
               group: int | None = None) -> ClusterAccess:
    """The configuration with its ``scope`` set: the CLUSTER argument when given (as in
    patronictl it wins over the file's ``scope``), else the file's. Exits 2 when there is
    neither (``Missing argument 'CLUSTER_NAME'``), or for ``--group`` (:func:`refuse_group`)."""
    refuse_group(group)
    access = load_access(ctx)
    scope = cluster or access.scope
    if not scope:
        usage_error("Missing argument 'CLUSTER_NAME'. (the configuration has no scope: name "
                    "the cluster on the command line)")
    return access if scope == access.scope else access.model_copy(update={"scope": scope})


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


async def use_store(config: ClusterAccess, operation: Callable[[ClusterStore], Awaitable[T]],
                    timeout: float = DCS_TIMEOUT, budget: float | None = None) -> T:
    """Run ``operation`` on the :class:`~pgha.dcs.store.ClusterStore` of ``config``'s
    cluster, over a KVStore from :data:`kv_factory` (``timeout`` per request), all of it
    within ``budget`` seconds (default ``2 * timeout``). No session is opened: the CLI reads,
    and writes persistent keys with compare-and-set. Raises DCSError/TimeoutError."""
    async with asyncio.timeout(budget if budget is not None else 2 * timeout):
        async with kv_factory(config, timeout) as kv:
            return await operation(ClusterStore(kv, config.namespace, config.scope, config.scope))


async def load_view(config: ClusterAccess, timeout: float = DCS_TIMEOUT) -> ClusterView:
    """One consistent read of every key of ``config``'s cluster (``ClusterStore.load``).
    Raises DCSError/TimeoutError."""
    return await use_store(config, lambda store: store.load(), timeout)


def read_view(config: ClusterAccess) -> ClusterView:
    """:func:`load_view` from synchronous code (exits 1 when the DCS cannot be read)."""
    return run(load_view(config))


def on_store(config: ClusterAccess, operation: Callable[[ClusterStore], Awaitable[T]],
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


def cluster_and_members(ctx: typer.Context, args: Sequence[str], group: int | None
                        ) -> tuple[ClusterAccess, ClusterView, list[str]]:
    """``CLUSTER [MEMBER]...`` of restart, reload and reinit, read as patronictl does: the first
    argument names the cluster. pgha also takes the short form ``MEMBER...`` when the
    configuration has a scope and the first argument is not that scope but one of its members.
    A named cluster without members exits 1 (``X cluster doesn't have any members``); no
    cluster at all exits 2."""
    refuse_group(group)
    access = load_access(ctx)
    names = list(args)
    if access.scope and (not names or names[0] == access.scope):
        config = get_config(ctx)
        return config, read_view(config), names[1:]
    if access.scope:
        config = get_config(ctx)
        view = read_view(config)
        if names[0] in view.members:
            return config, view, names
    if not names:
        usage_error("Missing argument 'CLUSTER_NAME'. (the configuration has no scope)")
    config = get_config(ctx, names[0])
    view = read_view(config)
    if not view.members:
        fail(f"{names[0]} cluster doesn't have any members")
    return config, view, names[1:]


def select_members(scope: str, view: ClusterView, names: Sequence[str],
                   role: str) -> list[Member]:
    """The members of cluster ``scope`` named (all when none) that match ``role``, leader
    first. Exits 1 with patronictl's messages: ``X is not a member of cluster`` for an unknown
    name, ``No <role> among provided members`` when none of the names has the role."""
    for name in names:
        if name not in view.members:
            fail(f"{name} is not a member of cluster")
    chosen = [m for m in ordered(view) if (not names or m.name in names)]
    matching = [m for m in chosen if has_role(view, m, role)]
    if names and not matching:
        fail(f"No {role} among provided members")
    return matching


def member_list(members: Sequence[Member]) -> str:
    return ", ".join(m.name for m in members)


def confirm(question: str, force: bool) -> None:
    """Ask ``question`` unless ``force``; a "no" prints ``Aborted!`` and exits 1."""
    if not force:
        typer.confirm(question, abort=True)


def api(ctx: typer.Context, config: ClusterAccess, member: Member, method: str, path: str,
        body: Any = None, timeout: float = DEFAULT_TIMEOUT) -> Reply:
    """One REST call from synchronous code. Raises RestError when the member does not
    answer (see :mod:`pgha.cli.rest`)."""
    return api_all(ctx, config, [Call(member, method, path, body)], timeout)[0].unwrap()


def api_all(ctx: typer.Context, config: ClusterAccess, calls: list[Call],
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
