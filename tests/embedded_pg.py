"""A throwaway PostgreSQL server for the tests, from the binaries the ``pgserver`` wheel ships.

Nothing is installed on the machine: initdb into a temporary folder, start on a free loopback
port (no Unix socket), stop and delete at the end. PostgreSQL refuses to run as root, so under
root the server runs as ``nobody`` from a copy of the binaries that user can read wherever the
virtualenv lives.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UNPRIVILEGED_USER = "nobody"
# fsync off: a test cluster that never outlives an OS crash; 200 connections: several gateway
# processes with their pools on one server (tests/test_scale_out_pg.py).
SERVER_OPTIONS = ("-c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200 "
                  "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
START_TIMEOUT_S = 60


def _wheel_paths() -> tuple[Path, Path]:
    """The pgserver wheel's PostgreSQL install and its bundled libraries (found without importing
    pgserver, whose import sets up locks and runtime folders this module does not use)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise RuntimeError("the pgserver package is missing: run `make setup` (it is in the test extras)")
    package = Path(spec.origin).parent
    return package / "pginstall", package.parent / "pgserver.libs"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class EmbeddedPostgres:
    """One running server; :meth:`start` makes it, :meth:`stop` removes every trace of it."""

    root: Path
    bindir: Path
    port: int
    run_as: dict[str, Any] = field(default_factory=dict)

    @property
    def pgdata(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls) -> EmbeddedPostgres:
        install, libs = _wheel_paths()
        root = Path(tempfile.mkdtemp(prefix="test-pg-"))
        server = cls(root, install / "bin", _free_port())
        if os.geteuid() == 0:
            server._drop_root(install, libs)
        try:
            server._run("initdb", "-D", str(server.pgdata), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                        "--no-sync")
            server._run("pg_ctl", "-D", str(server.pgdata), "-l", str(server.root / "server.log"), "-w",
                        "-t", str(START_TIMEOUT_S), "-o", f"-p {server.port} {SERVER_OPTIONS}", "start")
        except subprocess.CalledProcessError as exc:
            log = server.root / "server.log"
            detail = log.read_text(errors="replace") if log.exists() else ""
            shutil.rmtree(server.root, ignore_errors=True)
            raise RuntimeError(f"embedded PostgreSQL did not start: {exc.stderr}\n{detail}") from exc
        return server

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _drop_root(self, install: Path, libs: Path) -> None:
        """Run as an unprivileged user, from a copy of the binaries laid out as in the wheel."""
        user = pwd.getpwnam(UNPRIVILEGED_USER)
        copy = self.root / "pgserver"
        shutil.copytree(install, copy / "pginstall", symlinks=True)
        shutil.copytree(libs, self.root / "pgserver.libs", symlinks=True)
        self.bindir = copy / "pginstall" / "bin"
        for path in (self.root, *self.root.rglob("*")):
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
        self.run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([str(self.bindir / program), *args], check=True, capture_output=True, text=True,
                       cwd=self.root, timeout=START_TIMEOUT_S + 30, **self.run_as)
