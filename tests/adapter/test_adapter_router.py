"""ProfileRouter: who serves, fallback, shadow runs off the request path."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from unified_segmentation.adapter import (
    LegacyUnavailable,
    ProfileRouter,
    RolloutConfig,
    ShadowRecord,
    serves_unified,
    shadow_report,
)
from unified_segmentation.errors import NoTaxonomy


class FakeLegacy:
    name = "fake"

    def __init__(self, profile=None, error=None):
        self._profile, self._error, self.calls = profile, error, 0

    def profile(self, game_id, player_id):
        self.calls += 1
        if self._error is not None:
            raise self._error
        return self._profile.model_copy(update={"player_id": player_id})


@pytest.fixture
def router():
    r = ProfileRouter()
    yield r
    r.close()


@pytest.fixture
def legacy_prof(make_profile):
    return make_profile(primary={"monetization": "whale", "engagement": "regular"},
                        baseline={"spend_per_day": 3.0, "sessions_per_day": 2.0},
                        anomalies={"monetization": False, "engagement": False})


@pytest.fixture
def unified_prof(make_profile):
    return make_profile(primary={"monetization": "whale_2", "engagement": "regular"},
                        baseline={"spend_per_day": 3.05, "sessions_per_day": 2.0},
                        anomalies={"monetization": False, "engagement": True}, served_by="unified")


def _never():
    raise AssertionError("the unified system must not be called")


def _raise(exc):
    def f():
        raise exc
    return f


def _players(cfg, want_unified, n=5):
    out = [p for p in (f"p{i}" for i in range(10_000)) if serves_unified(cfg, "g", p) == want_unified]
    return out[:n]


def test_unified_serves_under_full_rollout(router, legacy_prof, unified_prof):
    leg = FakeLegacy(legacy_prof)
    out = router.serve({"strategy": "full_rollout"}, "g", "p1", unified=lambda: unified_prof, legacy=leg)
    assert out.served_by == "unified" and out.fallback is False
    assert out.primary_segments["monetization"] == "whale_2"
    assert leg.calls == 0 and router.served_by == {"unified": 1, "legacy": 0}


@pytest.mark.parametrize("exc,reason", [(RuntimeError("kaput"), "RuntimeError"),
                                        (NoTaxonomy("no taxonomy yet"), "no_taxonomy")])
def test_fallback_under_full_rollout(router, legacy_prof, exc, reason):
    leg = FakeLegacy(legacy_prof)
    out = router.serve(RolloutConfig(strategy="full_rollout"), "g", "p1", unified=_raise(exc), legacy=leg)
    assert out.served_by == "legacy" and out.fallback is True
    assert out.player_id == "p1" and out.primary_segments == legacy_prof.primary_segments
    assert router.fallbacks == 1 and router.served_by == {"unified": 0, "legacy": 1}
    assert router.fallback_reasons == {reason: 1}


def test_fallback_under_gradual_and_forced(router, legacy_prof, unified_prof):
    cfg = RolloutConfig(strategy="gradual_rollout", percentage=50)
    inside, outside = _players(cfg, True), _players(cfg, False)
    leg = FakeLegacy(legacy_prof)
    for p in inside:
        out = router.serve(cfg, "g", p, unified=_raise(ValueError("bad")), legacy=leg)
        assert (out.served_by, out.fallback) == ("legacy", True)
    for p in outside:  # legacy players: unified never called, no fallback
        out = router.serve(cfg, "g", p, unified=_never, legacy=leg)
        assert (out.served_by, out.fallback) == ("legacy", False)
    out = router.serve(cfg, "g", outside[0], unified=lambda: unified_prof, legacy=leg, force_unified=True)
    assert out.served_by == "unified"
    out = router.serve(cfg, "g", inside[0], unified=_never, legacy=leg, force_legacy=True)
    assert (out.served_by, out.fallback) == ("legacy", False)
    # forced unified still falls back in parallel_only
    out = router.serve({"strategy": "parallel_only"}, "g", "x", unified=_raise(KeyError("k")), legacy=leg,
                       force_unified=True)
    assert (out.served_by, out.fallback) == ("legacy", True)
    c = router.counters()
    assert c["fallbacks"] == len(inside) + 1
    assert c["served_by"] == {"unified": 1, "legacy": len(inside) + len(outside) + 2}


def test_parallel_only_never_calls_unified(router, legacy_prof):
    leg = FakeLegacy(legacy_prof)
    for i in range(50):
        out = router.serve({"strategy": "parallel_only"}, "g", f"p{i}", unified=_never, legacy=leg)
        assert out.served_by == "legacy"
    assert router.shadow_runs == 0


def test_both_fail_raises_legacy_error(router):
    leg = FakeLegacy(error=LegacyUnavailable("studio down"))
    with pytest.raises(LegacyUnavailable, match="studio down"):
        router.serve({"strategy": "full_rollout"}, "g", "p", unified=_raise(RuntimeError("x")), legacy=leg)
    with pytest.raises(LegacyUnavailable):
        router.serve({"strategy": "gradual_rollout", "percentage": 0}, "g", "p", unified=_never, legacy=leg)


def test_unified_may_stand_in_when_legacy_fails(legacy_prof, unified_prof):
    leg = FakeLegacy(error=LegacyUnavailable("studio down"))
    with ProfileRouter(unified_when_legacy_fails=True) as r:
        out = r.serve({"strategy": "shadow_mode", "shadow_sample": 0}, "g", "p", unified=lambda: unified_prof,
                      legacy=leg)
        assert (out.served_by, out.fallback) == ("unified", True)
        with pytest.raises(LegacyUnavailable):  # parallel_only keeps unified off the request path
            r.serve({"strategy": "parallel_only"}, "g", "p", unified=_never, legacy=leg)


@pytest.mark.parametrize("own_executor", [False, True])
def test_shadow_never_changes_answer_nor_waits(legacy_prof, unified_prof, own_executor):
    executor = ThreadPoolExecutor(max_workers=1) if own_executor else None
    router = ProfileRouter(executor)
    release, started, finished = threading.Event(), threading.Event(), threading.Event()
    records: queue.Queue[ShadowRecord] = queue.Queue()

    def slow_unified():
        started.set()
        release.wait(timeout=10)  # blocks until the test lets it go — after serve() returned
        finished.set()
        return unified_prof

    leg = FakeLegacy(legacy_prof)
    cfg = RolloutConfig(strategy="shadow_mode", shadow_sample=100)
    out = router.serve(cfg, "g", "p1", unified=slow_unified, legacy=leg, on_shadow=records.put,
                       shadow_executor=executor)
    # serve() returned while the unified call is still blocked: it did not wait for it
    assert not finished.is_set() and records.empty()
    assert out == legacy_prof.model_copy(update={"player_id": "p1"})
    assert out.served_by == "legacy" and out.fallback is False
    assert started.wait(timeout=5)  # the shadow call really runs (off the request path)
    release.set()
    rec = records.get(timeout=5)
    assert (rec.game_id, rec.player_id, rec.error) == ("g", "p1", None)
    assert rec.legacy == out.to_dict()
    assert rec.unified["primary_segments"]["monetization"] == "whale_2"
    # raw names: monetization differs (whale vs whale_2); baselines within 5 %; one anomaly axis of two differs
    assert rec.similarity == pytest.approx(0.5 * 0.5 + 0.3 * 1.0 + 0.2 * 0.5)
    assert rec.classification == "significant"
    assert rec.legacy_ms >= 0 and rec.unified_ms > 0
    assert router.drain(timeout=5)
    assert router.counters()["shadow_runs"] == 1 and router.shadow_mismatches == 1
    # with the name map the profiles agree on primaries
    out2 = router.serve(cfg, "g", "p2", unified=lambda: unified_prof.model_copy(update={"player_id": "p2"}),
                        legacy=leg, on_shadow=records.put, name_map={"monetization": {"whale": "whale_2"}})
    rec2 = records.get(timeout=5)
    assert out2.served_by == "legacy"
    assert rec2.similarity == pytest.approx(0.5 + 0.3 + 0.1) and rec2.classification == "minor"
    router.close()
    if executor is not None:
        executor.shutdown()


def test_shadow_unified_error_is_recorded_not_served(router, legacy_prof):
    records = queue.Queue()
    out = router.serve({"strategy": "shadow_mode", "shadow_sample": 100}, "g", "p", legacy=FakeLegacy(legacy_prof),
                       unified=_raise(NoTaxonomy("not calibrated")), on_shadow=records.put)
    assert out.served_by == "legacy" and out.fallback is False
    rec = records.get(timeout=5)
    assert rec.unified is None and rec.similarity is None
    assert rec.error.startswith("no_taxonomy")
    assert router.drain(5) and router.shadow_errors == 1 and router.fallbacks == 0


def test_shadow_sample_respected_and_bounded(legacy_prof, unified_prof):
    leg = FakeLegacy(legacy_prof)
    with ProfileRouter() as r:
        for i in range(30):
            r.serve({"strategy": "shadow_mode", "shadow_sample": 0}, "g", f"p{i}", unified=_never, legacy=leg)
        assert r.shadow_runs == 0
    release = threading.Event()

    def blocked():
        release.wait(timeout=10)
        return unified_prof

    with ProfileRouter(max_pending_shadow=1) as r:
        cfg = {"strategy": "shadow_mode", "shadow_sample": 100}
        r.serve(cfg, "g", "a", unified=blocked, legacy=leg)
        r.serve(cfg, "g", "b", unified=_never, legacy=leg)  # the pool is saturated: dropped, not queued
        assert r.shadow_dropped == 1
        release.set()
        assert r.drain(timeout=5)
        assert r.shadow_runs == 1


def test_shadow_records_feed_the_report(router, legacy_prof, unified_prof):
    records = []
    lock = threading.Lock()

    def sink(rec):
        with lock:
            records.append(rec.to_dict())

    leg = FakeLegacy(legacy_prof)
    cfg = {"strategy": "shadow_mode", "shadow_sample": 100}
    for i in range(20):
        def uni(i=i):
            if i % 5 == 0:
                raise NoTaxonomy("x")
            return unified_prof.model_copy(update={"player_id": f"p{i}"})
        router.serve(cfg, "g", f"p{i}", unified=uni, legacy=leg, on_shadow=sink)
    assert router.drain(timeout=5)
    rep = shadow_report(records)
    assert rep["runs"] == 20 and rep["errors"] == 4 and rep["error_kinds"] == {"no_taxonomy": 4}
    assert rep["compared"] == 16
    assert rep["name_map"]["monetization"] == {"whale": "whale_2"}
    assert rep["per_axis_agreement"]["monetization"] == {"n": 16, "agreement": 1.0, "raw_agreement": 0.0}
    assert rep["similarity_matched"]["mean"] == pytest.approx(0.9)
    assert rep["latency_ms"]["legacy"]["n"] == 20 and rep["latency_ms"]["unified"]["n"] == 20
