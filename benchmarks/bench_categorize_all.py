"""``useg categorize G --all`` persisted (TARGETS.md "Speed and memory"), beside a plain COPY of the same rows.

For each backend (PostgreSQL: a throwaway database created on 127.0.0.1:5432 and dropped afterwards;
SQLite: a file in a temporary directory) a planted game is seeded (``synth.generate_daily``, 100,000
players by default, ``Services.ingest_daily``, ``Services.calibrate``). Then, ``--repeat`` times,
interleaved:

* **ours, fresh**: the membership and typical-offset tables are emptied (untimed), then
  ``Services.categorize_all(G)`` — the call ``useg categorize G --all`` makes — is timed end to end:
  loading the daily rows, windows and features, scoring, building the membership and typical-offset rows,
  and writing them in one unit of work (committed);
* **ours, replace**: the same call again on top of the rows just written (each player's rows of the
  version are replaced);
* **baseline**: a plain bulk load of the *exact same rows* (read back from our tables once, untimed) into
  plain copies of the two tables with the same primary keys (``CREATE TABLE ... (LIKE ... INCLUDING
  ALL)``), emptied before each run. PostgreSQL: ``COPY ... FROM STDIN (FORMAT binary)`` of the rows already
  encoded in memory (what the server must do at least; no client encoding is timed) and, as a second
  figure, psycopg's binary ``COPY`` fed Python tuples row by row (``write_row``). SQLite: one
  ``executemany`` of the rows as Python tuples in one transaction.

Figures: players/s and rows/s of each, medians over repeats, and ``ratio`` = baseline seconds / ours
seconds (target ≥ 0.6 against the in-memory binary COPY, and ≥ 5,000 players/s, on PostgreSQL).
``breakdown`` reports the phases ``categorize_all`` returns.

    python benchmarks/bench_categorize_all.py                 # both backends, 100k players, 5 repeats
    python benchmarks/bench_categorize_all.py --backends postgresql --players 20000 --repeat 3

PostgreSQL is ``ANALYZE``d after seeding (statistics as autovacuum would leave them; autovacuum is off on
the shared test server, so the "replace" runs also meet the dead rows of the run before, unvacuumed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

GAME = "bench_game"
PG_ADMIN = os.environ.get("USEG_TEST_POSTGRES_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TABLES = ("player_segment_memberships", "player_typical_offsets")
_CHUNK = 1 << 20


def make_database(backend: str, workdir: Path, admin_url: str) -> tuple[str, Any]:
    """(SQLAlchemy URL, cleanup)."""
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'bench.db'}", lambda: None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"useg_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.render_as_string(hide_password=False), drop


def seed(url: str, players: int) -> dict[str, float]:
    from unified_segmentation.services.facade import Services
    from unified_segmentation.synth import generate_daily

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    game = generate_daily(n_players=players, seed=0)
    timings["generate_s"] = round(time.perf_counter() - t0, 2)
    timings["daily_rows"] = game.daily.height
    services = Services(url)
    try:
        services.upgrade()
        services.put_settings(GAME, {"default_as_of": game.as_of.isoformat()})
        t0 = time.perf_counter()
        services.ingest_daily(GAME, game.daily)
        timings["ingest_daily_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        services.calibrate(GAME)
        timings["calibrate_s"] = round(time.perf_counter() - t0, 2)
        if url.startswith("postgresql"):
            # Planner statistics as autovacuum would leave them (it is off on the shared test server).
            from sqlalchemy import text

            with services.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
    finally:
        services.close()
    return timings


# --------------------------------------------------------------------------------------------------
# PostgreSQL baseline
# --------------------------------------------------------------------------------------------------


def _pg_connect(url: str) -> Any:
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(dsn)


class PgBaseline:
    def __init__(self, url: str, version: int) -> None:
        self.conn = _pg_connect(url)
        self.data: dict[str, bytes] = {}
        self.rows: dict[str, list[tuple]] = {}
        self.columns: dict[str, list[str]] = {}
        with self.conn.cursor() as cur:
            for t in TABLES:
                cur.execute(f"CREATE TABLE bl_{t} (LIKE {t} INCLUDING ALL)")
                cur.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                    "ORDER BY ordinal_position",
                    (t,),
                )
                self.columns[t] = [r[0] for r in cur.fetchall()]
                query = f"SELECT * FROM {t} WHERE game_id = %s AND taxonomy_version = %s"
                buf = bytearray()
                with cur.copy(f"COPY ({query}) TO STDOUT (FORMAT binary)", (GAME, version)) as copy:
                    for chunk in copy:
                        buf += chunk
                self.data[t] = bytes(buf)
                cur.execute(query, (GAME, version))
                self.rows[t] = cur.fetchall()
        self.conn.commit()

    @property
    def n_rows(self) -> int:
        return sum(len(r) for r in self.rows.values())

    def _truncate(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"TRUNCATE {', '.join('bl_' + t for t in TABLES)}")
        self.conn.commit()

    def copy_binary(self) -> float:
        self._truncate()
        t0 = time.perf_counter()
        with self.conn.cursor() as cur:
            for t in TABLES:
                data = memoryview(self.data[t])
                with cur.copy(f"COPY bl_{t} FROM STDIN (FORMAT binary)") as copy:
                    for start in range(0, len(data), _CHUNK):
                        copy.write(data[start : start + _CHUNK])
        self.conn.commit()
        return time.perf_counter() - t0

    def copy_rows(self) -> float:
        from psycopg.types.json import Jsonb

        self._truncate()
        with self.conn.cursor() as cur:
            types = {}
            for t in TABLES:
                cur.execute(f"SELECT * FROM {t} LIMIT 0")
                types[t] = [d.type_code for d in cur.description]
        # the rows as a client holds them: JSON columns as Python objects
        rows = {
            t: [tuple(Jsonb(v) if isinstance(v, dict) else v for v in r) for r in self.rows[t]] for t in TABLES
        }
        t0 = time.perf_counter()
        with self.conn.cursor() as cur:
            for t in TABLES:
                with cur.copy(f"COPY bl_{t} FROM STDIN (FORMAT binary)") as copy:
                    copy.set_types(types[t])
                    for r in rows[t]:
                        copy.write_row(r)
        self.conn.commit()
        return time.perf_counter() - t0

    def close(self) -> None:
        with self.conn.cursor() as cur:
            for t in TABLES:
                cur.execute(f"DROP TABLE IF EXISTS bl_{t}")
        self.conn.commit()
        self.conn.close()


# --------------------------------------------------------------------------------------------------
# SQLite baseline
# --------------------------------------------------------------------------------------------------


class SqliteBaseline:
    def __init__(self, url: str, version: int) -> None:
        import sqlite3

        self.conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        self.rows: dict[str, list[tuple]] = {}
        for t in TABLES:
            (ddl,) = self.conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (t,)).fetchone()
            self.conn.execute(ddl.replace(f"CREATE TABLE {t}", f"CREATE TABLE bl_{t}", 1))
            self.rows[t] = self.conn.execute(
                f"SELECT * FROM {t} WHERE game_id = ? AND taxonomy_version = ?", (GAME, version)
            ).fetchall()
        self.conn.commit()

    @property
    def n_rows(self) -> int:
        return sum(len(r) for r in self.rows.values())

    def executemany(self) -> float:
        for t in TABLES:
            self.conn.execute(f"DELETE FROM bl_{t}")
        self.conn.commit()
        t0 = time.perf_counter()
        for t in TABLES:
            marks = ", ".join("?" for _ in self.rows[t][0])
            self.conn.executemany(f"INSERT INTO bl_{t} VALUES ({marks})", self.rows[t])
        self.conn.commit()
        return time.perf_counter() - t0

    def close(self) -> None:
        for t in TABLES:
            self.conn.execute(f"DROP TABLE IF EXISTS bl_{t}")
        self.conn.commit()
        self.conn.close()


# --------------------------------------------------------------------------------------------------


def _empty_ours(services: Any, backend: str) -> None:
    from sqlalchemy import text

    with services.engine.begin() as conn:
        if backend == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(TABLES)}"))
        else:
            for t in TABLES:
                conn.execute(text(f"DELETE FROM {t}"))
    if backend == "postgresql":
        with services.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"VACUUM ANALYZE {', '.join(TABLES)}"))


def _count_rows(services: Any, version: int) -> dict[str, int]:
    from sqlalchemy import text

    with services.engine.connect() as conn:
        return {
            t: conn.execute(
                text(f"SELECT count(*) FROM {t} WHERE game_id = :g AND taxonomy_version = :v"),
                {"g": GAME, "v": version},
            ).scalar_one()
            for t in TABLES
        }


def _rate(n: float, seconds: float) -> float:
    return round(n / seconds, 1) if seconds else 0.0


def _med(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def run_backend(backend: str, players: int, repeat: int, admin_url: str, python_rows: bool) -> dict[str, Any]:
    from unified_segmentation.services.facade import Services

    with tempfile.TemporaryDirectory() as tmp:
        url, drop = make_database(backend, Path(tmp), admin_url)
        try:
            out: dict[str, Any] = {"seed": seed(url, players)}
            services = Services(url)
            baseline = None
            try:
                fresh: list[float] = []
                replace: list[float] = []
                base: list[float] = []
                base_rows: list[float] = []
                breakdown: list[dict] = []
                summary: dict[str, Any] = {}
                for _ in range(repeat):
                    _empty_ours(services, backend)
                    summary = services.categorize_all(GAME)
                    fresh.append(summary["seconds"])
                    breakdown.append(summary.get("timings", {}))
                    summary = services.categorize_all(GAME)
                    replace.append(summary["seconds"])
                    if baseline is None:
                        version = summary["taxonomy_version"]
                        counts = _count_rows(services, version)
                        baseline = (
                            PgBaseline(url, version) if backend == "postgresql" else SqliteBaseline(url, version)
                        )
                        assert baseline.n_rows == summary["rows_written"] == sum(counts.values()), (
                            baseline.n_rows,
                            summary["rows_written"],
                            counts,
                        )
                    if backend == "postgresql":
                        base.append(baseline.copy_binary())
                        if python_rows:
                            base_rows.append(baseline.copy_rows())
                    else:
                        base.append(baseline.executemany())
                n_players = summary["players"]
                n_rows = summary["rows_written"]
                ours_s, replace_s, base_s = _med(fresh), _med(replace), _med(base)
                out.update(
                    {
                        "called": "Services.categorize_all (what `useg categorize G --all` runs)",
                        "players": n_players,
                        "rows": n_rows,
                        "rows_by_table": counts,
                        "ours_fresh": {
                            "seconds": ours_s,
                            "players_per_s": _rate(n_players, ours_s),
                            "rows_per_s": _rate(n_rows, ours_s),
                            "runs_s": [round(x, 3) for x in fresh],
                        },
                        "ours_replace": {
                            "seconds": replace_s,
                            "players_per_s": _rate(n_players, replace_s),
                            "rows_per_s": _rate(n_rows, replace_s),
                            "runs_s": [round(x, 3) for x in replace],
                        },
                        "baseline": {
                            "what": (
                                "COPY FROM STDIN (FORMAT binary) of the same rows pre-encoded in memory"
                                if backend == "postgresql"
                                else "executemany of the same rows (Python tuples), one transaction"
                            ),
                            "seconds": base_s,
                            "players_per_s": _rate(n_players, base_s),
                            "rows_per_s": _rate(n_rows, base_s),
                            "runs_s": [round(x, 3) for x in base],
                        },
                        "ratio_fresh": round(base_s / ours_s, 3),
                        "ratio_replace": round(base_s / replace_s, 3),
                        "breakdown_s": {
                            k: _med([b[k] for b in breakdown if k in b]) for k in (breakdown[0] if breakdown else {})
                        },
                    }
                )
                if base_rows:
                    rs = _med(base_rows)
                    out["baseline_python_rows"] = {
                        "what": "psycopg binary COPY fed Python tuples with write_row",
                        "seconds": rs,
                        "players_per_s": _rate(n_players, rs),
                        "rows_per_s": _rate(n_rows, rs),
                        "runs_s": [round(x, 3) for x in base_rows],
                    }
                    out["ratio_fresh_vs_python_rows"] = round(rs / ours_s, 3)
            finally:
                if baseline is not None:
                    baseline.close()
                services.close()
        finally:
            drop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["postgresql", "sqlite"], choices=["postgresql", "sqlite"])
    parser.add_argument("--postgres-admin-url", default=PG_ADMIN)
    parser.add_argument("--no-python-rows", action="store_true", help="skip the write_row COPY baseline")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "categorize --all, persisted",
        "players": args.players,
        "repeat": args.repeat,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "load_average_start": os.getloadavg(),
    }
    for backend in args.backends:
        result[backend] = run_backend(backend, args.players, args.repeat, args.postgres_admin_url,
                                      not args.no_python_rows)
    result["load_average_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
