"""A throwaway PostgreSQL cluster on a free loopback port, as .ci/run starts one (Debian's binaries)."""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from bench.common import free_port


def pg_bin() -> str | None:
    """The newest PostgreSQL server bin folder on this machine, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def _run(command: str) -> None:
    # initdb refuses to run as root: the cluster belongs to the postgres user then, as in .ci/run
    argv = ["su", "postgres", "-s", "/bin/sh", "-c", command] if os.geteuid() == 0 else ["sh", "-c", command]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Yield a SQLAlchemy URL of a fresh cluster; the cluster and its files are gone afterwards."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql (as .ci/run does)")
    data = tempfile.mkdtemp(prefix="bench-pg-")
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    port = free_port()
    q = shlex.quote
    _run(f"{q(bindir)}/initdb -D {q(data)} -A trust -U postgres")
    options = f"-p {port} -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on"
    _run(f"{q(bindir)}/pg_ctl -D {q(data)} -o {q(options)} -l {q(data)}/log -w start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        _run(f"{q(bindir)}/pg_ctl -D {q(data)} -m fast stop")
        shutil.rmtree(data, ignore_errors=True)
