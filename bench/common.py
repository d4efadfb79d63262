"""Shared benchmark plumbing: free ports, the shared load client and null SMSC, bench fixtures, output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT.parent / "shared" / "tools"
OUT = ROOT / "bench" / "out"
BENCH_ACCOUNT = ("bench", "bench123")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tools_dir() -> Path:
    if not (TOOLS / "smpp_load.py").exists():
        raise SystemExit(f"the shared SMPP tools are missing: expected {TOOLS}/smpp_load.py")
    return TOOLS


def run_load(port: int, *, count: int, duration: float, binds: int = 4, window: int = 10, dest: str = "10086",
             message: str = "200", expect_replies: bool = True, subscribers: int = 100,
             src_base: int = 13800000001, system_id: str = "load", password: str = "load",
             dlr: bool = False, rate: float = 0.0) -> dict:
    """Run ../shared/tools/smpp_load.py and return its JSON summary (its last stdout line)."""
    cmd = [sys.executable, str(tools_dir() / "smpp_load.py"), "--port", str(port), "--binds", str(binds),
           "--window", str(window), "--count", str(count), "--duration", str(duration), "--dest", dest,
           "--message", message, "--subscribers", str(subscribers), "--src-base", str(src_base),
           "--system-id", system_id, "--password", password]
    if expect_replies:
        cmd.append("--expect-replies")
    if dlr:
        cmd.append("--dlr")
    if rate:
        cmd += ["--rate", str(rate)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"smpp_load printed no result: {proc.stderr[-2000:]}")
    return json.loads(lines[-1])


class NullSMSC:
    """../shared/tools/smpp_null_server.py on a free port: the ceiling of the load client."""

    def __init__(self, reply: bool = True):
        self.port = free_port()
        cmd = [sys.executable, str(tools_dir() / "smpp_null_server.py"), "--port", str(self.port),
               "--max-runtime", "600"]
        if reply:
            cmd.append("--reply")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        _wait_port(self.port)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


def bench_fixtures(workdir: Path) -> Path:
    """The demo fixtures plus a 'bench' account without the demo's 500 msg/s and 4-bind limits."""
    from notifier.security import hash_password

    target = workdir / "fixtures"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(ROOT / "fixtures" / "demo", target)
    accounts = target / "accounts.yaml"
    accounts.write_text(accounts.read_text(encoding="utf-8") + (
        f"  - system_id: {BENCH_ACCOUNT[0]}\n"
        f"    password_hash: {hash_password(BENCH_ACCOUNT[1], n=2**10)}\n"
        "    bind_types: [tx, rx, trx]\n    max_binds: 64\n    rate: 100000\n"
        "    source_ranges: []\n    ip_allow: []\n    receives_service_sms: false\n"), encoding="utf-8")
    return target


