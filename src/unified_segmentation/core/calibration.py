"""Taxonomy calibration numerics: K-means sweep with a Kneedle knee, the acceptance rule,
shrunk covariances, variance explained and its Gaussian null, PCA with varimax rotation.

scikit-learn does the clustering, PCA and covariance shrinkage; this module only holds the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from kneed import KneeLocator
from sklearn.cluster import KMeans
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, silhouette_score
from threadpoolctl import ThreadpoolController

_THREADS = ThreadpoolController()


@dataclass(frozen=True)
class RuleConstants:
    """The k-selection rule and its constants (printed in every taxonomy)."""

    min_k: int = 2
    max_k: int = 8
    min_share: float = 0.003
    min_members: int = 20
    min_silhouette: float = 0.20
    min_stability: float = 0.50
    stability_splits: int = 5
    sample_size: int = 200_000
    silhouette_sample: int = 2_000
    n_init: int = 4
    sweep_sample: int = 20_000
    seed: int = 0
    ridge_share: float = 0.05
    ridge_floor: float = 1e-3

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class AxisFit:
    """Result of clustering one axis (model space)."""

    k: int
    labels: np.ndarray  # (n,) for every player
    centers: np.ndarray  # (k, p) means of assigned players
    covariances: np.ndarray  # (k, p, p) Ledoit-Wolf + ridge
    counts: np.ndarray  # (k,)
    inertias: dict[int, float]
    knee: int | None
    silhouette: float | None
    variance_explained: float
    variance_explained_null: float
    weak_structure: bool
    ridge: float
    notes: list[str] = field(default_factory=list)
    stability: float | None = None  # half-sample ARI of the chosen k (None: not checked)


def varying_metrics(X: np.ndarray, min_players: int, sample: int = 200_000, seed: int = 0) -> np.ndarray:
    """Boolean mask of columns where at least ``min_players`` rows differ from the column's mode.

    The mode is found on a sample of at most ``sample`` rows and counted exactly on the whole column
    (a column can only fail when one value holds almost every row, which a sample finds).
    """
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, sample, replace=False) if n > sample else np.arange(n)
    keep = np.zeros(X.shape[1], dtype=bool)
    for j in range(X.shape[1]):
        col = np.round(X[:, j], 12)
        vals, counts = np.unique(col[idx], return_counts=True)
        if len(vals) <= 1 and n <= sample:
            continue
        mode = vals[counts.argmax()]
        keep[j] = (n - int((col == mode).sum())) >= min_players
    return keep


def _kmeans(Z: np.ndarray, k: int, rules: RuleConstants, n_init: int | None = None,
            init: np.ndarray | None = None, seed_offset: int = 0) -> KMeans:
    """scikit-learn K-means on one thread (2 OpenMP threads ran 9x slower on these shared cores);
    ``init`` seeds a single start from given centers."""
    with _THREADS.limit(limits=1):
        if init is not None:
            return KMeans(n_clusters=k, init=init, n_init=1, random_state=rules.seed).fit(Z)
        return KMeans(n_clusters=k, n_init=rules.n_init if n_init is None else n_init,
                      random_state=rules.seed + seed_offset).fit(Z)


def knee_of(ks: list[int], inertias: list[float]) -> int | None:
    """Kneedle knee of log-inertia over k (convex, decreasing)."""
    if len(ks) < 3:
        return None
    y = np.log(np.maximum(np.asarray(inertias), 1e-12))
    knee = KneeLocator(ks, y, curve="convex", direction="decreasing").knee
    return int(knee) if knee is not None else None


def shrunk_covariances(
    Z: np.ndarray, labels: np.ndarray, k: int, rules: RuleConstants
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per-segment Ledoit-Wolf covariance + λI (pooled for small segments). Never singular."""
    n, p = Z.shape
    centers = np.zeros((k, p))
    counts = np.bincount(labels, minlength=k)
    raw = np.zeros((k, p, p))
    pooled = np.zeros((p, p))
    # one stable sort instead of a boolean scan per segment: members of s are rows bounds[s]:bounds[s+1]
    Zs = Z[np.argsort(labels, kind="stable")]
    bounds = np.concatenate([[0], np.cumsum(counts)])
    groups = [Zs[bounds[s]:bounds[s + 1]] for s in range(k)]
    for s, members in enumerate(groups):
        if len(members):
            centers[s] = members.mean(axis=0)
            diff = members - centers[s]
            pooled += diff.T @ diff
    pooled /= max(n - k, 1)
    lam = max(rules.ridge_floor, rules.ridge_share * float(np.trace(pooled)) / p)
    for s, members in enumerate(groups):
        if len(members) >= 2 * p + 1:
            with _THREADS.limit(limits=1):
                raw[s] = LedoitWolf().fit(members).covariance_
        else:
            raw[s] = pooled
    covs = raw + lam * np.eye(p)[None]
    return centers, covs, counts, lam


