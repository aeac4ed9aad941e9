"""The service's plumbing without a database: error envelope, body limit, request ids, access log, auth,
rate limits, metrics, CORS, calibration jobs and the time parser."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import pytest
from fastapi import Body, FastAPI
from pydantic import TypeAdapter, ValidationError

from unified_segmentation import errors as domain
from unified_segmentation.api.auth import AdminKey, ReadKey
from unified_segmentation.api.errors import field_path
from unified_segmentation.api.jobs import CalibrationJobs
from unified_segmentation.api.logs import auth_banner, masked_url
from unified_segmentation.api.responses import render
from unified_segmentation.api.schemas import Timestamp
from unified_segmentation.api.server import settings_environment
from unified_segmentation.config import Settings


def _boom_app_routes(app: FastAPI) -> None:
    def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    app.add_api_route("/_test/boom", boom, methods=["GET"])
    for cls in (domain.GameNotFound, domain.PlayerNotFound, domain.NoTaxonomy, domain.InvalidInput,
                domain.PayloadTooLarge, domain.TimezoneLocked, domain.Forbidden):
        def raiser(cls: type[domain.UsegError] = cls) -> None:
            raise cls(f"{cls.__name__} happened", field="x")

        app.add_api_route(f"/_test/{cls.code}", raiser, methods=["GET"])


# ---------------------------------------------------------------------------------------------- errors
def test_unknown_route_and_method_answer_json(make_client, fake_services):
    client = make_client(services=fake_services)
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "detail": "no route /api/v1/nothing-here"}
    r = client.delete("/health")
    assert r.status_code == 405
    assert r.json()["error"] == "method_not_allowed"


def test_domain_errors_map_to_their_status_in_one_envelope(make_client, fake_services):
    client = make_client(services=fake_services)
    _boom_app_routes(client.app)
    for cls in (domain.GameNotFound, domain.PlayerNotFound, domain.NoTaxonomy, domain.InvalidInput,
                domain.PayloadTooLarge, domain.TimezoneLocked, domain.Forbidden):
        r = client.get(f"/_test/{cls.code}")
        assert r.status_code == cls.status, cls
        body = r.json()
        assert body["error"] == cls.code and body["detail"] == f"{cls.__name__} happened"
        assert body["field"] == "x"


def test_unhandled_exception_is_a_500_with_request_id_and_no_trace(make_client, fake_services, caplog):
    client = make_client(services=fake_services)
    _boom_app_routes(client.app)
    with caplog.at_level(logging.ERROR):
        r = client.get("/_test/boom", headers={"X-Request-ID": "req-123"})
    assert r.status_code == 500
    assert r.json() == {"error": "internal_error", "detail": "internal error; request id req-123"}
    assert "hunter2" not in r.text and "Traceback" not in r.text
    assert r.headers["x-request-id"] == "req-123"


def test_malformed_json_and_validation_errors_name_the_problem(make_client, fake_services):
    client = make_client(services=fake_services)
    url = "/api/v1/segmentation/categorize"
    r = client.post(url, content=b'{"player_id": "p", ', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "malformed_json"
    r = client.post(url, json={"player_id": "p", "game_id": "g", "as_of": "yesterday-ish"})
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_input" and r.json()["detail"].startswith("as_of:")
    r = client.post(url, json={"player_id": "p", "game_id": "g", "unexpected": 1})
    assert r.status_code == 422 and r.json()["detail"].startswith("unexpected: Extra inputs")
    r = client.post(url, content=b'{"player_id": "p", "game_id": "g"}')  # no Content-Type
    assert r.status_code == 422 and "Content-Type" in r.json()["detail"]
    r = client.post(url, json={"player_id": 5, "game_id": ["g"]})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"player_id", "game_id"}


def test_field_path_rendering():
    assert field_path(("body", "events", 3, "value")) == "events[3].value"
    assert field_path(("query", "limit")) == "limit"
    assert field_path(("header", "idempotency-key")) == "header idempotency-key"
    assert field_path(("body",)) == "body"


# ---------------------------------------------------------------------------------------------- body limit
def test_body_limit_by_content_length_and_while_streaming(settings_for, make_client, fake_services):
    client = make_client(settings_for(max_body_bytes=1000), services=fake_services)
    url = "/api/v1/segmentation/categorize"
    big = b'{"player_id": "' + b"x" * 2000 + b'", "game_id": "g"}'
    r = client.post(url, content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

    def chunks():  # no Content-Length: counted as it streams
        yield b'{"player_id": "'
        for _ in range(20):
            yield b"y" * 100
        yield b'", "game_id": "g"}'

    r = client.post(url, content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    assert "USEG_MAX_BODY_BYTES" in r.json()["detail"]
    r = client.post(url, content=b"{}", headers={"Content-Type": "application/json", "Content-Length": "abc"})
    assert r.status_code == 400


# ---------------------------------------------------------------------------------------------- request id, logs
def test_request_id_is_echoed_or_generated(make_client, fake_services):
    client = make_client(services=fake_services)
    assert client.get("/health", headers={"X-Request-ID": "abc-1"}).headers["x-request-id"] == "abc-1"
    generated = client.get("/health", headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert generated != "bad id with spaces" and len(generated) == 32


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_access_log_has_request_id_route_template_status_duration_and_no_key(settings_for, make_client, fake_services):
    client = make_client(settings_for(auth="required"), services=fake_services)
    handler = _Records()
    logger = logging.getLogger("unified_segmentation.access")
    logger.addHandler(handler)
    try:
        r = client.get("/api/v1/games/g9/settings", headers={"Authorization": "Bearer k-read",
                                                             "X-Request-ID": "log-1"})
    finally:
        logger.removeHandler(handler)
    assert r.status_code == 200
    (rec,) = [x for x in handler.records if getattr(x, "request_id", None) == "log-1"]
    assert rec.method == "GET" and rec.route == "/api/v1/games/{game_id}/settings" and rec.status == 200
    assert rec.duration_ms >= 0
    from unified_segmentation.api.logs import JsonFormatter

    line = JsonFormatter().format(rec)
    assert '"route":"/api/v1/games/{game_id}/settings"' in line and "k-read" not in line and "g9" not in line


def test_startup_banner_masks_password_and_says_whether_auth_is_open(settings_for):
    assert masked_url("postgresql+psycopg://u:s3cret@db:5432/useg") == "postgresql+psycopg://u:***@db:5432/useg"
    assert "OPEN" in auth_banner(settings_for(host="127.0.0.1"))
    assert "required" in auth_banner(settings_for(host="0.0.0.0"))


def test_bootstrap_admin_key_is_stored_at_startup_and_works(settings_for, make_client, fake_services):
    fake_services.keys.clear()
    client = make_client(settings_for(auth="required", bootstrap_admin_key="boot-key"), services=fake_services)
    assert fake_services.ensured == [("boot-key", "admin")]
    assert client.get("/api/v1/games/g/settings", headers={"X-API-Key": "boot-key"}).status_code == 200


# ---------------------------------------------------------------------------------------------- auth
def test_open_on_loopback_by_default(settings_for, make_client, fake_services):
    client = make_client(settings_for(host="127.0.0.1"), services=fake_services)
    assert client.get("/api/v1/games/g/settings").status_code == 200


@pytest.mark.parametrize("settings", [{"host": "0.0.0.0"}, {"auth": "required"}, {"host": "0.0.0.0", "auth": "off"}])
def test_keys_required_beyond_loopback_or_when_asked(settings_for, make_client, fake_services, settings):
    client = make_client(settings_for(**settings), services=fake_services)
    r = client.get("/api/v1/games/g/settings")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/games/g/settings", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/v1/games/g/settings", headers={"Authorization": "Bearer k-read"}).status_code == 200
    assert client.get("/api/v1/games/g/settings", headers={"X-API-Key": "k-read"}).status_code == 200
    for path in ("/health", "/health/live", "/health/ready", "/docs", "/openapi.json", "/metrics"):
        assert client.get(path).status_code == 200, path


def test_scopes_are_ranked_and_games_restricted(settings_for, make_client, fake_services):
    client = make_client(settings_for(auth="required"), services=fake_services)
    events = {"game_id": "g", "events": []}
    r = client.post("/api/v1/events", json=events, headers={"X-API-Key": "k-read"})
    assert r.status_code == 403 and r.json()["error"] == "forbidden" and "'write'" in r.json()["detail"]
    settings_change = {"timezone": "UTC"}
    r = client.put("/api/v1/games/g/settings", json=settings_change, headers={"X-API-Key": "k-write"})
    assert r.status_code == 403
    r = client.get("/api/v1/games/g/settings", headers={"X-API-Key": "k-write"})  # write includes read
    assert r.status_code == 200
    r = client.get("/api/v1/games/g/settings", headers={"X-API-Key": "k-other-game"})
    assert r.status_code == 403 and "game 'g'" in r.json()["detail"]
    r = client.get("/api/v1/segmentation/anomalies?game_id=g", headers={"X-API-Key": "k-other-game"})
    assert r.status_code == 403
    r = client.post("/api/v1/segmentation/categorize", json={"player_id": "p", "game_id": "g"},
                    headers={"X-API-Key": "k-other-game"})
    assert r.status_code == 403


def test_rate_limit_answers_429_with_retry_after(settings_for, make_client, fake_services):
    fake_services.rate_limited_after = 3
    client = make_client(settings_for(auth="required", rate_limit_per_minute=3), services=fake_services)
    codes = [client.get("/api/v1/games/g/settings", headers={"X-API-Key": "k-read"}).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    r = client.get("/api/v1/games/g/settings", headers={"X-API-Key": "k-read"})
    assert r.json()["error"] == "rate_limited" and 1 <= int(r.headers["retry-after"]) <= 60
    assert client.get("/api/v1/games/g/settings", headers={"X-API-Key": "k-admin"}).status_code == 200


def test_metrics_token(settings_for, make_client, fake_services):
    client = make_client(settings_for(metrics_token="tok"), services=fake_services)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer tok"}).status_code == 200


# ---------------------------------------------------------------------------------------------- health, metrics
def test_health_and_readiness(make_client, fake_services):
    client = make_client(services=fake_services)
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/health/live").json() == {"status": "ok"}
    assert client.get("/health/ready").status_code == 200
    fake_services.at_head = False
    r = client.get("/health/ready")
    assert r.status_code == 503 and "not at head" in r.json()["checks"]["migrations"]
    fake_services.healthy = False
    r = client.get("/health/ready")
    assert r.status_code == 503 and r.json()["checks"]["database"].startswith("unreachable")


def test_metrics_exposition(make_client, fake_services):
    client = make_client(services=fake_services)
    client.get("/health")
    client.get("/api/v1/games/g/settings")
    text = client.get("/metrics").text
    assert 'useg_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/health",status="200"}' in text
    assert 'route="/api/v1/games/{game_id}/settings"' in text
    assert 'useg_variance_explained{game_id="g1"} 0.81' in text
    assert 'useg_average_confidence{game_id="g1"} 0.77' in text
    assert 'useg_calibration_confidence_mean{game_id="g1"} 0.83' in text
    assert 'useg_service_counter{name="events_ingested"} 2.0' in text
    assert 'useg_adapter_router{name="served_by_unified"} 5.0' in text
    assert 'useg_adapter_router{name="shadow_mismatches"} 1.0' in text
    assert "# TYPE useg_categorizations_total counter" in text


# ---------------------------------------------------------------------------------------------- CORS
def test_cors_preflight_for_configured_origins_only(settings_for, make_client, fake_services):
    client = make_client(settings_for(cors_origins="https://dash.example"), services=fake_services)
    headers = {"Origin": "https://dash.example", "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "content-type,x-api-key"}
    r = client.options("/api/v1/segmentation/categorize", headers=headers)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://dash.example"
    r = client.options("/api/v1/segmentation/categorize", headers={**headers, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


# ---------------------------------------------------------------------------------------------- jobs, parsing
def test_calibration_jobs_join_identical_requests_and_report_failures():
    jobs = CalibrationJobs()
    gate = threading.Event()
    first = jobs.submit("g", ("a",), lambda: gate.wait(5) and {"taxonomy_version": 4})
    assert jobs.submit("g", ("a",), lambda: {"taxonomy_version": 5}) is first
    assert first.to_dict()["status"] == "running"
    gate.set()
    first.future.result(5)
    done = first.to_dict()
    assert done["status"] == "succeeded" and done["taxonomy_version"] == 4
    failed = jobs.submit("g", ("b",), lambda: (_ for _ in ()).throw(domain.NotEnoughData("too few players")))
    with pytest.raises(domain.NotEnoughData):
        failed.future.result(5)
    deadline = time.monotonic() + 5
    while failed.finished_at is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert failed.to_dict()["error"] == {"error": "not_enough_data", "detail": "too few players"}
    assert jobs.get(first.job_id) is first and jobs.get("missing") is None
    jobs.shutdown()


def test_time_parsing_accepts_iso_and_seconds_and_refuses_milliseconds():
    ta = TypeAdapter(Timestamp)
    assert ta.validate_python(1_714_557_600) == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert ta.validate_python("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert ta.validate_python("2024-05-01T10:00:00").tzinfo is None  # naive: the game's time zone
    for bad in (1_714_557_600_000, float("nan"), -5, True, "soon"):
        with pytest.raises(ValidationError):
            ta.validate_python(bad)


def test_settings_travel_to_workers_through_the_environment(monkeypatch):
    s = Settings.model_construct(database_url="postgresql://u:p@db/x", host="0.0.0.0", port=9000, workers=2,
                                 auth="required", cors_origins="https://a,https://b", log_json=False)
    env = settings_environment(s)
    for key in [k for k in __import__("os").environ if k.startswith("USEG_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    again = Settings.load()
    assert again.url == s.url and again.host == "0.0.0.0" and again.port == 9000 and again.workers == 2
    assert again.auth_required and again.cors_list == ["https://a", "https://b"] and again.log_json is False


# ---------------------------------------------------------------------------------------------- idempotency
class _MemoryIdempotency:
    """The claim / settle contract of ``services.ops`` in memory (the database versions are tested in
    test_api_idempotency.py); enough to drive the middleware without a database."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], dict] = {}

    def idempotency_claim(self, key, game_id, record, *, ttl_s, stale_s):
        stored = self.records.get((key, game_id))
        if stored is None:
            self.records[(key, game_id)] = record
            return "new", None
        if stored["request_hash"] != record["request_hash"]:
            return "mismatch", stored
        return ("replay" if stored["state"] == "done" else "in_progress"), stored

    def idempotency_settle(self, key, game_id, claim, record):
        if self.records.get((key, game_id), {}).get("claim") != claim:
            return False
        if record is None:
            del self.records[(key, game_id)]
        else:
            self.records[(key, game_id)] = record
        return True


