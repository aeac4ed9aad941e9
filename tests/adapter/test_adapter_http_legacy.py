"""HttpLegacy against a real local HTTP server that can be slow, fail or answer garbage."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from unified_segmentation.adapter import (
    CompatProfile,
    HttpLegacy,
    LegacyError,
    LegacyInvalidResponse,
    LegacyUnavailable,
    legacy_from_config,
)
from unified_segmentation.errors import InvalidInput


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_ok_parses_and_posts_json(legacy_server):
    with HttpLegacy(legacy_server.url + "/profile") as leg:
        prof = leg.profile("g1", "player 7")
    assert isinstance(prof, CompatProfile)
    assert prof.player_id == "player 7"
    assert prof.served_by == "legacy" and prof.fallback is False
    assert prof.primary_segments == {"monetization": "whale", "engagement": "hardcore"}
    assert prof.segment_scores["monetization"] == {"whale": 0.9, "dolphin": 0.1}
    assert prof.behavioral_baseline["sessions_per_day"] == 5.0
    assert prof.timestamp.year == 2024 and prof.timestamp.tzinfo is not None
    req = legacy_server.state["requests"][0]
    assert req["method"] == "POST" and req["path"] == "/profile"
    assert b'"game_id": "g1"' in req["body"] or b'"game_id":"g1"' in req["body"]
    assert legacy_server.hits == 1


def test_get_method_with_url_placeholders(legacy_server):
    with HttpLegacy(legacy_server.url + "/games/{game_id}/players/{player_id}", method="GET") as leg:
        prof = leg.profile("g/1", "p 1")
    assert prof.player_id == "p 1"
    req = legacy_server.state["requests"][0]
    assert req["method"] == "GET"
    assert req["path"].startswith("/games/g%2F1/players/p%201?")
    assert "player_id=p+1" in req["path"] or "player_id=p%201" in req["path"]


def test_slow_server_times_out_within_bound(legacy_server):
    legacy_server.set_mode("slow")
    legacy_server.state["sleep_s"] = 1.5
    timeout, retries = 0.2, 1
    with HttpLegacy(legacy_server.url, timeout_s=timeout, retries=retries, backoff_s=0.05) as leg:
        t0 = time.monotonic()
        with pytest.raises(LegacyUnavailable) as ei:
            leg.profile("g", "p")
        elapsed = time.monotonic() - t0
    assert elapsed < timeout * (retries + 1) + 1.0
    assert elapsed >= timeout * (retries + 1) * 0.9  # it really waited for each attempt's timeout
    assert "timed out" in ei.value.detail
    assert legacy_server.hits == retries + 1
    assert ei.value.status == 503 and ei.value.code == "legacy_unavailable"


def test_500_is_retried_then_fails(legacy_server):
    legacy_server.set_mode("500")
    sleeps = []
    with HttpLegacy(legacy_server.url, retries=2, backoff_s=0.01, sleep=lambda s: sleeps.append(s)) as leg:
        with pytest.raises(LegacyUnavailable, match="HTTP 500"):
            leg.profile("g", "p")
        assert leg.stats["retries"] == 2 and leg.stats["requests"] == 3
    assert legacy_server.hits == 3
    assert sleeps == pytest.approx([0.01, 0.02])  # exponential backoff


def test_4xx_is_not_retried_and_not_a_breaker_failure(legacy_server):
    legacy_server.set_mode("404")
    with HttpLegacy(legacy_server.url, retries=3, failure_threshold=1) as leg:
        with pytest.raises(LegacyError) as ei:
            leg.profile("g", "p")
        assert not isinstance(ei.value, LegacyUnavailable)
        assert ei.value.extra["upstream_status"] == 404
        assert leg.breaker.state == "closed"
    assert legacy_server.hits == 1


@pytest.mark.parametrize("mode,needle", [
    ("garbage_json", "not a valid profile"),
    ("not_json", "non-JSON"),
    ("json_list", "expected an object"),
    ("wrong_player", "someone_else"),
])
def test_garbage_raises_invalid_response(legacy_server, mode, needle):
    legacy_server.set_mode(mode)
    with HttpLegacy(legacy_server.url, retries=2) as leg, pytest.raises(LegacyInvalidResponse, match=needle) as ei:
        leg.profile("g", "p")
    assert legacy_server.hits == 1  # a garbage answer is not retried
    if mode == "garbage_json":
        fields = {e["field"] for e in ei.value.extra["errors"]}
        assert "confidence" in fields and "segment_scores.monetization.whale" in fields


def test_breaker_opens_fails_fast_then_half_open_recovers(legacy_server):
    legacy_server.set_mode("500")
    clock = FakeClock()
    leg = HttpLegacy(legacy_server.url, retries=1, backoff_s=0.0, failure_threshold=3, reset_after_s=30,
                     clock=clock)
    for _ in range(3):
        with pytest.raises(LegacyUnavailable, match="HTTP 500"):
            leg.profile("g", "p")
    assert legacy_server.hits == 6
    assert leg.breaker.state == "open"
    t0 = time.monotonic()
    for _ in range(5):
        with pytest.raises(LegacyUnavailable, match="circuit breaker is open"):
            leg.profile("g", "p")
    assert time.monotonic() - t0 < 0.1
    assert legacy_server.hits == 6  # failed fast: the server saw nothing
    assert leg.stats["rejected_open"] == 5

    clock.t += 31  # half-open: one trial call; it fails → open again
    assert leg.breaker.state == "half_open"
    with pytest.raises(LegacyUnavailable, match="HTTP 500"):
        leg.profile("g", "p")
    assert legacy_server.hits == 8 and leg.breaker.state == "open"
    with pytest.raises(LegacyUnavailable, match="circuit"):
        leg.profile("g", "p")
    assert legacy_server.hits == 8

    legacy_server.set_mode("ok")
    clock.t += 31  # half-open trial succeeds → closed
    assert leg.profile("g", "p").player_id == "p"
    assert leg.breaker.state == "closed" and leg.breaker.consecutive_failures == 0
    assert leg.profile("g", "p2").player_id == "p2"
    assert legacy_server.hits == 10
    leg.close()


def test_connection_refused_is_bounded():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with HttpLegacy(f"http://127.0.0.1:{port}/", timeout_s=0.3, retries=2, backoff_s=0.01) as leg:
        t0 = time.monotonic()
        with pytest.raises(LegacyUnavailable, match="3 attempt"):
            leg.profile("g", "p")
        assert time.monotonic() - t0 < 0.3 * 3 + 1.0


def test_shared_client_is_not_closed(legacy_server):
    client = httpx.Client()
    leg = HttpLegacy(legacy_server.url, client=client)
    assert leg.profile("g", "p").player_id == "p"
    leg.close()
    assert not client.is_closed
    client.close()


def test_legacy_from_config(legacy_server):
    built = []

    def factory(cfg):
        built.append(cfg)
        return "builtin-system"

    assert legacy_from_config({"type": "builtin"}, builtin_factory=factory) == "builtin-system"
    assert built == [{"type": "builtin", "name": "builtin", "threshold": None}]
    leg = legacy_from_config({"type": "http", "url": legacy_server.url, "timeout_s": 0.25, "retries": 1,
                              "method": "get"}, builtin_factory=factory)
    assert isinstance(leg, HttpLegacy)
    assert (leg.timeout_s, leg.retries, leg.method, leg.breaker.failure_threshold) == (0.25, 1, "GET", 5)
    assert leg.profile("g", "p").player_id == "p"
    leg.close()
    for bad in ({"type": "http", "url": "ftp://example.com/x"}, {"type": "http", "url": "file:///etc/passwd"},
                {"type": "http", "url": "http://"}, {"type": "http", "url": "http://u:pw@example.com/"},
                {"type": "http"}, {"type": "http", "url": "http://x.org", "timeout_s": -1},
                {"type": "http", "url": "http://x.org", "bogus": 1}, {"type": "soap"}):
        with pytest.raises(InvalidInput):
            legacy_from_config(bad, builtin_factory=factory)
    with pytest.raises(InvalidInput):
        HttpLegacy("javascript:alert(1)")


def test_pool_keeps_breaker_state_per_game_and_rebuilds_on_change(legacy_server):
    from unified_segmentation.adapter import LegacyPool, redact_legacy_config

    made = []
    pool = LegacyPool(lambda game, cfg: made.append((game, cfg["threshold"])) or f"builtin:{game}")
    cfg = {"type": "http", "url": legacy_server.url, "failure_threshold": 1, "retries": 0,
           "headers": {"Authorization": "Bearer s3cret"}}
    a = pool.get("g1", cfg)
    assert pool.get("g1", dict(cfg)) is a  # same config → same instance, same breaker
    legacy_server.set_mode("500")
    with pytest.raises(LegacyUnavailable):
        a.profile("g1", "p")
    assert pool.get("g1", cfg).breaker.state == "open"
    b = pool.get("g1", {**cfg, "timeout_s": 0.3})  # a changed config rebuilds
    assert b is not a and b.breaker.state == "closed"
    assert pool.get("g2", {"type": "builtin", "threshold": 2.5}) == "builtin:g2" and made == [("g2", 2.5)]
    assert redact_legacy_config(cfg)["headers"] == {"Authorization": "***"}
    pool.close()
