"""HTTP API speed (TARGETS.md "Speed and memory", HTTP rows), each figure next to a bare FastAPI baseline
measured in the same run.

For each backend (SQLite file, PostgreSQL database created on 127.0.0.1:5432 and dropped afterwards) a planted
game is seeded (``generate_daily``: 10,000 players by default), calibrated, and served by uvicorn subprocesses
started exactly as ``useg serve`` starts them (``unified_segmentation.api.server.run``; 1 worker for
concurrency 1, 2 workers for concurrency 32). The single-call scenarios are driven by ``wrk`` (Debian's
package; one thread, HTTP/1.1 keep-alive, one connection per concurrent client, ``--seconds`` per run, a
Lua script cycling through the calls, each connection from its own offset) when it is installed, else by
the bounded Python client below (raw asyncio sockets, a fixed number of requests, a time cap): on these
2 cores the Python client itself caps near 4,000 req/s and takes CPU from the server, where ``wrk``
drives a bare FastAPI constant at ~12,000 req/s (``--loadgen`` chooses). They measure:

* single categorize and single detect: p50 / p95 / p99 and requests/s at concurrency 1 and 32, and the
  80 % categorize / 20 % detect mix of distinct players at concurrency 32 (with the mean size of the
  micro-batches the service formed, and the mix again with micro-batching off, ``USEG_REQUEST_BATCH_MAX=1``,
  with batching on but no lingering for more calls, ``USEG_REQUEST_BATCH_LINGER_MS=0``, and with the
  production settings: API keys required and a per-key rate limit of 600,000 a minute);
* batch categorize of 10,000 players in one request (compact, not persisted): players/s;
* HTTP ingestion in batches of 1,000 events: events/s.

The batch and ingestion scenarios (one large request at a time) always use the Python client.

Baselines (same run, same client): a bare FastAPI POST endpoint returning a constant, the same with one
database fetch (asyncpg on PostgreSQL, sqlite3 on SQLite), and a bare endpoint parsing the same ingestion body.

    python benchmarks/bench_http.py                      # both backends, ~3-4 minutes
    python benchmarks/bench_http.py --backends sqlite --repeats 1 --players 5000
    python benchmarks/bench_http.py --only ingest --repeats 5   # HTTP ingestion only, ~1 minute
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

GAME = "bench_game"
PG_ADMIN = os.environ.get("USEG_TEST_POSTGRES_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TIME_CAP_S = 120.0  # no single measurement runs longer than this

BARE_APP = textwrap.dedent('''
    """Bare FastAPI baselines: constant answer, one database fetch, ingestion body parsing."""
    import os
    import sqlite3
    from contextlib import asynccontextmanager
    from typing import Any

    import orjson
    from fastapi import FastAPI
    from pydantic import BaseModel, ConfigDict
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response

    DSN = os.environ.get("BARE_DSN", "")
    CONST = orjson.dumps({"player_id": "p", "game_id": "g", "taxonomy_version": 1, "confidence": 0.9,
                          "axes": {"monetization": {"primary_segment": "whale"}}})


    class Small(BaseModel):
        model_config = ConfigDict(extra="forbid")
        player_id: str
        game_id: str


    class Events(BaseModel):
        model_config = ConfigDict(extra="forbid")
        game_id: str
        events: list[dict[str, Any]]


    @asynccontextmanager
    async def lifespan(app):
        app.state.pool = None
        if DSN.startswith("postgresql"):
            import asyncpg
            app.state.pool = await asyncpg.create_pool(DSN, min_size=4, max_size=4)
        yield
        if app.state.pool is not None:
            await app.state.pool.close()


    app = FastAPI(lifespan=lifespan)


    @app.post("/bare/const")
    async def const(body: Small) -> Response:
        return Response(CONST, media_type="application/json")


    def _sqlite_fetch(player_id):
        con = sqlite3.connect(DSN, check_same_thread=False)
        try:
            return con.execute("SELECT * FROM daily_activity WHERE game_id = ? AND player_id = ? LIMIT 1",
                               ("bench_game", player_id)).fetchone()
        finally:
            con.close()


    @app.post("/bare/fetch")
    async def fetch(body: Small) -> Response:
        if app.state.pool is not None:
            row = await app.state.pool.fetchrow(
                "SELECT * FROM daily_activity WHERE game_id = $1 AND player_id = $2 LIMIT 1", body.game_id,
                body.player_id)
            data = dict(row) if row else {}
        else:
            row = await run_in_threadpool(_sqlite_fetch, body.player_id)
            data = {"row": list(row) if row else None}
        return Response(orjson.dumps(data, default=str), media_type="application/json")


    @app.post("/bare/ingest")
    async def ingest(body: Events) -> Response:
        return Response(orjson.dumps({"game_id": body.game_id, "accepted": len(body.events)}),
                        media_type="application/json")
''')


def note(message: str) -> None:
    """Progress on stderr (the JSON report alone goes to stdout)."""
    print(f"[bench_http {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- load generator
def post(path: str, body: Any, api_key: str | None = None) -> bytes:
    data = orjson.dumps(body)
    key = f"X-API-Key: {api_key}\r\n" if api_key else ""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{key}"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def _client(port: int, requests: list[bytes], latencies: list[float], statuses: list[int],
                  deadline: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for req in requests:
            if time.perf_counter() > deadline:
                break
            t0 = time.perf_counter()
            writer.write(req)
            status, _ = await _read_response(reader)
            latencies.append(time.perf_counter() - t0)
            statuses.append(status)
    finally:
        writer.close()


def load(port: int, requests: list[bytes], concurrency: int, *, warmup: int = 20) -> dict[str, Any]:
    """Send ``requests`` over ``concurrency`` keep-alive connections (round robin); latency figures in ms."""

    async def main() -> tuple[list[float], list[int], float]:
        if warmup:
            await _client(port, requests[:warmup], [], [], time.perf_counter() + TIME_CAP_S)
        parts = [requests[i::concurrency] for i in range(concurrency)]
        latencies: list[float] = []
        statuses: list[int] = []
        deadline = time.perf_counter() + TIME_CAP_S
        t0 = time.perf_counter()
        await asyncio.gather(*(_client(port, p, latencies, statuses, deadline) for p in parts if p))
        return latencies, statuses, time.perf_counter() - t0

    latencies, statuses, wall = asyncio.run(main())
    lat_ms = sorted(x * 1000 for x in latencies)

    def q(p: float) -> float:
        return round(lat_ms[min(len(lat_ms) - 1, int(p * len(lat_ms)))], 3)

    return {"requests": len(lat_ms), "concurrency": concurrency, "errors": sum(1 for s in statuses if s != 200),
            "p50_ms": q(0.50), "p95_ms": q(0.95), "p99_ms": q(0.99), "mean_ms": round(statistics.fmean(lat_ms), 3),
            "req_per_s": round(len(lat_ms) / wall, 1)}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Field-wise median over repeated runs (the run count is kept)."""
    if len(runs) == 1:
        return runs[0]
    out = {k: (statistics.median(r[k] for r in runs) if isinstance(runs[0][k], int | float) else runs[0][k])
           for k in runs[0]}
    out["repeats"] = len(runs)
    return out