def _status_mb(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def rss_mb(pid: int) -> float:
    """Resident memory (MB), the database pages mapped in (SQLite's mmap) included."""
    return _status_mb(pid, "VmRSS")


def anon_mb(pid: int) -> float:
    """Resident memory of the process's own (MB): VmRSS without file pages (the mapped database, libraries)."""
    return _status_mb(pid, "RssAnon")


def hwm_mb(pid: int) -> float:
    return _status_mb(pid, "VmHWM")


def write_result(name: str, result: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return path


def env_pythonpath() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


_LOGGED_REPLIES = "SELECT COUNT(*) FROM message_log WHERE direction = 'MT' AND action = 'reply'"


def logged_replies(db_url: str) -> int:
    """Replies the gateway itself logged as delivered (its MT log rows of kind reply): the figure a
    benchmark's own reply count must equal."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(_LOGGED_REPLIES)).scalar_one()
    finally:
        engine.dispose()


def settled_logged_replies(db_url: str, quiet_s: float = 2.0, limit_s: float = 120.0) -> int:
    """The logged reply count once it has stopped moving (the run's backlog is out), so each count covers
    its own run and never the tail of the one before."""
    deadline = time.monotonic() + limit_s
    last, since = logged_replies(db_url), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        time.sleep(0.25)
        now = logged_replies(db_url)
        if now != last:
            last, since = now, time.monotonic()
    return last


def group_pids(pid: int) -> list[int]:
    """A gateway process and its children (the workers of a group)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if int(proc.name) == pid or ppid == pid:
            found.append(int(proc.name))
    return found


def group_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a gateway process and its children (a group's workers).

    On a shared machine the wall-clock figures depend on what else runs; CPU per reply does not,
    so it shows whether a second worker adds work per message or only needs a free core."""
    total = 0
    for member in group_pids(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def group_rss_mb(pid: int) -> float:
    """Resident memory of a gateway and its workers (MB)."""
    return sum(rss_mb(member) for member in group_pids(pid))


def group_anon_mb(pid: int) -> float:
    """Anonymous resident memory of a gateway and its workers (MB)."""
    return sum(anon_mb(member) for member in group_pids(pid))


def group_hwm_mb(pid: int) -> float:
    """Peak resident memory of a gateway and its workers, each at its own peak (MB)."""
    return sum(hwm_mb(member) for member in group_pids(pid))


def py_spy() -> str | None:
    """The py-spy sampling profiler of this environment (test extras), or None."""
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


class Sampler:
    """py-spy sampling a process and its children (every worker of a group) for ``seconds``: unlike
    cProfile it does not slow the gateway down, so the shares it prints are those of the real run."""

    def __init__(self, pid: int, seconds: float, path: Path, rate: int = 250):
        self.path = path
        self.proc = subprocess.Popen([py_spy() or "py-spy", "record", "--pid", str(pid), "--subprocesses",
                                      "--rate", str(rate), "--duration", str(max(1, int(seconds))),
                                      "--format", "raw", "--output", str(path), "--nonblocking"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait(self, timeout: float = 120.0) -> str:
        _, err = self.proc.communicate(timeout=timeout)
        if not self.path.exists():
            raise RuntimeError(f"py-spy wrote no samples: {err[-500:]}")
        return top_samples(self.path)


def top_samples(path: Path, n: int = 15) -> str:
    """The top functions of py-spy's raw (collapsed) stacks: own share and inclusive share of samples."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        total += int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + int(count)
    if not total:
        return "(no samples)"

    def table(counts: dict[str, int], skip: tuple[str, ...] = ()) -> list[str]:
        rows = [(c, f) for f, c in counts.items() if not f.startswith(skip)]
        return [f"{100 * c / total:5.1f}%  {f}" for c, f in sorted(rows, reverse=True)[:n]]

    # inclusive shares without the frames every sample has (the reactor loop, the CLI)
    common = ("<module>", "main ", "cmd_serve", "serve ", "ReactorBase.", "_PollLikeMixin", "callWithLogger",
              "callWithContext", "ContextTracker", "ThreadedContextTracker", "EPollReactor.doPoll", "run_worker")
    return "\n".join([f"{total} samples; own time:", *table(own), "inclusive (what the time was spent doing):",
                      *table(incl, common)])


def gc_figures(http_port: int) -> dict[str, dict[str, float]]:
    """The gateway's garbage-collector figures from its /metrics (gateway/gcstats.py): per generation the
    collections, their total pause (ms) and the longest (ms); summed over the processes that answer."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, dict[str, float]] = {}
    pattern = re.compile(r'^gateway_gc_(pauses_total|pause_seconds_total|pause_max_seconds)'
                         r'\{generation="(\d)"\} ([0-9.e+-]+)$', re.M)
    for name, gen, value in pattern.findall(text):
        row = out.setdefault(f"gen{gen}", {})
        key = {"pauses_total": "collections", "pause_seconds_total": "pause_ms", "pause_max_seconds": "max_ms"}[name]
        row[key] = round(float(value) * (1 if key == "collections" else 1000), 2)
    for name in ("swept_objects", "sweep_seconds"):
        found = re.search(rf"^gateway_gc_{name}_total ([0-9.e+-]+)$", text, re.M)
        if found:
            out.setdefault("sweep", {})[name] = float(found.group(1))
    frozen = re.search(r"^gateway_gc_frozen_objects ([0-9.e+-]+)$", text, re.M)
    if frozen:
        out["frozen"] = {"objects": float(frozen.group(1))}
    # the checkpoint thread's figures (gateway/checkpointer.py), beside the collector's: both are pauses
    # the reactor does not take any more
    for name in ("checkpoints_total", "checkpoint_busy_total", "checkpoint_seconds_total",
                 "checkpoint_max_seconds", "wal_frames"):
        found = re.search(rf"^gateway_sqlite_{name} ([0-9.e+-]+)$", text, re.M)
        if found:
            out.setdefault("wal", {})[name] = float(found.group(1))
    return out
