"""Deterministic bucketing and strategy decisions."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from unified_segmentation.adapter import (
    RolloutConfig,
    Strategy,
    bucket,
    decide,
    in_shadow_sample,
    serves_unified,
)
from unified_segmentation.errors import InvalidInput

N = 100_000
PLAYERS = [f"player_{i}" for i in range(N)]


def _served(cfg, game="game_a"):
    return np.fromiter((serves_unified(cfg, game, p) for p in PLAYERS), dtype=bool, count=N)


@pytest.fixture(scope="module")
def split():
    c10 = RolloutConfig(strategy="gradual_rollout", percentage=10, salt="s1")
    c50 = RolloutConfig(strategy="gradual_rollout", percentage=50, salt="s1")
    return _served(c10), _served(c50)


def test_split_accuracy_over_100k_players(split):
    s10, s50 = split
    assert abs(s10.mean() - 0.10) <= 0.005
    assert abs(s50.mean() - 0.50) <= 0.005


def test_raising_percentage_only_adds_players(split):
    s10, s50 = split
    assert not np.any(s10 & ~s50)  # everyone on unified at 10 % still is at 50 %
    assert s50.sum() > s10.sum()


def test_sticky_and_stable():
    cfg = {"strategy": "gradual_rollout", "percentage": 37.5, "salt": "x"}
    first = [serves_unified(cfg, "g", p) for p in PLAYERS[:2000]]
    again = [serves_unified(RolloutConfig.parse(dict(cfg)), "g", p) for p in PLAYERS[:2000]]
    assert first == again
    # a stable hash (BLAKE2b), not Python's per-process hash()
    digest = hashlib.blake2b(b"x\x1fg\x1fplayer_1", digest_size=8).digest()
    assert bucket("g", "player_1", "x") == int.from_bytes(digest, "big") % 10_000
    b = [bucket("g", p, "x") for p in PLAYERS[:5000]]
    assert min(b) >= 0 and max(b) < 10_000
    # the game and the salt reshuffle
    assert [bucket("h", p, "x") for p in PLAYERS[:50]] != b[:50]
    assert [bucket("g", p, "y") for p in PLAYERS[:50]] != b[:50]


def test_strategies_and_forces():
    par = RolloutConfig(strategy="parallel_only")
    sha = RolloutConfig(strategy="shadow_mode")
    full = RolloutConfig(strategy="full_rollout")
    zero = RolloutConfig(strategy="gradual_rollout", percentage=0)
    hundred = RolloutConfig(strategy="gradual_rollout", percentage=100)
    for p in PLAYERS[:300]:
        assert not serves_unified(par, "g", p) and not serves_unified(sha, "g", p)
        assert serves_unified(full, "g", p) and serves_unified(hundred, "g", p)
        assert not serves_unified(zero, "g", p)
        assert serves_unified(par, "g", p, force_unified=True)
        assert serves_unified(zero, "g", p, force_unified=True)
        assert not serves_unified(full, "g", p, force_legacy=True)
    with pytest.raises(InvalidInput):
        serves_unified(full, "g", "p", force_unified=True, force_legacy=True)
    assert decide(full, "g", "p", force_legacy=True).reason == "force_legacy"
    assert decide(full, "g", "p").reason == "full_rollout"


def test_shadow_sample_is_about_ten_percent_and_independent(split):
    s10, _ = split
    cfg = RolloutConfig(strategy="shadow_mode", salt="s1")
    assert cfg.shadow_sample == 10.0
    sh = np.fromiter((in_shadow_sample(cfg, "game_a", p) for p in PLAYERS), dtype=bool, count=N)
    assert abs(sh.mean() - 0.10) <= 0.005
    # independent of the serving bucket: among the 10 % served, about 10 % are shadowed
    assert abs(sh[s10].mean() - 0.10) <= 0.02
    shadowed = [p for p, s in zip(PLAYERS[:1000], sh[:1000], strict=True) if s]
    assert all(decide(cfg, "game_a", p).shadow for p in shadowed)
    assert not any(decide(RolloutConfig(strategy="full_rollout", salt="s1"), "game_a", p).shadow for p in shadowed)


def test_config_defaults_and_validation():
    assert RolloutConfig(strategy="gradual_rollout").percentage == 50.0
    assert RolloutConfig(strategy="full_rollout").percentage == 100.0
    sh = RolloutConfig.parse({"strategy": "shadow_mode", "percentage": 20})
    assert sh.shadow_sample == 20.0 and sh.percentage == 20.0
    sh2 = RolloutConfig.parse({"strategy": "shadow_mode", "percentage": 20, "shadow_sample": 5})
    assert sh2.shadow_sample == 5.0
    d = RolloutConfig.parse({"strategy": "gradual_rollout", "percentage": 12.5,
                             "legacy": {"type": "http", "url": "https://studio.example/seg"}}).to_dict()
    assert d["strategy"] == "gradual_rollout" and d["legacy"]["timeout_s"] == 0.5
    assert RolloutConfig.parse(d).to_dict() == d  # stored config round-trips
    assert RolloutConfig().strategy == Strategy.PARALLEL_ONLY and RolloutConfig().legacy["type"] == "builtin"
    for bad in ({"strategy": "yolo"}, {"strategy": "gradual_rollout", "percentage": 150},
                {"strategy": "gradual_rollout", "percentage": -1}, {"percentge": 10},
                {"legacy": {"type": "http", "url": "ftp://x"}}):
        with pytest.raises(InvalidInput):
            RolloutConfig.parse(bad)
