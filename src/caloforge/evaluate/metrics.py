"""Distances between two samples: separation power, Fréchet and kernel physics distances.

Plain arrays in, plain numbers out. ``reference`` is the sample taken as truth (Geant4 or
the parametric simulator), ``generated`` the one judged.

References:
    D. Diefenbacher et al., "DCTRGAN", JINST 15 (2020) P11004, arXiv:2009.03796, eq. 15
    (separation power, also called triangular discrimination).

    R. Kansal et al., "Evaluating generative models in high energy physics",
    Phys. Rev. D 107 (2023) 076017, arXiv:2211.10295 (FPD and KPD; JetNet's
    ``jetnet.evaluation.fpd``/``kpd`` define the batching and errors followed here).

    M. J. Chong, D. Forsyth, "Effectively unbiased FID and Inception Score and where to find
    them", CVPR 2020, arXiv:1911.07023 (extrapolation of FID to infinite sample size).
"""

from __future__ import annotations

import numpy as np

from caloforge.errors import CaloforgeError

__all__ = [
    "common_bins",
    "clipped_histogram",
    "histogram_separation_power",
    "separation_power",
    "frechet_distance",
    "fpd",
    "mmd_polynomial",
    "kpd",
    "min_showers_for_distances",
]


def _finite_1d(values, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise CaloforgeError(f"{what} sample is empty")
    if not np.all(np.isfinite(values)):
        raise CaloforgeError(f"{what} sample contains NaN or infinite values")
    return values


def common_bins(reference, generated=None, bins: int = 50, scale: str = "linear",
                quantile: float = 1e-3, limits: tuple[float, float] | None = None
                ) -> np.ndarray:
    """Bin edges for comparing a generated sample with the reference, fixed by the reference.

    The range spans the reference between its ``quantile`` and ``1 - quantile`` quantiles,
    bounded by the observable's physical ``limits`` where it has them; values outside (of
    either sample) belong in the end bins (:func:`clipped_histogram`). The generated sample
    never moves the range, so it cannot squeeze the histogram into one bin by adding
    outliers: they land in an end bin, where they count. It is used only where the
    reference alone gives no range (a constant reference, or no positive value for log
    bins).

    Args:
        reference: reference sample (any shape; flattened).
        generated: generated sample, or ``None``; only for a degenerate reference (above).
        bins: number of bins (``"linear"``/``"log"``).
        scale: ``"linear"``, ``"log"`` (log-spaced over the positive values) or
            ``"discrete"`` (one bin per integer).
        quantile: fraction of the reference left to each end bin when choosing the range.
        limits: ``(low, high)`` physical range of the observable (e.g. ``(0, 1)`` for a
            fraction), or ``None``.

    Returns:
        Increasing bin edges.

    Raises:
        CaloforgeError: for an empty or non-finite sample, or an unknown ``scale``.
    """
    ref = _finite_1d(reference, "reference")
    gen = None if generated is None else _finite_1d(generated, "generated")
    if scale == "discrete":
        lo, hi = np.floor(ref.min()), np.ceil(ref.max())
        if gen is not None and lo == hi:
            lo, hi = min(lo, np.floor(gen.min())), max(hi, np.ceil(gen.max()))
        return np.arange(lo - 0.5, hi + 1.5)
    if scale not in ("linear", "log"):
        raise CaloforgeError(f"unknown binning scale {scale!r}; use linear, log or discrete")
    if scale == "log":
        sample = ref[ref > 0]
        if sample.size == 0 and gen is not None:
            sample = gen[gen > 0]
        if sample.size == 0:
            return np.linspace(0.0, 1.0, bins + 1)
        lo, hi = np.quantile(sample, [quantile, 1.0 - quantile])
        if hi <= lo and gen is not None and np.any(gen > 0):
            positive = gen[gen > 0]
            lo, hi = min(lo, positive.min()), max(hi, positive.max())
        if hi <= lo:
            lo, hi = lo / 2.0, hi * 2.0
        return np.logspace(np.log10(lo), np.log10(hi), bins + 1)
    lo, hi = np.quantile(ref, [quantile, 1.0 - quantile])
    if limits is not None:
        lo, hi = max(lo, limits[0]), min(hi, limits[1])
    if hi <= lo and gen is not None:
        lo, hi = min(lo, gen.min()), max(hi, gen.max())
        if limits is not None:
            lo, hi = max(lo, limits[0]), min(hi, limits[1])
    if hi <= lo:  # constant samples: centre a small range on the value
        width = max(abs(lo) * 1e-3, 1e-6)
        lo, hi = lo - width, hi + width
    return np.linspace(lo, hi, bins + 1)


def histogram_separation_power(p, q) -> float:
    """Separation power of two histograms on the same bins.

    ``S = 0.5 * sum_bins (p - q)^2 / (p + q)`` after normalising each histogram to unit sum;
    0 for identical shapes, 1 for histograms without common bins.

    Args:
        p, q: bin counts (or probabilities per bin) of the two samples, same length.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise CaloforgeError(f"histograms have different binnings: {p.shape} vs {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0:
        raise CaloforgeError("cannot compute a separation power of an empty histogram")
    p, q = p / p.sum(), q / q.sum()
    total = p + q
    mask = total > 0
    return float(0.5 * np.sum((p[mask] - q[mask]) ** 2 / total[mask]))


def separation_power(reference, generated, bins: int | np.ndarray = 50,
                     scale: str = "linear") -> float:
    """Separation power of two samples histogrammed on the same bins.

    Args:
        reference, generated: samples of one observable.
        bins: bin edges, or a number of bins chosen by :func:`common_bins` (range fixed by
            the reference).
        scale: binning scale when ``bins`` is a number.

    Returns:
        ``S`` in [0, 1]: 0 for identical histograms, 1 for disjoint ones. Values outside the
        edges count in the end bins.

    Raises:
        CaloforgeError: for an empty or non-finite sample.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=1000)
        >>> separation_power(x, x)
        0.0
    """
    ref = _finite_1d(reference, "reference")
    gen = _finite_1d(generated, "generated")
    edges = common_bins(ref, gen, bins, scale) if np.ndim(bins) == 0 else np.asarray(bins)
    return histogram_separation_power(clipped_histogram(ref, edges),
                                      clipped_histogram(gen, edges))


def clipped_histogram(values, edges: np.ndarray) -> np.ndarray:
    """Bin counts of ``values`` on ``edges``, values outside counted in the end bins."""
    values = np.clip(np.asarray(values, dtype=np.float64).ravel(), edges[0],
                     np.nextafter(edges[-1], -np.inf))
    return np.histogram(values, bins=edges)[0]


def _features_pair(real, gen) -> tuple[np.ndarray, np.ndarray]:
    real = np.asarray(real, dtype=np.float64)
    gen = np.asarray(gen, dtype=np.float64)
    if real.ndim == 1:
        real = real[:, None]
    if gen.ndim == 1:
        gen = gen[:, None]
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise CaloforgeError(
            f"features must be (N, n_features) arrays with the same n_features, got "
            f"{real.shape} and {gen.shape}"
        )
    if len(real) < 2 or len(gen) < 2:
        raise CaloforgeError("need at least two samples on each side")
    if not (np.all(np.isfinite(real)) and np.all(np.isfinite(gen))):
        raise CaloforgeError("features contain NaN or infinite values")
    return real, gen


def _normalise(real: np.ndarray, gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # As JetNet: every feature divided by the largest |value| of the reference.
    scale = np.max(np.abs(real), axis=0)
    scale[scale == 0] = 1.0
    return real / scale, gen / scale


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between Gaussians: ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))``.

    ``Tr sqrt(S1 S2)`` is the sum of the square roots of the eigenvalues of the symmetric
    matrix ``L^T S2 L`` with ``S1 = L L^T`` (similar to ``S1 S2``; ``S1^(1/2)`` replaces
    ``L`` when ``S1`` is singular): a Cholesky factor and a symmetric eigenvalue problem
    instead of a general matrix square root, an order of magnitude faster for hundreds of
    features and free of the complex round-off of ``sqrtm``.

    Args:
        mu1, mu2: ``(d,)`` means.
        sigma1, sigma2: ``(d, d)`` covariance matrices (symmetric, positive semi-definite).

    Returns:
        The distance (>= 0 up to round-off).
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    try:  # S1 = L L^T: S1 S2 is similar to L^T S2 L
        factor = np.linalg.cholesky(sigma1)
    except np.linalg.LinAlgError:  # singular S1 (a constant feature): S1^(1/2) instead
        w, v = np.linalg.eigh(0.5 * (sigma1 + sigma1.T))
        factor = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = factor.T @ sigma2 @ factor
    eigen = np.linalg.eigvalsh(0.5 * (inner + inner.T))
    trace_root = float(np.sum(np.sqrt(np.clip(eigen, 0.0, None))))
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)


def min_showers_for_distances(n_features: int) -> int:
    """Fewest showers per sample for which FPD and KPD carry an honest error.

    FPD estimates a covariance of ``n_features`` features on batches down to 40% of the
    smaller sample: the smallest batch must hold at least twice as many showers as there
    are features, so the sample needs ``5 * n_features``. KPD's error is the spread over
    batches of half the smaller sample, which need at least 100 showers each. Hence
    ``max(5 * n_features, 200)``.

    Args:
        n_features: number of features (columns) compared.

    Returns:
        The minimum number of showers in each sample.
    """
    return max(5 * int(n_features), 200)


def _intercept(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares line ``y = a + b x`` with ``a >= 0``: ``(a, error of a)``.

    Solved in closed form on rescaled ``x`` (an iterative bounded fit started at
    ``a = b = 1``, as in JetNet, can stop far from the optimum when ``x ~ 1e-5``)."""
    if np.ptp(x) == 0:  # one batch size only (tiny samples): no extrapolation
        return float(np.mean(y)), float(np.std(y))
    u = x / x.max()
    design = np.stack([np.ones_like(u), u], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    dof = max(len(y) - 2, 1)
    cov = np.linalg.inv(design.T @ design) * float(residual @ residual) / dof
    error = float(np.sqrt(cov[0, 0]))
    if coef[0] < 0:  # the constrained optimum lies on a = 0
        return 0.0, error
    return float(coef[0]), error


def _mean_cov(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``np.cov``'s, ``ddof=1``) through one matrix product."""
    mean = x.mean(axis=0)
    centred = x - mean
    return mean, (centred.T @ centred) / (len(x) - 1)


def _gaussian_fd(x: np.ndarray, y: np.ndarray) -> float:
    return frechet_distance(*_mean_cov(x), *_mean_cov(y))


class _BatchMoments:
    """Mean and covariance of subsets of the rows of ``x``.

    A batch larger than half the sample is the whole sample minus its complement, whose
    sums are cheaper: FPD's batches (40-100% of the sample) then cost about a third of the
    direct products. ``x`` should be roughly centred (the sums of products then lose no
    precision)."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self.total = x.sum(axis=0)
        self.products = x.T @ x

    def __call__(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = len(index)
        if 2 * b > len(self.x):
            keep = np.ones(len(self.x), dtype=bool)
            keep[index] = False
            rest = self.x[keep]
            total, products = self.total - rest.sum(axis=0), self.products - rest.T @ rest
        else:
            rows = self.x[index]
            total, products = rows.sum(axis=0), rows.T @ rows
        mean = total / b
        return mean, (products - b * np.outer(mean, mean)) / (b - 1)


def fpd(real, gen, min_samples: int = 20_000, max_samples: int = 50_000,
        num_batches: int = 20, num_points: int = 10, normalise: bool = True,
        seed: int = 42, num_bootstrap: int = 10) -> tuple[float, float]:
    """Fréchet physics distance with its error, extrapolated to infinite sample size.

    The Fréchet distance of Gaussians with the samples' means and covariances is measured
    on ``num_batches`` random batches at each of ``num_points`` batch sizes evenly spaced
    in ``1/N`` between ``min_samples`` and ``max_samples``; a straight line in ``1/N``
    (intercept >= 0) is fitted and its intercept is the FPD, as in JetNet.

    Two changes make the value and error honest for samples not much larger than the
    batches: batches are drawn without replacement (then the intercept estimates the
    distance of the underlying distributions, not that of the two finite samples, which is
    biased upwards by ~1/N), and the error adds to the fit error, in quadrature, the spread
    of the full-sample distance over ``num_bootstrap`` bootstrap replicas (the fit error
    alone ignores that the whole sample is one random draw). Batch sizes are capped at
    the smaller sample, ``min_samples`` then kept at 40% of the cap (JetNet's ratio).

    Args:
        real, gen: ``(N, n_features)`` feature arrays.
        min_samples, max_samples: smallest and largest batch size.
        num_batches: batches per batch size.
        num_points: number of batch sizes.
        normalise: divide each feature by its largest absolute value in ``real``.
        seed: random seed.
        num_bootstrap: bootstrap replicas for the sample error (0: fit error only).

    Returns:
        ``(value, error)``.
    """
    real, gen = _features_pair(real, gen)
    if normalise:
        real, gen = _normalise(real, gen)
    cap = min(len(real), len(gen))
    max_samples = min(max_samples, cap)
    min_samples = min(min_samples, max(2, int(0.4 * max_samples)))
    sizes = (1.0 / np.linspace(1.0 / min_samples, 1.0 / max_samples, num_points)).astype(int)
    rng = np.random.default_rng(seed)
    shift = real.mean(axis=0)  # the distance is unchanged by a common shift
    real_moments, gen_moments = _BatchMoments(real - shift), _BatchMoments(gen - shift)
    values = []
    for size in sizes:
        points = [frechet_distance(*real_moments(rng.choice(len(real), size, replace=False)),
                                   *gen_moments(rng.choice(len(gen), size, replace=False)))
                  for _ in range(num_batches)]
        values.append(np.mean(points))
    value, fit_error = _intercept(1.0 / sizes, np.asarray(values))
    spread = 0.0
    if num_bootstrap > 1:
        replicas = [_gaussian_fd(real[rng.integers(0, len(real), len(real))],
                                 gen[rng.integers(0, len(gen), len(gen))])
                    for _ in range(num_bootstrap)]
        spread = float(np.std(replicas, ddof=1))
    return value, float(np.hypot(fit_error, spread))


def _kernel_sum(x: np.ndarray, y: np.ndarray | None, degree: int, block: int = 1024
                ) -> float:
    """Sum of the polynomial kernel ``(x.y / n_features + 1)^degree`` over all pairs, in
    row blocks so that memory stays at ``block * len(y)``. ``y=None`` means ``y = x``:
    then only the blocks on and above the diagonal are computed (the kernel matrix is
    symmetric), a third fewer products."""
    symmetric = y is None
    y = x if symmetric else y
    total = 0.0
    for lo in range(0, len(x), block):
        hi = min(lo + block, len(x))
        k = x[lo:hi] @ (y[lo:] if symmetric else y).T
        k *= 1.0 / x.shape[1]
        k += 1.0
        if degree == 4:  # in-place squaring: 3x faster than a power
            np.square(k, out=k)
            np.square(k, out=k)
        else:
            np.power(k, degree, out=k)
        if symmetric:  # the diagonal block once, the blocks right of it twice
            total += float(k[:, :hi - lo].sum()) + 2.0 * float(k[:, hi - lo:].sum())
        else:
            total += float(k.sum())
    return total


def mmd_polynomial(x, y, degree: int = 4) -> float:
    """Unbiased estimate of MMD^2 with the kernel ``(x.y / n_features + 1)^degree``."""
    x, y = _features_pair(x, y)
    m, n = len(x), len(y)
    d = x.shape[1]
    diag_x = ((np.einsum("ij,ij->i", x, x) / d + 1.0) ** degree).sum()
    diag_y = ((np.einsum("ij,ij->i", y, y) / d + 1.0) ** degree).sum()
    return float((_kernel_sum(x, None, degree) - diag_x) / (m * (m - 1))
                 + (_kernel_sum(y, None, degree) - diag_y) / (n * (n - 1))
                 - 2.0 * _kernel_sum(x, y, degree) / (m * n))


def kpd(real, gen, num_batches: int = 10, batch_size: int = 5_000, normalise: bool = True,
        seed: int = 42, degree: int = 4) -> tuple[float, float]:
    """Kernel physics distance: median of unbiased MMD^2 estimates over batches.

    Args:
        real, gen: ``(N, n_features)`` feature arrays.
        num_batches: number of random batch pairs.
        batch_size: showers per batch (capped at half the smaller sample).
        normalise: divide each feature by its largest absolute value in ``real``.
        degree: degree of the polynomial kernel.

    Returns:
        ``(median, error)`` with the error half the 16-84% inter-quantile range.
    """
    real, gen = _features_pair(real, gen)
    if normalise:
        real, gen = _normalise(real, gen)
    # Batches without replacement (a repeated shower would bias the unbiased estimator) and
    # at most half of the smaller sample, so that they differ and their spread means
    # something.
    batch_size = max(2, min(batch_size, len(real) // 2, len(gen) // 2))
    values = []
    for i in range(num_batches):
        rng = np.random.default_rng(seed + 1000 * i)
        x = real[rng.choice(len(real), batch_size, replace=False)]
        y = gen[rng.choice(len(gen), batch_size, replace=False)]
        values.append(mmd_polynomial(x, y, degree))
    lo, hi = np.percentile(values, [16.275, 83.725])
    return float(np.median(values)), float((hi - lo) / 2.0)
