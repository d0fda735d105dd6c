"""The dynamic configuration (DCS ``config`` key): ``pgha show-config``, ``pgha edit-config``,
``pgha pause`` and ``pgha resume``.

``edit-config`` changes the key in the DCS directly, with patronictl 4.1's messages: it reads
the key and its revision (none: ``The config key does not exist in the cluster C``, exit 1),
builds the new configuration (``--replace`` file, then ``--apply`` merge patch, then each ``-s``
and ``-p``, whose malformed items exit 1 with ``Invalid parameter setting X``; the editor when
none is given), prints ``Not changed`` when nothing changed (not with ``-q``), validates it
(exit 2 listing the errors, nothing written), shows a unified diff of the YAML before and after
(``--- ``/``+++ `` header lines, then ``-old``/``+new``; not with ``-q``), stops with ``Use
--force option to apply changes`` when the input came from stdin without ``--force``, asks
``Apply these changes?`` (a "no" writes nothing, exit 0) and writes with compare-and-set on the
revision read, printing ``Configuration changed``. If someone changed the key meanwhile nothing
is written: ``Config modification aborted due to concurrent changes``, exit 1.

``pause`` / ``resume`` send ``PATCH /config {"pause": true|false}`` to the leader (then the
other members); when no member answers they change the DCS key directly (compare-and-set).
``--wait`` polls every member's ``GET /patroni`` until each reports the new state.
"""

from __future__ import annotations

import copy
import difflib
import os
import shlex
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from pgha.cli import common
from pgha.cli.common import fail, usage_error
from pgha.cli.output import dump_yaml
from pgha.cli.rest import Call, RestError
from pgha.config import ClusterAccess, ConfigError, parse_dynamic_config
from pgha.config.binaries import server_binary
from pgha.config.pg_parameters import changed_value_errors
from pgha.core.commands import merge_patch
from pgha.core.model import ClusterView
from pgha.pg.catalogue import load_catalogue

Cluster = Annotated[str | None, typer.Argument(
    metavar="[CLUSTER]", help="cluster name (default: the configured scope)")]

#: Seconds between two status polls of ``pause --wait`` / ``resume --wait`` (tests shorten it).
POLL_INTERVAL = 1.0


def show_config(ctx: typer.Context, cluster: Cluster = None,
                group: common.GroupOption = None) -> None:
    """Print the dynamic configuration as YAML."""
    view = common.read_view(common.get_config(ctx, cluster, group))
    typer.echo(dump_yaml(dict(view.config or {})))


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError as exc:
        usage_error(f"cannot parse {text!r} as a YAML value: {' '.join(str(exc).split())}")


