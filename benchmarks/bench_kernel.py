"""Speed of the scoring kernel (TARGETS.md "Speed and memory", scoring-kernel row), with scikit-learn's
``GaussianMixture.predict_proba`` on the same shapes as the baseline measured in the same run.

Shapes: ``--players`` (1M) players, 4 axes x 5 segments x 6 dims, float64. Each axis gets seeded random
well-conditioned covariances (``A A^T / p + 0.5 I``), centers, Dirichlet weights and, on two of the four
axes, an order (so ``beyond_extreme`` does real work); players are drawn from each axis's mixture.

Figures, for BLAS/OpenMP pinned to 1 thread (threadpoolctl) and for the library default (our compiled
kernel is single-threaded either way; the setting matters to the baselines):

* ``strength_primary_players_per_s``: ``kernel.score_light`` (d², strength ``exp(-d²/2)``, primary with
  the beyond-the-extreme rule) over the 4 axes (target >= 2M/s);
* ``full_outputs_players_per_s``: ``kernel.score`` (d², strength, posterior, chi-square typicality,
  primary, beyond_extreme) over the 4 axes (target >= 1M/s);
* ``gmm_predict_proba_players_per_s``: ``GaussianMixture.predict_proba`` with the same weights, means,
  covariances and precision Cholesky factors set as fitted parameters, same 4 axes; ``ratio_*_vs_gmm``
  are our rate over its rate (its seconds over ours);
* ``numpy_reference_full_outputs_players_per_s``: ``kernel.score_reference`` (the plain numpy version
  the compiled kernel replaced and is tested against), same 4 axes; unless ``--no-reference``;
* ``noisy_probability_players_per_s``: ``kernel.noisy_probability`` (per-player noise) on
  ``--noisy-players`` (100k) players over the 4 axes, beside its numpy reference;
* ``single_player_*_us``: one player (1 x 6) through ``score`` / ``score_light`` / ``predict_proba`` /
  the numpy reference on one axis, median of ``--single-calls`` (1000) calls.

Players/s are ``players / (seconds to do all 4 axes)``, medians of ``--repeat`` (5) runs, ours and the
baselines interleaved in each run. ``score_breakdown_ms_one_axis`` splits ``score`` on one axis into
its steps. ``first_kernel_ms`` is the process's first ``AxisKernel`` (it imports numba and loads the
compiled entry points from numba's on-disk cache, or compiles them on a machine's first run);
``first_call_ms`` the first ``score`` call after it. ``max_rel_diff_vs_reference``
compares every output with the numpy reference on the first 20k players of each axis. Prints one
JSON document.

    python benchmarks/bench_kernel.py [--players 1000000] [--noisy-players 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext

import numba
import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky
from threadpoolctl import threadpool_info, threadpool_limits

from unified_segmentation.core import _kernel_numba as _nb
from unified_segmentation.core.kernel import AxisKernel, noisy_probability_reference, score_reference

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
        ker.score_light(Z)


def full_outputs(kernels, Zs) -> None:
    for ker, Z in zip(kernels, Zs, strict=True):
        ker.score(Z)


def reference_full(kernels, Zs) -> None:
    for ker, Z in zip(kernels, Zs, strict=True):
        score_reference(ker, Z)


def gmm_proba(gmms, Zs) -> None:
    for gmm, Z in zip(gmms, Zs, strict=True):
        gmm.predict_proba(Z)


def noisy(kernels, Zs, noise) -> None:
    for ker, Z, nv in zip(kernels, Zs, noise, strict=True):
        ker.noisy_probability(Z, nv)


def noisy_reference(kernels, Zs, noise) -> None:
    for ker, Z, nv in zip(kernels, Zs, noise, strict=True):
        noisy_probability_reference(ker, Z, nv)


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
    steps: dict[str, list[float]] = {k: [] for k in ("allocate_outputs", "first_pass_distances_primary",
                                                     "strength_numpy_exp", "second_pass_posterior_typicality",
                                                     "score", "score_light")}
    n, k = Z.shape[0], ker.n_segments
    for _ in range(repeat):
        t = time.perf_counter()
        out = np.empty((4, n, k))
        primary, beyond = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.bool_)
        out[:] = 0.0  # touch the pages, as the kernel's writes do
        steps["allocate_outputs"].append(time.perf_counter() - t)
        t = time.perf_counter()
        _nb.first_pass(Z, ker._LT, ker._fp, ker._ip, out, primary, beyond)
        steps["first_pass_distances_primary"].append(time.perf_counter() - t)
        t = time.perf_counter()
        np.exp(out[1], out=out[1])
        steps["strength_numpy_exp"].append(time.perf_counter() - t)
        t = time.perf_counter()
        _nb.second_pass(out, ker._fp, ker._ip)
        steps["second_pass_posterior_typicality"].append(time.perf_counter() - t)
        del out
        steps["score"].append(timed(lambda: ker.score(Z)))
        steps["score_light"].append(timed(lambda: ker.score_light(Z)))
    return {k: round(1e3 * statistics.median(v), 1) for k, v in steps.items()}


def max_rel_diff(kernels, Zs, n: int) -> dict[str, float]:
    """Largest |ours - reference| / |reference| per output (elements above 1e-300), and mismatches."""
    out = {"dist_sq": 0.0, "strength": 0.0, "probability": 0.0, "typicality": 0.0,
           "primary_mismatches": 0, "beyond_extreme_mismatches": 0}
    for ker, Z in zip(kernels, Zs, strict=True):
        got, ref = ker.score(Z[:n]), score_reference(ker, Z[:n])
        for name in ("dist_sq", "strength", "probability", "typicality"):
            a, b = getattr(got, name), getattr(ref, name)
            m = np.abs(b) > 1e-300
            out[name] = max(out[name], float((np.abs(a[m] - b[m]) / np.abs(b[m])).max(initial=0.0)))
        out["primary_mismatches"] += int((got.primary != ref.primary).sum())
        out["beyond_extreme_mismatches"] += int((got.beyond_extreme != ref.beyond_extreme).sum())
    return out


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
    ap.add_argument("--no-reference", action="store_true", help="skip the numpy reference timings")
    args = ap.parse_args()
    load_start = [round(x, 2) for x in os.getloadavg()]

    # the process's first AxisKernel imports numba and loads the compiled entry points (warm-up)
    eye = np.stack([np.eye(N_DIMS)] * 2)
    first_kernel_ms = 1e3 * timed(lambda: AxisKernel(np.eye(2, N_DIMS), eye, [0.5, 0.5], order=[0, 1]))
    rng = np.random.default_rng(args.seed)
    kernels, Zs, gmms = [], [], []
    for a in range(N_AXES):
        ker, Z, params = make_axis(rng, args.players, N_SEGMENTS, N_DIMS, a in ORDERED_AXES)
        kernels.append(ker)
        Zs.append(Z)
        gmms.append(make_gmm(*params))
    first_call_ms = 1e3 * timed(lambda: kernels[0].score(Zs[0][:1]))
    for ker, Z in zip(kernels, Zs, strict=True):  # warm every compiled entry point
        ker.score_light(Z[:1])
        ker.noisy_probability(Z[:1], np.ones((1, N_DIMS)))
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
                    "numba": numba.__version__,
                    "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "threadpools": blas_summary(),
                    "loadavg_1_5_15_start": load_start},
        "first_kernel_ms": round(first_kernel_ms, 1),
        "first_call_ms": round(first_call_ms, 1),
        "max_abs_diff_probability_vs_gmm": max_diff,
        "max_rel_diff_vs_reference": max_rel_diff(kernels, Zs, check.stop),
        "targets": {"strength_primary_players_per_s": 2_000_000, "full_outputs_players_per_s": 1_000_000},
        "threads": {},
    }
    n = args.players
    for label, limit in (("1", 1), ("default", None)):
        ctx = threadpool_limits(limits=limit) if limit is not None else nullcontext()
        with ctx:
            keys = ["a", "b", "gmm", "noisy"] + ([] if args.no_reference else ["ref", "noisy_ref"])
            times: dict[str, list[float]] = {k: [] for k in keys}
            for _ in range(args.repeat):
                times["a"].append(timed(lambda: strength_primary(kernels, Zs)))
                times["gmm"].append(timed(lambda: gmm_proba(gmms, Zs)))
                times["b"].append(timed(lambda: full_outputs(kernels, Zs)))
                times["noisy"].append(timed(lambda: noisy(kernels, Zn, noise)))
                if not args.no_reference:
                    times["ref"].append(timed(lambda: reference_full(kernels, Zs)))
                    times["noisy_ref"].append(timed(lambda: noisy_reference(kernels, Zn, noise)))
            med = {k: statistics.median(v) for k, v in times.items()}
            z1 = Zs[0][:1].copy()
            k0, g0 = kernels[0], gmms[0]
            res = {
                "strength_primary_players_per_s": round(n / med["a"]),
                "full_outputs_players_per_s": round(n / med["b"]),
                "gmm_predict_proba_players_per_s": round(n / med["gmm"]),
                "ratio_strength_primary_vs_gmm": round(med["gmm"] / med["a"], 2),
                "ratio_full_outputs_vs_gmm": round(med["gmm"] / med["b"], 2),
                "noisy_probability_players_per_s": round(n_noisy / med["noisy"]),
                "single_player_score_us": round(single_us(k0.score, z1, args.single_calls), 1),
                "single_player_score_light_us": round(single_us(k0.score_light, z1, args.single_calls), 1),
                "single_player_gmm_predict_proba_us": round(single_us(g0.predict_proba, z1, args.single_calls), 1),
                "meets_target": {"strength_primary": n / med["a"] >= 2_000_000,
                                 "full_outputs": n / med["b"] >= 1_000_000},
            }
            if not args.no_reference:
                res["numpy_reference_full_outputs_players_per_s"] = round(n / med["ref"])
                res["ratio_full_outputs_vs_numpy_reference"] = round(med["ref"] / med["b"], 2)
                res["numpy_reference_noisy_probability_players_per_s"] = round(n_noisy / med["noisy_ref"])
                res["single_player_numpy_reference_us"] = round(
                    single_us(functools.partial(score_reference, k0), z1, args.single_calls), 1)
            res["seconds_4_axes"] = {k: [round(x, 3) for x in v] for k, v in times.items()}
            if limit == 1:
                res["score_breakdown_ms_one_axis"] = score_breakdown(kernels[0], Zs[0], args.repeat)
        out["threads"][label] = res
    out["machine"]["loadavg_1_5_15_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
