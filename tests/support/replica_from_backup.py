"""A custom replica creation method for the integration tests, called the way Patroni calls
one: ``replica_from_backup.py --scope=S --datadir=D --role=replica --connstring=C
[--backup=DIR] [--record=FILE] [--fail=...]``.

It appends its arguments and the ``PGPASSFILE`` it got to ``--record`` (one JSON object a
line), then copies the base backup in ``--backup`` (taken earlier with pg_basebackup) into
``--datadir``; with ``--fail`` it says so on stderr and exits 1 instead.
"""

from __future__ import annotations

import json
import os
import shutil
import sys


def main(argv: list[str]) -> int:
    opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    if "record" in opts:
        with open(opts["record"], "a") as out:
            out.write(json.dumps({"argv": argv, "PGPASSFILE": os.environ.get("PGPASSFILE")})
                      + "\n")
    if "fail" in opts:
        print("replica_from_backup: no backup for this member (asked to fail)", file=sys.stderr)
        return 1
    if "backup" not in opts or "datadir" not in opts:
        print("replica_from_backup: --backup and --datadir are required", file=sys.stderr)
        return 2
    shutil.copytree(opts["backup"], opts["datadir"], symlinks=True, dirs_exist_ok=True)
    os.chmod(opts["datadir"], 0o700)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