WRK_SCRIPT = textwrap.dedent("""
    -- Cycles through the calls of the file named by WRK_CALLS ("PATH<TAB>BODY" lines); each thread starts
    -- at its own offset; done() prints one JSON line.
    local calls, at, threads = {}, 0, 0
    function setup(thread)
      thread:set("offset", threads)
      threads = threads + 1
    end
    function init(args)
      local headers = {["Content-Type"] = "application/json"}
      if os.getenv("WRK_API_KEY") then headers["X-API-Key"] = os.getenv("WRK_API_KEY") end
      for line in io.lines(os.getenv("WRK_CALLS")) do
        local path, body = line:match("^([^\t]+)\t(.*)$")
        calls[#calls + 1] = wrk.format("POST", path, headers, body)
      end
      at = offset * 7919 % #calls
    end
    function request()
      at = at % #calls + 1
      return calls[at]
    end
    function done(summary, latency, requests)
      local e = summary.errors
      io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, ' ..
        '"p99_us": %d, "mean_us": %.1f, "status_errors": %d, "socket_errors": %d}\\n', summary.requests,
        summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean,
        e.status, e.connect + e.read + e.write + e.timeout))
    end
""")


def wrk_load(port: int, calls: list[tuple[str, Any]], concurrency: int, seconds: int,
             workdir: Path, api_key: str | None = None) -> dict[str, Any]:
    """``calls`` ((path, JSON body) pairs, cycled) from ``concurrency`` keep-alive connections for
    ``seconds``, by wrk (with ``X-API-Key: api_key`` if given); the same fields as :func:`load` (latency
    in ms)."""
    script = workdir / "calls.lua"
    if not script.exists():
        script.write_text(WRK_SCRIPT)
    calls_file = workdir / f"calls-{uuid.uuid4().hex[:8]}.tsv"
    calls_file.write_bytes(b"".join(path.encode() + b"\t" + orjson.dumps(body) + b"\n" for path, body in calls))
    try:
        out = subprocess.run(["wrk", "-t", "1", "-c", str(concurrency), "-d", f"{int(seconds)}s", "--timeout", "10s",
                              "-s", str(script), f"http://127.0.0.1:{port}"],
                             env={**os.environ, "WRK_CALLS": str(calls_file),
                                  **({"WRK_API_KEY": api_key} if api_key else {})}, capture_output=True, text=True,
                             timeout=seconds + 60, check=True).stdout
    finally:
        calls_file.unlink(missing_ok=True)
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    d = json.loads(line[len("WRKJSON "):])
    return {"requests": d["requests"], "concurrency": concurrency,
            "errors": d["status_errors"] + d["socket_errors"],
            "p50_ms": d["p50_us"] / 1000, "p95_ms": d["p95_us"] / 1000, "p99_ms": d["p99_us"] / 1000,
            "mean_ms": round(d["mean_us"] / 1000, 3),
            "req_per_s": round(d["requests"] / (d["duration_us"] / 1e6), 1)}