def variance_explained(Z: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Between-segment / total sum of squares."""
    total = float(((Z - Z.mean(axis=0)) ** 2).sum())
    if total <= 0:
        return 0.0
    within = 0.0
    for s in range(k):
        m = Z[labels == s]
        if len(m):
            within += float(((m - m.mean(axis=0)) ** 2).sum())
    return 1.0 - within / total


def null_variance_explained(Z: np.ndarray, k: int, rules: RuleConstants, n_null: int = 20_000) -> float:
    """Variance explained by the same k on one Gaussian sample with the axis's covariance."""
    if k < 2:
        return 0.0
    rng = np.random.default_rng(rules.seed + 7919)
    cov = np.atleast_2d(np.cov(Z, rowvar=False))
    n = min(n_null, max(len(Z), 10 * k))
    G = rng.multivariate_normal(np.zeros(cov.shape[0]), cov, size=n, method="eigh")
    km = _kmeans(G, k, rules)
    return variance_explained(G, km.labels_, k)


def half_sample_stability(Z: np.ndarray, k: int, rules: RuleConstants, seed: int) -> float | None:
    """Reproducibility of the k-segment solution: K-means (``n_init`` starts) on two random halves of
    ``Z``, each assigning all of ``Z``; the adjusted Rand index of the two assignments (the median over
    ``rules.stability_splits`` random splits when ``Z`` holds fewer than 10,000 players, one split
    otherwise: larger halves give a precise figure).

    ``None`` when a half is too small to hold k segments of ``rules.min_members`` players.
    """
    n = len(Z)
    if n // 2 < k * rules.min_members:
        return None
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rules.stability_splits if n < 10_000 else 1):
        perm = rng.permutation(n)
        a = _kmeans(Z[perm[: n // 2]], k, rules)
        b = _kmeans(Z[perm[n // 2:]], k, rules)
        with _THREADS.limit(limits=1):
            out.append(float(adjusted_rand_score(a.predict(Z), b.predict(Z))))
    return float(np.median(out))


def fit_axis(Z: np.ndarray, rules: RuleConstants) -> AxisFit:
    """Cluster one axis: sweep k, pick the knee, accept or step down, then fit covariances.

    The k sweep (``n_init`` starts per k) runs on at most ``rules.sweep_sample`` players of the
    calibration sample; each candidate k is then refitted on the whole sample (at most
    ``rules.sample_size`` players) with one start seeded from the sweep's centers, and the acceptance
    rule is checked on that fit. Every player is assigned to the nearest center of the accepted fit.

    Parameters
    ----------
    Z : ndarray of shape (n_players, p)
        Calibration players' positions in model space (float64, finite).
    """
    Z = np.asarray(Z, dtype=np.float64)
    n, p = Z.shape
    rng = np.random.default_rng(rules.seed)
    sample = Z if n <= rules.sample_size else Z[rng.choice(n, rules.sample_size, replace=False)]
    m = len(sample)
    sweep = sample if m <= rules.sweep_sample else sample[rng.choice(m, rules.sweep_sample, replace=False)]
    min_members = max(rules.min_members, int(np.ceil(rules.min_share * m)))
    sweep_min = max(rules.min_members, int(np.ceil(rules.min_share * len(sweep))))
    max_k = max(1, min(rules.max_k, len(sweep) // max(sweep_min, 1)))
    min_k = min(rules.min_k, max_k)
    notes: list[str] = []
    ks = list(range(min_k, max_k + 1))
    models: dict[int, KMeans] = {}
    inertias: dict[int, float] = {}
    for k in ks:
        if k < 2:
            continue
        # several starts in the sweep: a one-start inertia curve moves the knee (seen on planted games)
        models[k] = _kmeans(sweep, k, rules)
        inertias[k] = float(models[k].inertia_)
    sweep_ks = [k for k in ks if k in inertias]
    # A start stuck in a poor local minimum shows as a dent in the log-inertia curve (a smaller drop into
    # k than out of it) and moves the knee (seen: k=5 of a planted engagement axis, 4 starts on 20k
    # players, knee 6 instead of 3). Refit such k with twice the starts (other seeds), keep the better.
    for i in range(1, len(sweep_ks) - 1):
        km1, k, kp1 = sweep_ks[i - 1], sweep_ks[i], sweep_ks[i + 1]
        if np.log(inertias[km1] / inertias[k]) < np.log(inertias[k] / inertias[kp1]):
            alt = _kmeans(sweep, k, rules, n_init=2 * rules.n_init, seed_offset=1000 + k)
            if alt.inertia_ < inertias[k]:
                models[k], inertias[k] = alt, float(alt.inertia_)
    knee = knee_of(sweep_ks, [inertias[k] for k in sweep_ks])
    start = knee if knee is not None else (sweep_ks[0] if sweep_ks else 1)
    if knee is None:
        notes.append("no knee found in log-inertia; starting from min_k")
    sil_idx = rng.choice(m, min(rules.silhouette_sample, m), replace=False)
    finals: dict[int, KMeans] = {}

    def final(k: int) -> KMeans:
        if k not in finals:
            finals[k] = models[k] if sweep is sample else _kmeans(sample, k, rules,
                                                                   init=models[k].cluster_centers_)
        return finals[k]

    chosen, sil, weak = None, None, False
    stability: dict[int, float | None] = {}
    for k in range(start, min_k - 1, -1):
        if k not in models:
            continue
        labels = final(k).labels_
        counts = np.bincount(labels, minlength=k)
        if counts.min() < min_members:
            notes.append(f"k={k} rejected: a segment holds {int(counts.min())} < {min_members} players")
            continue
        sub = labels[sil_idx]
        s = float(silhouette_score(sample[sil_idx], sub)) if len(np.unique(sub)) > 1 else -1.0
        if s < rules.min_silhouette:
            notes.append(f"k={k} rejected: silhouette {s:.3f} < {rules.min_silhouette}")
            continue
        st = half_sample_stability(sweep, k, rules, rules.seed + k) if rules.min_stability > 0 else None
        stability[k] = st
        if st is not None and st < rules.min_stability:
            notes.append(f"k={k} rejected: half-sample stability (ARI) {st:.3f} < {rules.min_stability}")
            continue
        chosen, sil = k, s
        break
    if chosen is None:
        weak = True
        chosen = min_k if min_k in models else None
        notes.append("weak_structure: no k in range passed the acceptance rule")
    if chosen is None:  # too few players to form two segments
        labels_all = np.zeros(n, dtype=np.int64)
        chosen = 1
    else:
        km = final(chosen)
        if sample is Z:
            labels_all = km.labels_.astype(np.int64)
        else:
            with _THREADS.limit(limits=1):
                labels_all = km.predict(Z).astype(np.int64)
    centers, covs, counts, lam = shrunk_covariances(Z, labels_all, chosen, rules)
    ve = variance_explained(sample, labels_all if sample is Z else final(chosen).labels_, chosen) \
        if chosen > 1 else 0.0
    ve_null = null_variance_explained(Z, chosen, rules) if chosen > 1 else 0.0
    return AxisFit(
        k=chosen, labels=labels_all, centers=centers, covariances=covs, counts=counts,
        inertias=inertias, knee=knee, silhouette=sil, variance_explained=ve,
        variance_explained_null=ve_null, weak_structure=weak, ridge=lam, notes=notes,
        stability=stability.get(chosen),
    )


def varimax(loadings: np.ndarray, gamma: float = 1.0, max_iter: int = 100, tol: float = 1e-8) -> np.ndarray:
    """Varimax rotation of a loadings matrix of shape (n_metrics, n_components)."""
    L = np.asarray(loadings, dtype=np.float64)
    p, m = L.shape
    if m < 2:
        return L.copy()
    R = np.eye(m)
    d = 0.0
    for _ in range(max_iter):
        LR = L @ R
        u, s, vt = np.linalg.svd(L.T @ (LR**3 - (gamma / p) * LR @ np.diag(np.sum(LR**2, axis=0))))
        R = u @ vt
        d_new = float(np.sum(s))
        if d_new < d * (1 + tol):
            break
        d = d_new
    return L @ R


@dataclass
class SpecificAxisPlan:
    metrics: list[int]  # column indices into the game-specific metric block
    loadings: np.ndarray  # rotated loadings of those metrics on the component


def plan_game_specific_axes(
    Z: np.ndarray, *, min_cumulative: float = 0.80, max_components: int = 4, seed: int = 0
) -> tuple[list[SpecificAxisPlan], list[float]]:
    """PCA + varimax over standardized game-specific metrics; each metric joins its largest |loading|.

    Returns the axis plans (components with at least one metric) and the PCA explained-variance ratios
    of the kept components.
    """
    n, q = Z.shape
    if q == 0 or n < 3:
        return [], []
    with _THREADS.limit(limits=1):
        pca = PCA(n_components=min(q, n), random_state=seed).fit(Z)
    ratios = pca.explained_variance_ratio_
    m = int(np.searchsorted(np.cumsum(ratios), min_cumulative - 1e-12) + 1)
    m = max(1, min(m, max_components, q))
    loadings = pca.components_[:m].T * np.sqrt(pca.explained_variance_[:m])
    rotated = varimax(loadings)
    owner = np.abs(rotated).argmax(axis=1)
    plans = []
    for c in range(m):
        idx = [j for j in range(q) if owner[j] == c]
        if idx:
            plans.append(SpecificAxisPlan(metrics=idx, loadings=rotated[idx, c]))
    return plans, [float(r) for r in ratios[:m]]
