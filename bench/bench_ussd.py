"""USSD benchmark: whole sessions per second end to end against the real gateway.

A session is what a caller does to check the balance: ``*200#`` (PSSR indication) -> menu
screen (USSR request) -> ``2`` (USSR confirm) -> the router's balance reply (PSSR response with
the end bit). The client is asyncio over raw sockets with the gateway's own PDU codec: several TRX
binds, many callers in flight (distinct numbers, one session each at a time). Prints a table,
writes bench/out/ussd.json and a latency histogram (bench/out/ussd.svg), and ends with one JSON line.

    .venv/bin/python -m bench.bench_ussd --sessions 5000 [--binds 4 --callers 80]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BENCH_ACCOUNT, bench_fixtures, rss_mb, write_result
from bench.plot import histogram_svg
from gateway.smpp.constants import Tag, UssdServiceOp
from gateway.smpp.pdu import PDU, Framer, decode, encode


class Bind:
    """One TRX bind carrying many callers' sessions; screens are routed to the caller by destination."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.framer = Framer()
        self.seq = 1
        self.screens: dict[str, asyncio.Queue] = {}

    async def start(self, system_id: str, password: str) -> None:
        self.send(PDU.make("bind_transceiver", self.seq, system_id=system_id, password=password,
                           interface_version=0x34))
        while True:
            pdu = await self._next()
            if pdu.command == "bind_transceiver_resp":
                if pdu.command_status:
                    raise SystemExit(f"bind refused: 0x{pdu.command_status:02X}")
                return

    def send(self, pdu: PDU) -> None:
        self.writer.write(encode(pdu))

    async def _next(self) -> PDU:
        while True:
            frame = self.framer.next_frame()
            if frame is not None:
                return decode(frame)
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("gateway closed the bind")
            self.framer.feed(data)

    async def read_loop(self) -> None:
        while True:
            pdu = await self._next()
            if pdu.command == "deliver_sm":
                self.send(pdu.response(0, message_id=""))
                queue = self.screens.get(pdu.params["destination_addr"])
                if queue is not None:
                    queue.put_nowait(pdu)
            elif pdu.command == "enquire_link":
                self.send(pdu.response())

    def submit(self, msisdn: str, text: str, op: int) -> None:
        self.seq += 1
        self.send(PDU.make("submit_sm", self.seq, service_type="USSD", source_addr=msisdn,
                           destination_addr="*200#", short_message=text.encode(), ussd_service_op=op))


async def caller(bind: Bind, msisdn: str, sessions: int, latencies: list[float], errors: list[str]) -> None:
    queue: asyncio.Queue = asyncio.Queue()
    bind.screens[msisdn] = queue
    for _ in range(sessions):
        start = time.perf_counter()
        bind.submit(msisdn, "*200#", UssdServiceOp.PSSR_INDICATION)
        menu = await asyncio.wait_for(queue.get(), 30)
        bind.submit(msisdn, "2", UssdServiceOp.USSR_CONFIRM)
        final = await asyncio.wait_for(queue.get(), 30)
        if menu.tlvs.get(Tag.ussd_service_op) != UssdServiceOp.USSR_REQUEST or \
                final.tlvs.get(Tag.ussd_service_op) != UssdServiceOp.PSSR_RESPONSE:
            errors.append(msisdn)
        latencies.append((time.perf_counter() - start) * 1000)


async def drive(port: int, total: int, binds: int, callers: int, duration: float) -> dict:
    system_id, password = BENCH_ACCOUNT
    links = []
    for _ in range(binds):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        bind = Bind(reader, writer)
        await bind.start(system_id, password)
        links.append(bind)
    readers = [asyncio.create_task(b.read_loop()) for b in links]
    latencies: list[float] = []
    errors: list[str] = []
    per_caller = max(1, total // callers)
    start = time.perf_counter()
    tasks = [caller(links[i % binds], f"{13800000001 + i}", per_caller, latencies, errors) for i in range(callers)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), duration)
    except TimeoutError:
        pass
    elapsed = time.perf_counter() - start
    for task in readers:
        task.cancel()
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2) if latencies else 0.0

    return {"sessions": len(latencies), "seconds": round(elapsed, 3),
            "sessions_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
            "pdus_per_s": round(4 * len(latencies) / elapsed, 1) if elapsed else 0.0,
            "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "errors": len(errors),
            "binds": binds, "callers": callers, "latencies_ms": latencies}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--binds", type=int, default=4)
    parser.add_argument("--callers", type=int, default=80, help="sessions in flight (at most 100: demo numbers)")
    parser.add_argument("--duration", type=float, default=120.0, help="stop after this many seconds")
    parser.add_argument("--db", default=None)
    args = parser.parse_args(argv)
    from tests.harness import start_gateway

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fixtures = bench_fixtures(workdir)
        gw = start_gateway(workdir, "--fixtures", str(fixtures), "--population", "0", "--log-format", "json",
                           db_url=args.db)
        try:
            result = asyncio.run(drive(gw.ports["smpp"], args.sessions, args.binds, min(args.callers, 100),
                                       args.duration))
            result["rss_mb"] = round(rss_mb(gw.proc.pid), 1)
        finally:
            gw.stop()
    latencies = result.pop("latencies_ms")
    result["target_sessions_per_s"] = 1000
    write_result("ussd", result)
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ussd.svg").write_text(histogram_svg("USSD session latency (*200# -> balance)", latencies))
    from rich.console import Console
    from rich.table import Table

    table = Table(title="USSD sessions end to end")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    Console(file=sys.stderr).print(table)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
