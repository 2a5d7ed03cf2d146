"""Bookings per second through HTTP, against the embedded Redis and the machine's Redis, with a ceiling.

Run: .venv/bin/python benchmarks/bookings.py [--per-client 200] [--clients 64]

It starts, by itself and on 127.0.0.1, one single-worker server per Redis (the embedded one, as a fresh
deployment runs, and the machine's Redis on database 14, flushed first), seeds practitioners through the
API with the API key, and drives POST /v1/bookings from `--clients` keep-alive connections, each a client
with its own bearer token, as a real client sends it:

- distinct slots: every request books a different free slot (each connection has its own practitioner);
- hot slot: every connection (a different client each) tries the same slot; exactly one may succeed.

The ceiling, measured in the same run: a bare Starlette endpoint on the same server settings whose
handler runs one small Lua script on the machine's Redis per request. Every server is warmed up with
WARM_UP requests per connection before it is measured. Besides throughput and latency, each line gives
the server process's CPU time per request during the measure (from /proc), which other jobs on a shared
machine disturb less than throughput. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

API_KEY_ID, API_SECRET = "bench", "b" * 40
SYSTEM_REDIS = "redis://127.0.0.1:6379/14"
WARM_UP = 20  # requests per connection before each measured phase


# --- the servers (child processes) ---------------------------------------------------------------


def _serve(mode: str, port: int, data_dir: str) -> None:
    import uvicorn

    config: dict[str, Any] = dict(host="127.0.0.1", port=port, log_level="warning", ws_per_message_deflate=False,
                                  lifespan="on", server_header=False, access_log=False)
    if mode == "ceiling":
        import redis.asyncio as aioredis
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        client = aioredis.Redis.from_url(SYSTEM_REDIS, max_connections=64)
        script = client.register_script("return redis.call('INCR', KEYS[1])")

        async def endpoint(request: Request) -> JSONResponse:
            await request.body()
            n = await script(keys=["bench:ceiling"])
            return JSONResponse({"n": n}, status_code=201)

        app = Starlette(routes=[Route("/v1/bookings", endpoint, methods=["POST"])])
        _freeze_imports()
        uvicorn.run(app, **config)
        return
    from session_server.app import create_app
    from session_server.settings import load_settings

    settings = load_settings({}, redis_url=None if mode == "embedded" else SYSTEM_REDIS,
                             data_dir=Path(data_dir), api_keys={API_KEY_ID: API_SECRET}, port=port,
                             master_keys={"k1": b"\x01" * 32}, active_master_key_id="k1", log_level="warning")
    app = create_app(settings)
    _freeze_imports()
    uvicorn.run(app, **config, log_config=None)


def _freeze_imports() -> None:
    """What `session-server serve` does before serving, done for every server here alike: keep what
    was imported out of the collector's full passes."""
    import gc

    gc.collect()
    gc.freeze()


def cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(mode: str) -> Any:
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        proc = subprocess.Popen([sys.executable, __file__, "--serve", mode, "--port", str(port),
                                 "--data-dir", data_dir], cwd=ROOT)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"the {mode} server did not start") from None
                    time.sleep(0.05)
            yield port, proc.pid
        finally:
            proc.terminate()
            proc.wait(20)


# --- a lean keep-alive HTTP/1.1 client, so the load generator costs less than the server ------------


class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}",
                "Content-Type: application/json"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        length = 0
        for line in lines[1:]:
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


ADMIN = {"Authorization": "Basic " + base64.b64encode(f"{API_KEY_ID}:{API_SECRET}".encode()).decode()}


