"""Similarity, name matching, κ, equal-share thresholds and the migration validator report."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from unified_segmentation.adapter import (
    classify,
    cohens_kappa,
    compare,
    flags_at_share,
    kappa_at_equal_share,
    match_segment_names,
    shadow_report,
    similarity,
    threshold_for_share,
    validate,
)

AXES4 = {"monetization": "whale", "engagement": "regular", "temporal": "night_owl", "social": "solo"}
BASE4 = {"spend_per_day": 2.0, "sessions_per_day": 2.0, "night_play_share": 0.6, "social_events_per_session": 0.1}


def test_identical_profiles_are_equivalent(make_profile):
    a = make_profile(primary=AXES4, baseline=BASE4, anomalies={"monetization": True, "social": False})
    b = a.served("unified")
    assert similarity(a, b) == 1.0
    assert classify(similarity(a, b)) == "equivalent"


def test_different_profiles_are_significant(make_profile):
    a = make_profile(primary=AXES4, baseline=BASE4, anomalies={"monetization": False})
    b = make_profile(primary={"monetization": "minnow", "engagement": "casual", "temporal": "weekday_player",
                              "social": "guild"},
                     baseline={k: v * 1.5 + 1 for k, v in BASE4.items()}, anomalies={"monetization": False})
    s = similarity(a, b)
    assert s == pytest.approx(0.2)  # only the anomaly flags agree
    assert s < 0.70 and classify(s) == "significant"
    c = compare(a, b)
    assert c.differing_parts == ["primary", "baseline"]
    assert set(c.primary_diff) == set(AXES4) and set(c.baseline_diff) == set(BASE4)


def test_partial_similarity_and_renormalization(make_profile):
    a = make_profile(primary=AXES4, baseline=BASE4, anomalies={"monetization": True, "engagement": False})
    b = make_profile(primary=dict(AXES4, temporal="weekend_warrior", social="guild"),
                     baseline=dict(BASE4, spend_per_day=2.08, sessions_per_day=2.5),  # 2.08: within 5 %
                     anomalies={"monetization": False, "engagement": False})
    assert similarity(a, b) == pytest.approx(0.5 * 0.5 + 0.3 * 0.75 + 0.2 * 0.5)
    no_anom = b.model_copy(update={"anomalies": None})
    assert similarity(a, no_anom) == pytest.approx((0.5 * 0.5 + 0.3 * 0.75) / 0.8)
    no_base = make_profile(primary=AXES4, baseline={"other_metric": 1.0})
    assert similarity(a, no_base) == 1.0  # only primaries are comparable, and they agree
    assert classify(0.95) == "equivalent" and classify(0.90) == "minor" and classify(0.70) == "minor"
    assert classify(0.6999) == "significant"


def test_baseline_tolerance_with_zero_floor(make_profile):
    def sim(x, y):
        return similarity(make_profile(primary={}, baseline={"m": x}), make_profile(primary={}, baseline={"m": y}))

    assert sim(1.0, 1.04) == 1.0 and sim(1.0, 1.06) == 0.0
    assert sim(0.0, 0.0) == 1.0 and sim(0.0, 1e-9) == 1.0 and sim(0.0, 0.01) == 0.0
    assert sim(-2.0, -2.09) == 1.0


def test_name_matching_maps_whale_to_whale_2(make_profile):
    legacy = ["whale"] * 30 + ["dolphin"] * 50 + ["minnow"] * 20 + ["non_payer"] * 5
    unified = (["whale_2"] * 25 + ["dolphin"] * 5 + ["dolphin"] * 40 + ["whale_2"] * 10 + ["minnow"] * 20
               + ["minnow"] * 5)
    m = match_segment_names(legacy, unified)
    assert m == {"whale": "whale_2", "dolphin": "dolphin", "minnow": "minnow"}  # non_payer left unmatched
    # Hungarian, not greedy: A's best column is x, but the best total pairs A→y, B→x
    assert match_segment_names(["A"] * 19 + ["B"] * 9, ["x"] * 10 + ["y"] * 9 + ["x"] * 9) == {"A": "y", "B": "x"}
    a = make_profile(primary={"monetization": "whale"})
    b = make_profile(primary={"monetization": "whale_2"})
    assert similarity(a, b) < similarity(a, b, {"monetization": m}) == 1.0
    with pytest.raises(ValueError):
        match_segment_names(["a"], [])


def test_kappa_equals_sklearn():
    rng = np.random.default_rng(7)
    for _ in range(5):
        a = rng.random(200) < 0.2
        b = np.where(rng.random(200) < 0.8, a, rng.random(200) < 0.3)
        assert cohens_kappa(a.tolist(), b.tolist()) == pytest.approx(cohen_kappa_score(a, b))
    la = rng.integers(0, 3, 100)
    lb = np.where(rng.random(100) < 0.6, la, rng.integers(0, 3, 100))
    assert cohens_kappa(la.tolist(), lb.tolist()) == pytest.approx(cohen_kappa_score(la, lb))
    known_a = [True, True, False, False, False, False, True, False, False, False]
    known_b = [True, False, False, False, False, True, True, False, False, False]
    # po = 0.8, pe = 0.3·0.3 + 0.7·0.7 = 0.58 → κ = 0.22 / 0.42
    assert cohens_kappa(known_a, known_b) == pytest.approx(0.22 / 0.42)
    assert cohens_kappa([False] * 5, [False] * 5) == 1.0


def test_threshold_for_share():
    scores = np.arange(100, dtype=float)
    t = threshold_for_share(scores, 0.10)
    assert t == 89.0 and (scores > t).sum() == 10
    assert flags_at_share(scores, 0.0).sum() == 0 and flags_at_share(scores, 1.0).sum() == 100
    rng = np.random.default_rng(3)
    a = rng.normal(size=1000)
    b = a * 10 + 5  # same ranking on another scale: equal-share flags agree exactly
    assert kappa_at_equal_share(a, b, 0.05) == pytest.approx(1.0)
    assert flags_at_share(a, 0.05).mean() == pytest.approx(0.05)


# -------------------------------------------------------------------------------------- validator


@pytest.fixture
def sample(make_profile):
    """10 constructed (legacy, unified) pairs with known similarities: 6 × 1.0, 2 × 0.85, 0.35, 0.25."""
    pairs = []
    base = {"spend_per_day": 10.0, "sessions_per_day": 2.0}
    for i in range(6):
        anom = {"monetization": i == 0, "engagement": False}
        pairs.append((make_profile(f"p{i}", {"monetization": "whale", "engagement": "regular"}, base, anom),
                      make_profile(f"p{i}", {"monetization": "whale_2", "engagement": "regular"}, base, anom,
                                   served_by="unified")))
    for i in (6, 7):  # minor: baseline half off (sessions 25 % apart)
        anom = {"monetization": False, "engagement": False}
        pairs.append((make_profile(f"p{i}", {"monetization": "dolphin", "engagement": "regular"}, base, anom),
                      make_profile(f"p{i}", {"monetization": "dolphin_1", "engagement": "regular"},
                                   {"spend_per_day": 10.2, "sessions_per_day": 2.5}, anom, served_by="unified")))
    far = {"spend_per_day": 40.0, "sessions_per_day": 9.0}
    pairs.append((make_profile("p8", {"monetization": "dolphin", "engagement": "casual"}, base,
                               {"monetization": True, "engagement": False}),
                  make_profile("p8", {"monetization": "whale_2", "engagement": "hardcore"}, far,
                               {"monetization": False, "engagement": False}, served_by="unified")))
    pairs.append((make_profile("p9", {"monetization": "dolphin", "engagement": "casual"}, base,
                               {"monetization": True, "engagement": False}),
                  make_profile("p9", {"monetization": "whale_2", "engagement": "hardcore"}, far,
                               {"monetization": False, "engagement": True}, served_by="unified")))
    return pairs


def test_validator_report_known_numbers(sample):
    rep = validate(sample)
    assert rep["sample_size"] == 10
    assert rep["name_map"] == {"engagement": {"casual": "hardcore", "regular": "regular"},
                               "monetization": {"dolphin": "dolphin_1", "whale": "whale_2"}}
    sims = [1.0] * 6 + [0.85, 0.85, 0.35, 0.25]
    assert rep["equivalence_rate"] == pytest.approx(0.6)
    assert rep["classes"] == {"equivalent": 6, "minor": 2, "significant": 2}
    assert rep["similarity"]["mean"] == pytest.approx(np.mean(sims))
    for q, key in ((0.1, "p10"), (0.5, "p50"), (0.9, "p90")):
        assert rep["similarity"][key] == pytest.approx(np.quantile(sims, q))
    assert rep["per_axis_agreement"]["monetization"] == {"n": 10, "agreement": 0.8, "raw_agreement": 0.0}
    assert rep["per_axis_agreement"]["engagement"] == {"n": 10, "agreement": 1.0, "raw_agreement": 0.8}
    # only the real differences are listed (the minor numeric ones are not), worst first
    assert [d["player_id"] for d in rep["differences"]] == ["p9", "p8"]
    assert rep["differences_total"] == 2
    p9 = rep["differences"][0]
    assert p9["similarity"] == pytest.approx(0.25)
    assert p9["parts"] == ["primary", "baseline", "anomalies"]
    assert p9["primary"] == {"monetization": {"legacy": "dolphin", "mapped": "dolphin_1", "unified": "whale_2"}}
    assert set(p9["baseline"]) == {"spend_per_day", "sessions_per_day"}
    assert p9["anomalies"] == {"monetization": {"legacy": True, "unified": False},
                               "engagement": {"legacy": False, "unified": True}}
    an = rep["anomalies"]
    leg_flags = [True] + [False] * 7 + [True, True]
    uni_flags = [True] + [False] * 7 + [False, True]
    assert an["n"] == 10 and an["agreement_rate"] == pytest.approx(0.9)
    assert an["kappa"] == pytest.approx(cohen_kappa_score(leg_flags, uni_flags))
    assert an["legacy_flag_rate"] == pytest.approx(0.3) and an["unified_flag_rate"] == pytest.approx(0.2)
    assert an["per_axis"]["monetization"]["agreement_rate"] == pytest.approx(0.8)
    assert an["per_axis"]["engagement"]["agreement_rate"] == pytest.approx(0.9)
    assert "equal_share" not in an


def test_validator_equal_share_kappa_and_explicit_map(sample):
    scores = [(float(i), float(10 - i)) for i in range(10)]
    rep = validate(sample, anomaly_scores=scores, false_alarm_share=0.2, name_map={})
    la = flags_at_share([s for s, _ in scores], 0.2)
    ua = flags_at_share([s for _, s in scores], 0.2)
    assert rep["anomalies"]["equal_share"] == {"share": 0.2, "kappa": pytest.approx(cohen_kappa_score(la, ua))}
    assert rep["per_axis_agreement"]["monetization"]["agreement"] == 0.0  # no name map given → raw names
    assert validate(sample, anomaly_scores=scores)["anomalies"]["equal_share"]["share"] == pytest.approx(0.3)


def test_validator_empty_sample():
    rep = validate([])
    assert rep["sample_size"] == 0 and rep["equivalence_rate"] is None and rep["similarity"]["mean"] is None
    assert rep["differences"] == [] and rep["anomalies"]["kappa"] is None


def test_shadow_report_known_numbers(sample):
    records = []
    for k, (leg, uni) in enumerate(sample[:3]):
        records.append({"game_id": "g", "player_id": leg.player_id, "legacy": leg.to_dict(),
                        "unified": uni.to_dict(), "similarity": 0.4, "legacy_ms": float(k + 1),
                        "unified_ms": float(10 * (k + 1)), "error": None})
    records.append({"game_id": "g", "player_id": "x", "legacy": sample[0][0].to_dict(), "unified": None,
                    "similarity": None, "legacy_ms": 4.0, "unified_ms": 40.0, "error": "no_taxonomy: not yet"})
    rep = shadow_report(records)
    assert rep["runs"] == 4 and rep["compared"] == 3
    assert rep["errors"] == 1 and rep["error_rate"] == 0.25 and rep["error_kinds"] == {"no_taxonomy": 1}
    assert rep["similarity"]["mean"] == pytest.approx(0.4)  # as recorded
    assert rep["similarity_matched"]["mean"] == pytest.approx(1.0)  # after matching whale → whale_2
    assert rep["equivalence_rate"] == 1.0
    assert rep["latency_ms"]["legacy"]["p50"] == pytest.approx(2.5)
    assert rep["latency_ms"]["legacy"]["p95"] == pytest.approx(np.quantile([1, 2, 3, 4], 0.95))
    assert rep["latency_ms"]["unified"]["p95"] == pytest.approx(np.quantile([10, 20, 30, 40], 0.95))
    assert rep["anomalies"]["agreement_rate"] == 1.0
    assert shadow_report([])["runs"] == 0
