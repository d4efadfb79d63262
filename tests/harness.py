"""Start the real gateway as a new user would, on free loopback ports, for integration tests.

Tests run one process (``--workers 1``) unless they ask for a worker group (``workers=2``, or
``workers=None`` for serve's default: one process on SQLite, one per core on PostgreSQL): one process starts faster.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 120.0
# The one reason a test may skip; tests/conftest.py fails every other skip and names these groups at the end.
MISSING_PROGRAM = "external program missing"
INSTALL_HINT = "make test-deps"
# Cleared by tests/conftest.py while a test not marked integration runs: starting a gateway there is an error.
integration_allowed = True


def requires_programs(group: str, *programs: str) -> pytest.MarkDecorator:
    """A skipif mark for a group of tests that drive external programs (found on PATH or in /usr/bin)."""
    import pytest

    search = os.pathsep.join((os.environ.get("PATH", ""), "/usr/bin"))
    missing = [p for p in programs if shutil.which(p, path=search) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{MISSING_PROGRAM}: {group} ({', '.join(missing)})")


@dataclass
class RunningGateway:
    proc: subprocess.Popen
    ports: dict[str, int]
    workdir: Path
    db_url: str
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports['http']}{path}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 60.0) -> list[re.Match]:
        """The log's matches of ``pattern`` (multiline regex) once there are ``count``; fails after ``timeout``."""
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            found = list(regex.finditer(self.log_text()))
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} log line(s) matching {pattern!r} not seen within {timeout} s")
            time.sleep(0.1)

    def worker_of(self, local_port: int, timeout: float = 10.0) -> int:
        """Which worker of a group holds the SMPP bind made from ``local_port`` (its log line says)."""
        found = self.wait_log(rf"^\S+ \S+ +w(\d+) \[gateway\.smpp\] bound \S+ as \w+ from [\d.]+:{local_port}$",
                              timeout=timeout)
        return int(found[-1].group(1))

    def worker_pid(self, index: int) -> int:
        """The pid of the worker ``index`` started last."""
        return int(self.wait_log(rf"worker {index} started \(pid (\d+)\)")[-1].group(1))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def start_gateway(workdir: Path, *args: str, db_url: str | None = None, demo: bool = True,
                  env: dict[str, str] | None = None, workers: int | None = 1) -> RunningGateway:
    """Run ``run_gateway.py serve`` with every port 0 and wait for its JSON ready line.

    ``workers``: processes of the group (``None``: serve's default, see gateway/service.py default_workers).
    """
    if not integration_allowed:
        raise RuntimeError("start_gateway runs a real gateway: mark the test @pytest.mark.integration")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    db_url = db_url or f"sqlite:///{workdir / 'gateway.db'}"
    cmd = [sys.executable, str(ROOT / "run_gateway.py"), "serve", "--db", db_url, "--smpp-port", "0",
           "--sip-port", "0", "--http-port", "0", "--smtp-in-port", "0", "--smtp-out-port", "0",
           "--var-dir", str(workdir / "var")]
    if demo:
        cmd.append("--demo")
    if workers is not None:
        cmd.append(f"--workers={workers}")
    cmd.extend(args)
    log_path = workdir / "gateway.log"
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed when the process is reaped
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log_file, env=full_env)
    deadline = time.monotonic() + READY_TIMEOUT
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if not ready:
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        buf += chunk
        for line in buf.splitlines():
            if line.startswith(b"{") and b'"smpp"' in line:
                ports = json.loads(line)
                return RunningGateway(proc, ports, workdir, db_url, log_path, cmd)
    proc.kill()
    raise RuntimeError(f"gateway not ready within {READY_TIMEOUT}s:\n{log_path.read_text(errors='replace')}")