def _yaml_mapping(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        usage_error(f"{source}: invalid YAML: {' '.join(str(exc).split())}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        usage_error(f"{source}: expected a mapping at the top level")
    return data


def _read_source(name: str) -> str:
    if name == "-":
        return typer.get_text_stream("stdin").read()
    try:
        return Path(name).read_text()
    except OSError as exc:
        usage_error(f"cannot read {name}: {exc}")


def set_path(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in ``config`` as patronictl does: mappings are created on the way (a
    non-mapping in the way is replaced), ``None`` deletes the key, a mapping left empty is
    removed, and below ``postgresql.parameters`` the rest of the path is one parameter name
    (names may hold dots)."""
    parts = [part for part in dotted.strip().split(".")]
    if not all(parts):
        fail(f"Invalid parameter setting {dotted}")

    def walk(node: dict[str, Any], path: list[str], prefix: tuple[str, ...]) -> None:
        if prefix == ("postgresql", "parameters"):
            path = [".".join(path)]
        key = path[0]
        if len(path) == 1:
            if value is None:
                node.pop(key, None)
            else:
                node[key] = value
            return
        if not isinstance(node.get(key), dict):
            node[key] = {}
        walk(node[key], path[1:], (*prefix, key))
        if node[key] == {}:
            del node[key]

    walk(config, parts, ())


def _assignment(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not text or not sep:
        fail(f"Invalid parameter setting {text}")
    return key.strip(), _yaml_value(value)


def run_editor(text: str) -> str:
    """Open ``$VISUAL``/``$EDITOR`` (default ``vi``) on ``text`` in a temporary ``.yaml`` file
    and return the saved text. A failing editor exits 1."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.TemporaryDirectory(prefix="pgha-edit-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text)
        try:
            done = subprocess.run([*shlex.split(editor), str(path)], check=False)
        except OSError as exc:
            fail(f"cannot run the editor {editor!r}: {exc}")
        if done.returncode != 0:
            fail(f"the editor {editor!r} exited with code {done.returncode}; nothing changed")
        return path.read_text()


def _edited(before: dict[str, Any], replace: str | None, apply: str | None,
            sets: list[str], pgs: list[str]) -> dict[str, Any]:
    """The configuration ``edit-config`` would write: ``before`` (not modified) replaced by the
    ``--replace`` file, merged with the ``--apply`` file, then each ``-s`` and ``-p``; the
    editor's result when none is given. Bad input exits 2."""
    after = copy.deepcopy(before)
    if replace is not None:
        after = _yaml_mapping(_read_source(replace), replace)
    if apply is not None:
        after = merge_patch(after, _yaml_mapping(_read_source(apply), apply))
    for item in [*sets, *(f"postgresql.parameters.{v.lstrip()}" for v in pgs)]:
        set_path(after, *_assignment(item))
    if replace is None and apply is None and not sets and not pgs:
        after = _yaml_mapping(run_editor(dump_yaml(before) + "\n"), "edited configuration")
    return after


def _validate_or_exit(old: dict[str, Any], new: dict[str, Any], config: ClusterAccess) -> None:
    """Exit 2 listing every error when ``new`` is not a valid dynamic configuration, or sets a
    PostgreSQL parameter to a value the server would reject (judged by the catalogue of the
    ``postgresql`` section's postgres program, else of the one on PATH; values already in
    ``old`` are not judged again: members ignore them)."""
    try:
        parse_dynamic_config(new)
        pg = (config.model_extra or {}).get("postgresql")
        catalogue = load_catalogue(server_binary(pg, None))
        if errors := changed_value_errors(old, new, catalogue):
            raise ConfigError(errors)
    except ConfigError as exc:
        typer.echo("Error: the new configuration is invalid, nothing was written:", err=True)
        for key, message in exc.errors:
            typer.echo(f"  {key or '<top>'}: {message}", err=True)
        raise typer.Exit(2) from None


def edit_config(
    ctx: typer.Context,
    cluster: Cluster = None,
    sets: Annotated[list[str] | None, typer.Option(
        "-s", "--set", help="key.path=value (YAML-typed; empty or null deletes); repeatable")
    ] = None,
    pgs: Annotated[list[str] | None, typer.Option(
        "-p", "--pg", help="PostgreSQL parameter=value (postgresql.parameters); repeatable")
    ] = None,
    apply: Annotated[str | None, typer.Option(
        "--apply", help="YAML file (or - for stdin) merged into the configuration")] = None,
    replace: Annotated[str | None, typer.Option(
        "--replace", help="YAML file (or - for stdin) replacing the configuration")] = None,
    quiet: Annotated[bool, typer.Option(
        "-q", "--quiet", help="do not show the diff (nor 'Not changed')")] = False,
    force: Annotated[bool, typer.Option("--force", help="apply without asking")] = False,
    group: common.GroupOption = None,
) -> None:
    """Change the dynamic configuration in the DCS (compare-and-set), showing a diff."""
    config = common.get_config(ctx, cluster, group)
    view = common.read_view(config)
    revision = view.key_revisions.get("config")
    if revision is None or not view.config:
        fail(f"The config key does not exist in the cluster {config.scope}")
    before: dict[str, Any] = copy.deepcopy(dict(view.config))
    after = _edited(before, replace, apply, sets or [], pgs or [])
    if after == before:
        if not quiet:
            typer.echo("Not changed")
        return
    _validate_or_exit(before, after, config)
    if not quiet:
        typer.echo("\n".join(line.rstrip("\n") for line in difflib.unified_diff(
            _for_diff(before), _for_diff(after))))
    if "-" in (apply, replace) and not force:
        typer.echo("Use --force option to apply changes")
        return
    if not force and not typer.confirm("Apply these changes?"):
        return
    if not common.on_store(config, lambda store: store.compare_and_set_config(after, revision)):
        fail("Config modification aborted due to concurrent changes")
    typer.echo("Configuration changed")


def _for_diff(data: dict[str, Any]) -> list[str]:
    """The configuration as patronictl shows it for editing (:func:`dump_yaml`), as lines
    ending in a newline."""
    return [line + "\n" for line in dump_yaml(data).split("\n")]


def _paused_everywhere(ctx: typer.Context, config: ClusterAccess, paused: bool) -> bool:
    view = common.read_view(config)
    answers = common.api_all(ctx, config, [Call(m, "GET", "/patroni")
                                           for m in common.ordered(view)])
    for answer in answers:
        if isinstance(answer.result, RestError):
            return False
        data = answer.result.json() or {}
        if bool(data.get("pause", False)) != paused:
            return False
    return True


def patch_config(ctx: typer.Context, config: ClusterAccess, view: ClusterView,
                 patch: dict[str, Any], action: str,
                 dcs_patch: dict[str, Any] | None = None) -> None:
    """``PATCH /config`` with ``patch`` on the leader, then the others; when nobody answers,
    the DCS key merged with ``dcs_patch`` (default ``patch``; compare-and-set). ``action``
    names the command in messages."""
    errors: list[str] = []
    for member in common.ordered(view):
        try:
            reply = common.api(ctx, config, member, "PATCH", "/config", patch)
        except RestError as exc:
            errors.append(str(exc))
            continue
        if reply.status == 200:
            return
        fail(f"{action} failed on {member.name}: status code={reply.status}, "
             f"({reply.reason()})")
    for error in errors:
        typer.echo(f"warning: {error}", err=True)
    typer.echo("warning: no member's REST API answered; changing the DCS config directly",
               err=True)
    new = merge_patch(dict(view.config or {}), patch if dcs_patch is None else dcs_patch)
    revision = view.key_revisions.get("config")
    if not common.on_store(config, lambda store: store.compare_and_set_config(new, revision)):
        fail("the configuration was changed by someone else meanwhile; nothing was written: "
             f"run {action} again")


def _set_pause(ctx: typer.Context, config: ClusterAccess, view: ClusterView, paused: bool) -> None:
    patch_config(ctx, config, view, {"pause": paused}, "pause" if paused else "resume",
                 dcs_patch={"pause": True if paused else None})


def _toggle(ctx: typer.Context, cluster: str | None, group: int | None, paused: bool,
            wait: bool) -> None:
    config = common.get_config(ctx, cluster, group)
    view = common.read_view(config)
    if view.settings.pause == paused:
        fail("Cluster is already paused" if paused else "Cluster is not paused")
    _set_pause(ctx, config, view, paused)
    done = "paused" if paused else "resumed"
    if wait:
        typer.echo(f"'{'pause' if paused else 'resume'}' request sent, waiting until it is "
                   "recognized by all nodes")
        try:
            while not _paused_everywhere(ctx, config, paused):
                time.sleep(POLL_INTERVAL)
        except KeyboardInterrupt:
            fail("stopped waiting; not every member has seen the change yet")
    typer.echo(f"Success: cluster management is {done}")


def pause(ctx: typer.Context, cluster: Cluster = None, group: common.GroupOption = None,
          wait: Annotated[bool, typer.Option("--wait", help="wait until every member is paused")
                          ] = False) -> None:
    """Maintenance mode: members stop taking automatic actions (no failover)."""
    _toggle(ctx, cluster, group, True, wait)


def resume(ctx: typer.Context, cluster: Cluster = None, group: common.GroupOption = None,
           wait: Annotated[bool, typer.Option("--wait", help="wait until every member resumed")
                           ] = False) -> None:
    """Leave maintenance mode."""
    _toggle(ctx, cluster, group, False, wait)