def test_idempotency_middleware_replays_4xx_and_forgets_5xx(make_client, fake_services):
    store = _MemoryIdempotency()
    fake_services.idempotency_claim = store.idempotency_claim  # type: ignore[attr-defined]
    fake_services.idempotency_settle = store.idempotency_settle  # type: ignore[attr-defined]
    client = make_client(services=fake_services)
    runs: list[int] = []

    def write(key: AdminKey, status: int = Body(embed=True)):
        runs.append(status)
        if status == 599:
            raise RuntimeError("boom")
        return render({"run": len(runs), "status": status}, status, headers={"Location": f"/things/{len(runs)}"})

    def read(key: ReadKey, status: int = Body(embed=True)):
        runs.append(status)
        return render({"run": len(runs)})

    client.app.add_api_route("/_test/write", write, methods=["POST"])
    client.app.add_api_route("/_test/read", read, methods=["POST"])
    key = {"Idempotency-Key": "k1"}

    first = client.post("/_test/write", json={"status": 409}, headers=key)
    again = client.post("/_test/write", json={"status": 409}, headers=key)
    assert first.status_code == again.status_code == 409 and again.content == first.content
    assert again.headers["location"] == "/things/1" and again.headers["idempotent-replayed"] == "true"
    assert runs == [409]
    reused = client.post("/_test/write", json={"status": 200}, headers=key)
    assert reused.status_code == 422 and reused.json()["error"] == "idempotency_key_reused" and runs == [409]

    for status in (503, 599):  # a server error (answered or raised) is not remembered: the retry runs
        k = {"Idempotency-Key": f"k{status}"}
        assert client.post("/_test/write", json={"status": status}, headers=k).status_code in (503, 500)
        assert client.post("/_test/write", json={"status": 201}, headers=k).status_code == 201
    assert runs == [409, 503, 201, 599, 201]
    assert client.post("/_test/write", json={"status": 200}, headers={"Idempotency-Key": "bad key"}).status_code == 422

    for _ in range(2):  # read scope: the header is ignored
        client.post("/_test/read", json={"status": 200}, headers={"Idempotency-Key": "r"})
    assert runs[-2:] == [200, 200] and len(store.records) == 3  # k1, k503, k599: nothing for the reads
