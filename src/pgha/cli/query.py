"""``pgha query`` (SQL on a member) and ``pgha dsn`` (a member's libpq connection string).

The member is ``-m NAME``, or the first member matching ``-r ROLE`` with the leader first
(so the default ``any`` prefers the primary). Host and port come from the member's published
``conn_url``. ``query`` connects with asyncpg as the configuration's
``postgresql.authentication.superuser`` (user, password, sslmode) unless ``-U`` is given
(``--password`` then prompts for the password; without it libpq-style ``PGPASSWORD`` /
``.pgpass`` apply as asyncpg reads them). Connecting is bounded by 5 s, the statement by
``--timeout`` (60 s).

Output: the result rows with a header line, as ``tsv`` (``--delimiter``, tab by default) or
any ``-f`` format; NULL is an empty cell (``null`` in json/yaml). A statement that returns no
rows prints nothing but a header when it has columns. Several statements separated by ``;``
run as one script and print the command tag of the last one. Connection or SQL errors exit 1
(in watch mode they are printed and the watch goes on).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from pydantic import ValidationError

from pgha.cli import common
from pgha.cli.common import fail, usage_error
from pgha.cli.output import FORMATS, format_rows
from pgha.config import ClusterAccess, RoleAuth
from pgha.core.model import ClusterView, Member

Cluster = Annotated[str | None, typer.Argument(
    metavar="[CLUSTER]", help="cluster name (default: the configured scope)")]
MemberOpt = Annotated[str | None, typer.Option("-m", "--member", help="member name")]
RoleOpt = Annotated[str, typer.Option(
    "-r", "--role", help="leader, primary, standby-leader, replica, standby or any")]

CONNECT_TIMEOUT = 5.0


def pick_member(scope: str, view: ClusterView, member: str | None, role: str) -> Member:
    """``-m`` when given (it must exist), else the first member of ``role``, leader first.
    Exits 1 when there is none."""
    if member is not None:
        if member not in view.members:
            fail(f"{member}: not a member of cluster {scope}")
        return view.members[member]
    chosen = common.select_members(scope, view, [], common.normalize_role(role))
    if not chosen:
        fail(f"no member of cluster {scope} has the role {role}")
    return chosen[0]


def host_port(member: Member) -> tuple[str, int]:
    """Host and port of ``member``'s ``conn_url`` (port 5432 when absent). Exits 1 when the
    member published no usable URL."""
    try:
        parts = urlsplit(member.conn_url)
        port = parts.port or 5432
    except ValueError:
        parts, port = None, 5432
    if parts is None or not parts.hostname:
        fail(f"member {member.name} publishes no usable conn_url ({member.conn_url!r})")
    return parts.hostname, port


def dsn(
    ctx: typer.Context,
    cluster: Cluster = None,
    group: common.GroupOption = None,
    role: RoleOpt = "any",
    member: MemberOpt = None,
) -> None:
    """Print a libpq connection string (host=... port=...) for a member."""
    if member is not None and role != "any":
        usage_error("-m and -r are mutually exclusive")
    config = common.get_config(ctx, cluster, group)
    view = common.read_view(config)
    host, port = host_port(pick_member(config.scope, view, member, role))
    typer.echo(f"host={host} port={port}")


def superuser_of(config: ClusterAccess) -> RoleAuth:
    """``postgresql.authentication.superuser`` of the configuration file when it has one (an
    agent's file), else user ``postgres`` without a password (a patronictl-style file).
    An invalid section exits 2 naming its key path."""
    pg = (config.model_extra or {}).get("postgresql")
    auth = pg.get("authentication") if isinstance(pg, dict) else None
    entry = auth.get("superuser") if isinstance(auth, dict) else None
    data = {**entry} if isinstance(entry, dict) else {}
    data["username"] = data.get("username") or "postgres"
    try:
        return RoleAuth.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(str(e["msg"]) for e in exc.errors(include_url=False))
        usage_error(f"postgresql.authentication.superuser: {details}")


def _cell(value: Any, fmt: str) -> Any:
    if value is None:
        return None if fmt in ("json", "yaml") else ""
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique (``?column?``, ``?column?_2``, ...) so rows can be keyed."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


async def run_sql(host: str, port: int, user: str, password: str | None, database: str,
                  sql: str, sslmode: str | None, timeout: float) -> tuple[list[str],
                                                                          list[list[Any]]]:
    """Run ``sql``; returns (column names, rows). A multi-statement script returns
    (["status"], [[command tag]])."""
    import asyncpg

    conn = await asyncpg.connect(host=host, port=port, user=user, password=password,
                                 database=database, timeout=CONNECT_TIMEOUT,
                                 command_timeout=timeout, ssl=sslmode or None)
    try:
        try:
            statement = await conn.prepare(sql, timeout=timeout)
        except asyncpg.PostgresSyntaxError as exc:
            if "multiple commands" not in str(exc):
                raise
            tag = await conn.execute(sql, timeout=timeout)
            return ["status"], [[tag]]
        columns = unique_names([a.name for a in statement.get_attributes()])
        records = await statement.fetch(timeout=timeout)
        return columns, [list(r.values()) for r in records]
    finally:
        await asyncio.wait_for(conn.close(), CONNECT_TIMEOUT)


def _read_sql(command: str | None, file: str | None) -> str:
    """The SQL of ``-c`` or of the ``-f`` file (``-``: stdin); an unreadable file exits 2."""
    if file is None:
        return command or ""
    try:
        if file == "-":
            return typer.get_text_stream("stdin").read()
        return Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        usage_error(f"cannot read {file}: {exc}")


def query(
    ctx: typer.Context,
    cluster: Cluster = None,
    group: common.GroupOption = None,
    role: RoleOpt = "any",
    member: MemberOpt = None,
    dbname: Annotated[str | None, typer.Option("-d", "--dbname", help="database")] = None,
    username: Annotated[str | None, typer.Option("-U", "--username", help="user")] = None,
    password: Annotated[bool, typer.Option("--password", help="prompt for a password")] = False,
    command: Annotated[str | None, typer.Option("-c", "--command", help="SQL to run")] = None,
    file: Annotated[str | None, typer.Option("-f", "--file", help="SQL file (- for stdin)")
                    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="tsv, pretty, json or yaml")] = "tsv",
    delimiter: Annotated[str, typer.Option("--delimiter", help="tsv cell separator")] = "\t",
    timeout: Annotated[float, typer.Option("--timeout", help="statement timeout (s)")] = 60.0,
    watch: Annotated[bool, typer.Option("-W", help="repeat every 2 seconds")] = False,
    every: Annotated[float | None, typer.Option("-w", "--watch", help="repeat every N s")
                     ] = None,
) -> None:
    """Run SQL on a member (-m) or the first member of a role (-r, primary first)."""
    if member is not None and role != "any":
        usage_error("-m and -r are mutually exclusive")
    if (command is None) == (file is None):
        usage_error("give exactly one of -c SQL or -f FILE")
    if fmt not in FORMATS:
        usage_error(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    sql = _read_sql(command, file)
    config = common.get_config(ctx, cluster, group)
    superuser = superuser_of(config)
    user = username or superuser.username
    secret = superuser.password if username is None else None
    if password:
        secret = typer.prompt("Password", hide_input=True)
    interval = common.watch_interval(watch, every)
    import asyncpg  # here, not at the top: the other commands do not need it

    def render() -> str:
        target = pick_member(config.scope, common.read_view(config), member, role)
        host, port = host_port(target)
        try:
            columns, rows = asyncio.run(run_sql(
                host, port, user, secret, dbname or "postgres", sql,
                superuser.sslmode if username is None else None, timeout))
        except (OSError, TimeoutError, asyncpg.PostgresError,
                asyncpg.InterfaceError) as exc:
            message = f"{target.name}: {type(exc).__name__}: {exc}"
            if interval is None:
                fail(message)
            return f"{common.now_stamp()} ERROR {message}"
        table = [{c: _cell(v, fmt) for c, v in zip(columns, row, strict=True)} for row in rows]
        return format_rows(table, columns, fmt, delimiter=delimiter)

    common.repeat(render, interval)
