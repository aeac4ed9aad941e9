"""Per-request cost of the per-key rate limit, SQLite file and PostgreSQL.

The baseline, measured in the same run, is the first implementation: one unit of work per request
that purged old windows and upserted the counter (SQLite: write lock first, ``synchronous=FULL`` commit).
Prints one JSON document: median / p95 / mean microseconds per call of the baseline and of the counter's
one statement (``Services.rate_limit_hit``), and per HTTP request (``GET /api/v1/games/{g}/settings``
with a read key through ``TestClient``, in process): the limit off, the baseline, one statement per
request (the previous implementation) and the current one (a lease of 1 % of the limit per statement,
counted in memory: ``api.auth.Authenticator.enforce_rate_limit``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid

from sqlalchemy import create_engine, text

from unified_segmentation.services.facade import Services


def _old_hit(services: Services, key_id: int, limit: int) -> bool:
    window = int(time.time() // 60)
    with services._uow() as session:  # noqa: SLF001 - the baseline is the old code path, on purpose
        session.execute(text("DELETE FROM rate_limit_counters WHERE window_start < :w"), {"w": window - 2})
        n = session.execute(text(
            "INSERT INTO rate_limit_counters (key_id, window_start, hits, updated_at) VALUES (:k, :w, 1, :t) "
            "ON CONFLICT (key_id, window_start) DO UPDATE SET hits = rate_limit_counters.hits + 1, "
            "updated_at = :t RETURNING hits"), {"k": key_id, "w": window, "t": time.strftime("%Y-%m-%d %H:%M:%S")}
        ).scalar_one()
    return n > limit


def _time(fn, calls: int) -> dict:
    for _ in range(20):
        fn()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    return {"median_us": round(statistics.median(samples), 1), "p95_us": round(samples[int(0.95 * len(samples))], 1),
            "mean_us": round(statistics.fmean(samples), 1), "calls": calls}


def _http(services: Services, url: str, calls: int) -> dict:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from unified_segmentation.api.app import create_app
    from unified_segmentation.config import Settings

    key, _ = services.create_api_key("read")
    services.put_settings("bench", {"timezone": "UTC"})
    out = {}
    from unified_segmentation.api import auth

    def old_take(key_id: int, limit: int, wanted: int) -> tuple[int, int]:
        return int(time.time() // 60), 0 if _old_hit(services, key_id, limit) else 1

    variants = (("limit_off", 0, None, auth.lease_size), ("baseline_previous", 10**9, old_take, lambda limit: 1),
                ("one_statement_per_request", 10**9, None, lambda limit: 1),
                ("current_leased", 10**9, None, auth.lease_size))
    real_lease = auth.lease_size
    for name, limit, take, lease in variants:
        settings = Settings.model_construct(database_url=url, log_json=False, log_level="WARNING", port=8000,
                                            auth="required", rate_limit_per_minute=limit, gc_freeze=False)
        if take is not None:
            services.rate_limit_take = take  # type: ignore[method-assign]
        auth.lease_size = lease
        try:
            with TestClient(create_app(settings, services=services)) as client:
                out[name] = _time(lambda c=client: c.get("/api/v1/games/bench/settings", headers={"X-API-Key": key}),
                                  calls)
        finally:
            auth.lease_size = real_lease
            if take is not None:
                del services.rate_limit_take
    return out


def _measure(url: str, calls: int) -> dict:
    services = Services(url)
    services.upgrade()
    try:
        return {"baseline_previous": _time(lambda: _old_hit(services, 1, 10**9), calls),
                "current": _time(lambda: services.rate_limit_hit(2, 10**9), calls),
                "http_request": _http(services, url, max(200, calls // 4))}
    finally:
        services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--postgres-admin-url", default=os.environ.get("USEG_TEST_POSTGRES_URL",
                                                                       "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        out["sqlite_file"] = _measure(f"sqlite:///{tmp}/useg.db", args.calls)
    if not args.no_postgres:
        name = f"useg_bench_rl_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.postgres_admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = admin.url.set(database=name).render_as_string(hide_password=False)
            out["postgresql"] = _measure(url, args.calls)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
