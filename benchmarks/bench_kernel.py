"""Speed of the scoring kernel (TARGETS.md "Speed and memory", scoring-kernel row), with scikit-learn's
``GaussianMixture.predict_proba`` on the same shapes as the baseline measured in the same run.

Shapes: ``--players`` (1M) players, 4 axes x 5 segments x 6 dims, float64. Each axis gets seeded random
well-conditioned covariances (``A A^T / p + 0.5 I``), centers, Dirichlet weights and, on two of the four
axes, an order (so ``beyond_extreme`` does real work); players are drawn from each axis's mixture.

Figures, for BLAS/OpenMP pinned to 1 thread (threadpoolctl) and for the library default:

* ``strength_primary_players_per_s``: ``kernel.dist_sq`` + ``np.exp(-0.5 d2)`` + argmax over the 4 axes;
* ``full_outputs_players_per_s``: ``kernel.score(Z)`` (probability, typicality, primary, beyond_extreme)
  over the 4 axes;
* ``gmm_predict_proba_players_per_s``: ``GaussianMixture.predict_proba`` with the same weights, means,
  covariances and precision Cholesky factors set as fitted parameters, same 4 axes; ratios against it;
* ``noisy_probability_players_per_s``: ``kernel.noisy_probability`` (per-player noise) on ``--noisy-players``
  (100k) players over the 4 axes;
* ``single_player_score_us``: one player (1 x 6) through ``kernel.score`` on one axis, median of 1000
  calls (and the same for ``predict_proba``).

Players/s are ``players / (seconds to do all 4 axes)``, medians of ``--repeat`` (5) runs, ours and the
baseline interleaved in each run. ``score_breakdown_ms`` splits ``score`` on one axis (1 thread) into its
steps. Prints one JSON document.

    python benchmarks/bench_kernel.py [--players 1000000] [--noisy-players 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext

import numpy as np
from scipy.special import logsumexp
from scipy.stats import chi2
from sklearn.mixture import GaussianMixture
from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky
from threadpoolctl import threadpool_info, threadpool_limits

from unified_segmentation.core.kernel import AxisKernel

N_AXES, N_SEGMENTS, N_DIMS = 4, 5, 6
ORDERED_AXES = (0, 1)  # like monetization and engagement


def make_axis(rng: np.random.Generator, n: int, k: int, p: int, ordered: bool):
    """Random well-conditioned mixture and n players drawn from it."""
    centers = rng.normal(0.0, 2.0, size=(k, p))
    a = rng.normal(size=(k, p, p))
    covs = a @ a.transpose(0, 2, 1) / p + 0.5 * np.eye(p)[None]
    weights = rng.dirichlet(np.full(k, 3.0))
    labels = rng.choice(k, size=n, p=weights)
    chol = np.linalg.cholesky(covs)
    eps = rng.standard_normal((n, p))
    Z = np.empty((n, p))
    for s in range(k):
        m = labels == s
        Z[m] = centers[s] + eps[m] @ chol[s].T
    order = np.argsort(centers[:, 0]) if ordered else None
    return AxisKernel(centers, covs, weights, order=order), Z, (centers, covs, weights)


def make_gmm(centers: np.ndarray, covs: np.ndarray, weights: np.ndarray) -> GaussianMixture:
    k, p = centers.shape
    gmm = GaussianMixture(n_components=k, covariance_type="full")
    gmm.weights_ = weights / weights.sum()
    gmm.means_ = centers
    gmm.covariances_ = covs
    gmm.precisions_cholesky_ = _compute_precision_cholesky(covs, "full")
    gmm.precisions_ = gmm.precisions_cholesky_ @ gmm.precisions_cholesky_.transpose(0, 2, 1)
    gmm.n_features_in_ = p
    gmm.converged_ = True
    gmm.n_iter_ = 0
    gmm.lower_bound_ = 0.0
    return gmm


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def strength_primary(kernels, Zs) -> None:
    for ker, Z in zip(kernels, Zs, strict=True):
        d2 = ker.dist_sq(Z)
        strength = np.exp(-0.5 * d2)
        strength.argmax(axis=1)


def full_outputs(kernels, Zs) -> None:
    for ker, Z in zip(kernels, Zs, strict=True):
        ker.score(Z)


def gmm_proba(gmms, Zs) -> None:
    for gmm, Z in zip(gmms, Zs, strict=True):
        gmm.predict_proba(Z)


def noisy(kernels, Zs, noise) -> None:
    for ker, Z, nv in zip(kernels, Zs, noise, strict=True):
        ker.noisy_probability(Z, nv)


def single_us(fn, z: np.ndarray, calls: int = 1000) -> float:
    for _ in range(20):  # warm-up
        fn(z)
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn(z)
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1e3


def score_breakdown(ker: AxisKernel, Z: np.ndarray, repeat: int) -> dict[str, float]:
    """Median milliseconds of each step of ``AxisKernel.score`` on one axis."""
    steps: dict[str, list[float]] = {k: [] for k in ("dist_sq", "log_prob", "logsumexp_and_exp", "argmax",
                                                     "beyond", "strength_exp", "typicality_chi2_sf", "score")}
    for _ in range(repeat):
        t = time.perf_counter()
        d2 = ker.dist_sq(Z)
        steps["dist_sq"].append(time.perf_counter() - t)
        t = time.perf_counter()
        lp = ker.log_prob(d2)
        steps["log_prob"].append(time.perf_counter() - t)
        t = time.perf_counter()
        prob = np.exp(lp - logsumexp(lp, axis=1, keepdims=True))
        steps["logsumexp_and_exp"].append(time.perf_counter() - t)
        t = time.perf_counter()
        prob.argmax(axis=1)
        steps["argmax"].append(time.perf_counter() - t)
        t = time.perf_counter()
        ker.beyond(Z)
        steps["beyond"].append(time.perf_counter() - t)
        t = time.perf_counter()
        np.exp(-0.5 * d2)
        steps["strength_exp"].append(time.perf_counter() - t)
        t = time.perf_counter()
        chi2.sf(d2, ker.n_dims)
        steps["typicality_chi2_sf"].append(time.perf_counter() - t)
        steps["score"].append(timed(lambda: ker.score(Z)))
    return {k: round(1e3 * statistics.median(v), 1) for k, v in steps.items()}


def blas_summary() -> list[dict]:
    return [{k: d.get(k) for k in ("user_api", "internal_api", "prefix", "version", "num_threads")}
            for d in threadpool_info()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--players", type=int, default=1_000_000)
    ap.add_argument("--noisy-players", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--single-calls", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    kernels, Zs, gmms = [], [], []
    for a in range(N_AXES):
        ker, Z, params = make_axis(rng, args.players, N_SEGMENTS, N_DIMS, a in ORDERED_AXES)
        kernels.append(ker)
        Zs.append(Z)
        gmms.append(make_gmm(*params))
    n_noisy = min(args.noisy_players, args.players)
    Zn = [Z[:n_noisy] for Z in Zs]
    noise = [rng.uniform(0.01, 1.0, size=(n_noisy, N_DIMS)) for _ in range(N_AXES)]

    # same model: our posterior equals scikit-learn's (beyond-extreme overrides only touch `primary`)
    check = slice(0, min(20_000, args.players))
    max_diff = max(float(np.abs(k.score(Z[check]).probability - g.predict_proba(Z[check])).max())
                   for k, Z, g in zip(kernels, Zs, gmms, strict=True))

    out: dict = {
        "benchmark": "scoring kernel",
        "players": args.players,
        "axes": N_AXES, "segments_per_axis": N_SEGMENTS, "dims": N_DIMS, "dtype": "float64",
        "ordered_axes": len(ORDERED_AXES),
        "noisy_players": n_noisy,
        "repeat": args.repeat,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "threadpools": blas_summary(),
                    "loadavg_1_5_15_start": [round(x, 2) for x in os.getloadavg()]},
        "max_abs_diff_probability_vs_gmm": max_diff,
        "targets": {"strength_primary_players_per_s": 2_000_000, "full_outputs_players_per_s": 1_000_000},
        "threads": {},
    }
    n = args.players
    for label, limit in (("1", 1), ("default", None)):
        ctx = threadpool_limits(limits=limit) if limit is not None else nullcontext()
        with ctx:
            times: dict[str, list[float]] = {"a": [], "b": [], "gmm": [], "noisy": []}
            strength_primary(kernels, [Z[:1000] for Z in Zs])  # warm-up
            for _ in range(args.repeat):
                times["a"].append(timed(lambda: strength_primary(kernels, Zs)))
                times["gmm"].append(timed(lambda: gmm_proba(gmms, Zs)))
                times["b"].append(timed(lambda: full_outputs(kernels, Zs)))
                times["noisy"].append(timed(lambda: noisy(kernels, Zn, noise)))
            med = {k: statistics.median(v) for k, v in times.items()}
            z1 = Zs[0][:1].copy()
            res = {
                "strength_primary_players_per_s": round(n / med["a"]),
                "full_outputs_players_per_s": round(n / med["b"]),
                "gmm_predict_proba_players_per_s": round(n / med["gmm"]),
                "ratio_strength_primary_vs_gmm": round(med["gmm"] / med["a"], 2),
                "ratio_full_outputs_vs_gmm": round(med["gmm"] / med["b"], 2),
                "noisy_probability_players_per_s": round(n_noisy / med["noisy"]),
                "seconds_4_axes": {k: [round(x, 3) for x in v] for k, v in times.items()},
                "single_player_score_us": round(single_us(kernels[0].score, z1, args.single_calls), 1),
                "single_player_gmm_predict_proba_us": round(single_us(gmms[0].predict_proba, z1,
                                                                      args.single_calls), 1),
                "meets_target": {"strength_primary": n / med["a"] >= 2_000_000,
                                 "full_outputs": n / med["b"] >= 1_000_000},
            }
            if limit == 1:
                res["score_breakdown_ms_one_axis"] = score_breakdown(kernels[0], Zs[0], args.repeat)
        out["threads"][label] = res
    out["machine"]["loadavg_1_5_15_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
