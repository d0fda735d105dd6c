#!/bin/sh
# restore_command for the tests: restore_wal.sh <archive dir> %f %p [<gate file>]. With a gate,
# waits (at most 120 s) until that file exists, so a test can watch the state shown while the
# restored cluster recovers. A file missing from the archive is an ordinary non-zero exit.
set -eu
archive="$1" name="$2" target="$3" gate="${4:-}"
if [ -n "$gate" ]; then
    waited=0
    while [ ! -e "$gate" ] && [ "$waited" -lt 1200 ]; do sleep 0.1; waited=$((waited + 1)); done
fi
exec cp "$archive/$name" "$target"