# ---------------------------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A uvicorn subprocess in its own process group, stopped by id at exit."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str], log: Path) -> None:
        self.port = port
        self.log = log
        with open(log, "ab") as sink:  # a file, not a pipe: a full pipe would block the server's logging
            self.proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self, path: str = "/health/live", timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                    if s.recv(64).startswith(b"HTTP/1.1 "):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of every process in the server's process group (uvicorn and workers)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid:  # pgrp: the session leader's pid
                total += int(fields[11]) + int(fields[12])
        return total / tick

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def service_server(url: str, workers: int, workdir: Path, **settings: str) -> Server:
    """``useg serve`` on ``url``; ``settings``: more ``USEG_*`` variables (``request_batch_max="1"``)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("USEG_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"USEG_DATABASE_URL": url, "USEG_PORT": str(port), "USEG_WORKERS": str(workers),
                "USEG_HOST": "127.0.0.1", "USEG_RATE_LIMIT_PER_MINUTE": "0"})
    env.update({f"USEG_{k.upper()}": v for k, v in settings.items()})
    code = "from unified_segmentation.api.server import run\nrun()\n"
    server = Server([sys.executable, "-c", code], port, env, workdir / f"service-{port}.log")
    server.wait_ready()
    return server


def bare_server(workdir: Path, dsn: str, workers: int) -> Server:
    (workdir / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    env = {**os.environ, "BARE_DSN": dsn}
    argv = [sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(workdir), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    server = Server(argv, port, env, workdir / f"bare-{port}.log")
    server.wait_ready("/docs")
    return server


def batch_sizes(port: int) -> dict[str, Any]:
    """Mean size of the micro-batches the service ran, per kind, from its ``/metrics`` (all workers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    sums: dict[str, dict[str, float]] = {}
    for line in raw.decode(errors="replace").splitlines():
        for part in ("_sum", "_count"):
            if line.startswith(f"useg_request_batch_size{part}{{"):
                kind = line.split('kind="', 1)[1].split('"', 1)[0]
                sums.setdefault(kind, {})[part] = float(line.rsplit(" ", 1)[1])
    return {kind: {"batches": int(v.get("_count", 0)), "mean_calls": round(v["_sum"] / v["_count"], 2)}
            for kind, v in sums.items() if v.get("_count")}


# ---------------------------------------------------------------------------------------------- data
def make_database(backend: str, workdir: Path) -> tuple[str, str, Any]:
    """(SQLAlchemy URL, DSN for the bare fetch baseline, cleanup)."""
    if backend == "sqlite":
        path = workdir / "bench.db"
        return f"sqlite:///{path}", str(path), lambda: None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"useg_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN).set(database=name)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return url.render_as_string(hide_password=False), dsn, drop


def seed(url: str, players: int) -> tuple[list[str], dict[str, float]]:
    from unified_segmentation.services.facade import Services
    from unified_segmentation.synth import generate_daily

    timings: dict[str, float] = {}
    game = generate_daily(n_players=players, seed=0)
    services = Services(url)
    try:
        services.upgrade()
        services.put_settings(GAME, {"default_as_of": game.as_of.isoformat()})
        t0 = time.perf_counter()
        services.ingest_daily(GAME, game.daily)
        timings["seed_ingest_daily_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        services.calibrate(GAME)
        timings["seed_calibrate_s"] = round(time.perf_counter() - t0, 2)
    finally:
        services.close()
    return game.truth["player_id"].to_list(), timings


def events_batches(n_batches: int, size: int, tag: str) -> list[list[dict[str, Any]]]:
    from datetime import UTC, datetime

    start = datetime(2026, 3, 1, tzinfo=UTC)
    batches = []
    for b in range(n_batches):
        rows = []
        for i in range(size):
            k = b * size + i
            ts = (start + timedelta(seconds=k)).isoformat()
            rows.append({"event_id": f"{tag}-{k}", "player_id": f"ingest_p{k % 500}", "event_type": "session",
                         "timestamp": ts, "value": 300 + k % 600})
        batches.append(rows)
    return batches


def in_process(url: str, players: list[str], n: int, batch_ids: list[str]) -> dict[str, Any]:
    """The same services calls without HTTP, in this process: what the HTTP layer adds is the difference."""
    from unified_segmentation.services.facade import Services

    services = Services(url)
    out: dict[str, Any] = {}
    try:
        for name, call in (("categorize", services.categorize), ("detect", services.detect)):
            for pid in players[:10]:  # warm the taxonomy cache and the connection pool
                call(GAME, pid)
            lat, cpu = [], []
            for i in range(n):
                t0, c0 = time.perf_counter(), time.thread_time()
                call(GAME, players[(100 + i) % len(players)])
                lat.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.thread_time() - c0) * 1000)
            lat.sort()
            out[name] = {"requests": n, "p50_ms": round(lat[n // 2], 3), "p95_ms": round(lat[int(0.95 * n)], 3),
                         "mean_ms": round(statistics.fmean(lat), 3), "cpu_ms_p50": round(statistics.median(cpu), 3)}
        t0 = time.perf_counter()
        services.categorize_batch(GAME, batch_ids, compact=True)
        out["batch_compact_players_per_s"] = round(len(batch_ids) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        services.categorize_batch(GAME, batch_ids, columnar=True)
        out["batch_columnar_players_per_s"] = round(len(batch_ids) / (time.perf_counter() - t0))
    finally:
        services.close()
    return out


def ingestion(svc_port: int, bare_port: int, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """HTTP ingestion, batches of 1,000 events, sequential (concurrency 1): ``--repeats`` runs of
    ``--ingest-batches`` fresh batches each (new event ids), the service and the bare parsing endpoint
    interleaved run by run; medians reported, with the ratio of their medians."""
    runs, bare_runs = [], []
    for r in range(args.repeats):
        batches = events_batches(args.ingest_batches, 1000, f"{backend}-{uuid.uuid4().hex[:6]}-{r}")
        runs.append(load(svc_port, [post("/api/v1/events", {"game_id": "ingest_game", "events": b})
                                    for b in batches], 1, warmup=0))
        bare_runs.append(load(bare_port, [post("/bare/ingest", {"game_id": "ingest_game", "events": b})
                                          for b in batches], 1, warmup=2))
    ingest, bare_ingest = median_of(runs), median_of(bare_runs)
    return {
        "batch_size": 1000, "batches": args.ingest_batches, "repeats": args.repeats,
        "errors": sum(r["errors"] for r in runs),
        "events_per_s": round(1000 * ingest["req_per_s"]), "p50_ms_per_batch": ingest["p50_ms"],
        "events_per_s_runs": [round(1000 * r["req_per_s"]) for r in runs],
        "bare_parse_events_per_s": round(1000 * bare_ingest["req_per_s"]),
        "vs_bare_parse": round(ingest["req_per_s"] / bare_ingest["req_per_s"], 3),
    }


# ---------------------------------------------------------------------------------------------- scenarios
def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    url, dsn, cleanup = make_database(backend, workdir)
    out: dict[str, Any] = {}
    servers: list[Server] = []
    try:
        if args.only == "ingest":
            from unified_segmentation.services.facade import Services

            services = Services(url)
            services.upgrade()
            services.close()
            svc = service_server(url, 1, workdir)
            servers.append(svc)
            bare = bare_server(workdir, dsn, 1)
            servers.append(bare)
            note(f"{backend}: ingestion")
            out["ingestion"] = ingestion(svc.port, bare.port, backend, args)
            return out
        note(f"{backend}: seeding {args.players} players")
        players, timings = seed(url, args.players)
        note(f"{backend}: seeded {timings}")
        out["seed"] = {"players": len(players), **timings}
        n1, n32 = args.requests_c1, args.requests_c32

        use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk") is not None)
        out["load_generator"] = (f"wrk, 1 thread, {args.seconds} s per run" if use_wrk
                                 else "Python asyncio client (bench_http.load)")

        def singles(path: str, n: int, offset: int = 0) -> list[tuple[str, Any]]:
            """``n`` calls of ``path`` for distinct players (with wrk: every player, from ``offset``)."""
            n = len(players) if use_wrk else n
            return [(path, {"player_id": players[(offset + i) % len(players)], "game_id": GAME}) for i in range(n)]

        cat, det = "/api/v1/segmentation/categorize", "/api/v1/segmentation/anomalies/detect"
        mix = [(det if i % 5 == 4 else cat, {"player_id": players[i % len(players)], "game_id": GAME})
               for i in range(len(players) if use_wrk else n32)]

        def measure(server: Server, calls: list[tuple[str, Any]], c: int, api_key: str | None = None
                    ) -> dict[str, Any]:
            """Median of the repeats, plus the server's CPU per request: a figure the shared machine's
            other load inflates much less than wall-clock latency."""
            runs, cpu = [], []
            if use_wrk:
                wrk_load(server.port, calls, c, 1, workdir, api_key)  # warm-up
            else:
                reqs = [post(path, body, api_key) for path, body in calls]
            for _ in range(args.repeats):
                c0 = server.cpu_seconds()
                run = (wrk_load(server.port, calls, c, args.seconds, workdir, api_key) if use_wrk
                       else load(server.port, reqs, c))
                runs.append(run)
                cpu.append((server.cpu_seconds() - c0) * 1000 / max(1, run["requests"]))
            return median_of(runs) | {"server_cpu_ms_per_request": round(statistics.median(cpu), 3),
                                      "req_per_s_runs": [r["req_per_s"] for r in runs]}

        batch_ids = players[: min(10_000, len(players))]
        note(f"{backend}: services in-process (no HTTP)")
        out["in_process_services"] = in_process(url, players, min(n1, 200), batch_ids)
        note(f"{backend}: concurrency 1")
        svc = service_server(url, 1, workdir)
        servers.append(svc)
        bare = bare_server(workdir, dsn, 1)
        servers.append(bare)
        out["c1"] = {
            "categorize": measure(svc, singles(cat, n1), 1),
            "detect": measure(svc, singles(det, n1, 1000), 1),
            "bare_constant": measure(bare, singles("/bare/const", n1), 1),
            "bare_db_fetch": measure(bare, singles("/bare/fetch", n1), 1),
        }
        note(f"{backend}: batch categorize")
        # batch categorize, 10,000 players (or all there are), compact, not persisted
        body = post("/api/v1/segmentation/categorize/batch", {"game_id": GAME, "player_ids": batch_ids,
                                                              "compact": True})
        runs = [load(svc.port, [body], 1, warmup=0) for _ in range(max(3, args.repeats))]
        seconds = statistics.median(r["mean_ms"] for r in runs) / 1000
        columnar_body = post("/api/v1/segmentation/categorize/batch", {"game_id": GAME, "player_ids": batch_ids,
                                                                       "columnar": True})
        columnar_runs = [load(svc.port, [columnar_body], 1, warmup=0) for _ in range(max(3, args.repeats))]
        columnar_s = statistics.median(r["mean_ms"] for r in columnar_runs) / 1000
        full = load(svc.port, [post("/api/v1/segmentation/categorize/batch",
                                    {"game_id": GAME, "player_ids": batch_ids})], 1, warmup=0)
        one_by_one = [post(cat, {"player_id": players[(3000 + i) % len(players)], "game_id": GAME})
                      for i in range(min(n1, 200))]
        singles_for_batch = load(svc.port, one_by_one, 1, warmup=0)
        out["batch_categorize"] = {
            "players": len(batch_ids), "compact_seconds": round(seconds, 3),
            "compact_players_per_s": round(len(batch_ids) / seconds),
            "columnar_players_per_s": round(len(batch_ids) / columnar_s),
            "columnar_players_per_s_runs": [round(len(batch_ids) / (r["mean_ms"] / 1000)) for r in columnar_runs],
            "full_players_per_s": round(len(batch_ids) / (full["mean_ms"] / 1000)),
            "baseline_single_calls_players_per_s": singles_for_batch["req_per_s"],
            "errors": sum(r["errors"] for r in runs + columnar_runs) + full["errors"],
        }
        if args.only != "scoring":
            note(f"{backend}: ingestion")
            out["ingestion"] = ingestion(svc.port, bare.port, backend, args)
        for s in (svc, bare):
            s.stop()
        servers.clear()

        note(f"{backend}: concurrency 32, 2 workers")
        svc = service_server(url, 2, workdir)
        servers.append(svc)
        bare = bare_server(workdir, dsn, 2)
        servers.append(bare)
        out["c32_2workers"] = {
            "categorize": measure(svc, singles(cat, n32, 5000), 32),
            "detect": measure(svc, singles(det, n32, 7000), 32),
            "mix_80_categorize_20_detect": measure(svc, mix, 32),
            "bare_constant": measure(bare, singles("/bare/const", n32), 32),
            "bare_db_fetch": measure(bare, singles("/bare/fetch", n32), 32),
        }
        out["c32_2workers"]["request_batch_sizes"] = batch_sizes(svc.port)
        svc.stop()
        # the same service with micro-batching off (USEG_REQUEST_BATCH_MAX=1): what batching brings
        svc = service_server(url, 2, workdir, request_batch_max="1")
        servers.append(svc)
        out["c32_2workers"]["mix_unbatched"] = measure(svc, mix, 32)
        svc.stop()
        # batching on, but no lingering for more calls (USEG_REQUEST_BATCH_LINGER_MS=0): what lingering brings
        svc = service_server(url, 2, workdir, request_batch_linger_ms="0")
        servers.append(svc)
        out["c32_2workers"]["mix_no_linger"] = measure(svc, mix, 32)
        svc.stop()
        # production settings: API keys required, a per-key rate limit on (leased; see api/auth.py)
        from unified_segmentation.services.facade import Services

        services = Services(url)
        key, _ = services.create_api_key("read", name="bench")
        services.close()
        svc = service_server(url, 2, workdir, auth="required", rate_limit_per_minute="600000")
        servers.append(svc)
        out["c32_2workers"]["mix_keys_required_rate_limited"] = measure(svc, mix, 32, api_key=key)
    finally:
        for s in servers:
            s.stop()
        cleanup()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--players", type=int, default=10_000)
    parser.add_argument("--requests-c1", type=int, default=200)
    parser.add_argument("--requests-c32", type=int, default=600)
    parser.add_argument("--ingest-batches", type=int, default=20)
    parser.add_argument("--only", choices=["all", "ingest", "scoring"], default="all",
                        help="'ingest': only the HTTP ingestion scenario (no seeding, no categorize/detect); "
                             "'scoring': everything but ingestion")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is reported")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto",
                        help="single-call scenarios: wrk when installed (auto), or the Python client")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    report: dict[str, Any] = {
        "benchmark": "http",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets": {"postgresql_c1": "categorize/detect p50 <= 2 ms, p95 <= bare_db_fetch p95 + 3 ms",
                    "c32_2workers": "mix >= 2,000 req/s, p99 <= 50 ms",
                    "batch_categorize": ">= 20,000 players/s (compact, not persisted)",
                    "ingestion": ">= 30,000 events/s in batches of 1,000"},
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="useg-bench-http-") as tmp:
        for backend in args.backends:
            t0 = time.perf_counter()
            try:
                report["backends"][backend] = run_backend(backend, args, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - one backend failing must not hide the other's figures
                report["backends"][backend] = {"error": f"{type(exc).__name__}: {exc}"}
            report["backends"][backend]["wall_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