async def seed(port: int, clients: int, tokens: Any) -> tuple[list[list[str]], str]:
    """One practitioner per connection (open every hour of every day), and one for the hot slot."""
    conn = Conn(port)
    slots: list[list[str]] = []
    now = time.time()
    days = [{"day": d, "start": "00:00", "end": "24:00"}
            for d in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")]

    def iso(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    for i in range(clients + 1):
        pid = f"bp{i}"
        body = {"id": pid, "display_name": "Bench", "specialty": "psychologist", "price_minor": 300_000}
        for method, path, payload in (("POST", "/v1/practitioners", body),
                                      ("POST", f"/v1/practitioners/{pid}/status", {"status": "active"}),
                                      ("PUT", f"/v1/practitioners/{pid}/availability", {"weekly": days})):
            status, text = await conn.request(method, path, ADMIN, json.dumps(payload).encode())
            assert status in (200, 201), text
        status, text = await conn.request(
            "GET", f"/v1/practitioners/{pid}/slots?from={iso(now)}&to={iso(now + 31 * 86400)}",
            bearer(tokens("client", "seed")))
        assert status == 200, text
        slots.append([s["starts_at"] for s in json.loads(text)["slots"]])
    conn.close()
    return slots[:-1], slots[-1][0]


async def drive(port: int, jobs: list[list[tuple[dict[str, str], bytes]]]) -> tuple[float, list[float], dict[int, int]]:
    """Each job list runs on its own connection, one request after another; all connections at once."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def run(job: list[tuple[dict[str, str], bytes]]) -> None:
        conn = Conn(port)
        try:
            for headers, body in job:
                t0 = time.perf_counter()
                status, _ = await conn.request("POST", "/v1/bookings", headers, body)
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(run(j) for j in jobs))
    return time.perf_counter() - t0, latencies, statuses


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def bench_backend(mode: str, clients: int, per_client: int) -> dict[str, Any]:
    from session_server.auth import Role, TokenAuthority

    authority = TokenAuthority({API_KEY_ID: API_SECRET}, max_ttl_s=86400)

    def tokens(role: str, sub: str) -> str:
        return authority.mint(sub=sub, name=sub, role=Role(role), ttl_s=3600)[0]

    if mode == "system":
        import redis

        r = redis.Redis.from_url(SYSTEM_REDIS)
        r.flushdb()
        r.close()
    with server(mode) as (port, pid):
        slots, hot = await seed(port, clients, tokens)
        # Warmed up like the ceiling (20 requests per connection, here each booking a slot of its own), so
        # that neither side pays its start-up (new Redis connections, first token checks) in the measure.
        per = min(per_client, min(len(s) for s in slots) - WARM_UP)
        warm, jobs = [], []
        for i in range(clients):
            head = bearer(tokens("client", f"bc{i}"))
            booked = [(head, json.dumps({"practitioner_id": f"bp{i}", "starts_at": s}).encode())
                      for s in slots[i][:WARM_UP + per]]
            warm.append(booked[:WARM_UP])
            jobs.append(booked[WARM_UP:])
        await drive(port, warm)
        cpu0 = cpu_s(pid)
        elapsed, lat, statuses = await drive(port, jobs)
        cpu = cpu_s(pid) - cpu0
        hot_body = json.dumps({"practitioner_id": f"bp{clients}", "starts_at": hot}).encode()
        hot_jobs = [[(bearer(tokens("client", f"hot{i}")), hot_body)] * max(1, per // 4) for i in range(clients)]
        hot_elapsed, hot_lat, hot_statuses = await drive(port, hot_jobs)
    n = sum(len(j) for j in jobs)
    hot_n = sum(len(j) for j in hot_jobs)
    return {"distinct_per_s": n / elapsed, "distinct_ok": statuses.get(201, 0), "distinct_n": n,
            "p50_ms": pct(lat, 0.50), "p99_ms": pct(lat, 0.99), "hot_per_s": hot_n / hot_elapsed,
            "hot_successes": hot_statuses.get(201, 0), "hot_conflicts": hot_statuses.get(409, 0),
            "hot_p99_ms": pct(hot_lat, 0.99), "mean_ms": statistics.mean(lat) * 1000, "cpu_us": cpu / n * 1e6}


async def bench_ceiling(clients: int, per_client: int) -> dict[str, Any]:
    with server("ceiling") as (port, pid):
        head = bearer("x" * 200)  # about the size of a real token
        body = json.dumps({"practitioner_id": "bp0", "starts_at": "2030-01-01T10:00:00Z"}).encode()
        await drive(port, [[(head, body)] * WARM_UP for _ in range(clients)])  # warm up
        cpu0 = cpu_s(pid)
        elapsed, lat, _ = await drive(port, [[(head, body)] * per_client for _ in range(clients)])
        cpu = cpu_s(pid) - cpu0
    return {"per_s": clients * per_client / elapsed, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
            "cpu_us": cpu / (clients * per_client) * 1e6}


async def main(args: argparse.Namespace) -> None:
    # The ceiling is measured before and after the backends and averaged, so a machine whose load drifts
    # during the run (a shared one) skews the ratio less.
    before = await bench_ceiling(args.clients, args.per_client)
    results = {}
    for mode in ("embedded", "system"):
        r = await bench_backend(mode, args.clients, args.per_client)
        results[mode] = r
        print(f"{mode:>8} redis: distinct slots {r['distinct_per_s']:.0f} bookings/s "
              f"({r['distinct_ok']}/{r['distinct_n']} booked, "
              f"{r['distinct_per_s'] / before['per_s']:.0%} of the ceiling measured first), "
              f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; hot slot {r['hot_per_s']:.0f} req/s, "
              f"{r['hot_successes']} booked, {r['hot_conflicts']} conflicts, p99 {r['hot_p99_ms']:.1f} ms; "
              f"server CPU {r['cpu_us']:.0f} µs per booking", flush=True)
    after = await bench_ceiling(args.clients, args.per_client)
    ceiling = {k: (before[k] + after[k]) / 2 for k in before}
    print(f"ceiling (bare endpoint + one Lua script): {ceiling['per_s']:.0f} req/s (before {before['per_s']:.0f}, "
          f"after {after['per_s']:.0f}), p50 {ceiling['p50_ms']:.1f} ms, p99 {ceiling['p99_ms']:.1f} ms; "
          f"server CPU {ceiling['cpu_us']:.0f} µs per request", flush=True)
    e, s = results["embedded"], results["system"]
    print(json.dumps({
        "clients": args.clients,
        "ceiling_per_s": round(ceiling["per_s"]),
        "distinct_slots_per_s": round(e["distinct_per_s"]),
        "distinct_slots_per_s_system_redis": round(s["distinct_per_s"]),
        "ratio_to_ceiling": round(e["distinct_per_s"] / ceiling["per_s"], 3),
        "ratio_to_ceiling_system_redis": round(s["distinct_per_s"] / ceiling["per_s"], 3),
        "p50_ms": round(e["p50_ms"], 2), "p99_ms": round(e["p99_ms"], 2),
        "p50_ms_system_redis": round(s["p50_ms"], 2), "p99_ms_system_redis": round(s["p99_ms"], 2),
        "hot_slot_per_s": round(e["hot_per_s"]), "hot_slot_per_s_system_redis": round(s["hot_per_s"]),
        "hot_slot_successes": e["hot_successes"], "hot_slot_successes_system_redis": s["hot_successes"],
        "distinct_slots_booked": e["distinct_ok"], "distinct_slots_booked_system_redis": s["distinct_ok"],
        "distinct_slots_tried": e["distinct_n"],
        "server_cpu_us_per_booking": round(e["cpu_us"]), "server_cpu_us_per_booking_system_redis": round(s["cpu_us"]),
        "ceiling_server_cpu_us_per_req": round(ceiling["cpu_us"]),
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--per-client", type=int, default=200)
    parser.add_argument("--serve", choices=["embedded", "system", "ceiling"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.serve:
        _serve(cli.serve, cli.port, cli.data_dir)
    else:
        os.environ.setdefault("PYTHONHASHSEED", "0")
        asyncio.run(main(cli))
