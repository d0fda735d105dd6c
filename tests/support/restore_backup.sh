#!/bin/sh
# A custom bootstrap method for the tests (bootstrap.<method>.command), called with Patroni's
# arguments: --scope=<scope> --datadir=<dir> and the section's extra keys --backup=<base backup
# directory> and, optionally, --gate=<file> (wait, at most 120 s, until that file exists before
# restoring, so a test can watch the state shown meanwhile). Copies the base backup into the
# data directory; fails (exit 3) when what it copied is not a PostgreSQL data directory.
set -eu
datadir="" backup="" gate=""
for arg in "$@"; do
    case "$arg" in
        --datadir=*) datadir="${arg#--datadir=}" ;;
        --backup=*) backup="${arg#--backup=}" ;;
        --gate=*) gate="${arg#--gate=}" ;;
        --scope=*) ;;
        *) echo "unexpected argument: $arg" >&2; exit 2 ;;
    esac
done
if [ -n "$gate" ]; then
    waited=0
    while [ ! -e "$gate" ] && [ "$waited" -lt 1200 ]; do sleep 0.1; waited=$((waited + 1)); done
fi
echo "restoring $backup into $datadir"
mkdir -p "$datadir"
cp -a "$backup/." "$datadir/"
chmod 700 "$datadir"
if [ ! -f "$datadir/PG_VERSION" ]; then
    echo "not a base backup: $backup" >&2
    exit 3
fi
