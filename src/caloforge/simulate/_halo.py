"""The halo of an electromagnetic shower: soft photons that deposit far from its core.

Most of the particles of an electromagnetic shower are photons of a few hundred keV to a
few MeV, near the minimum of the photon cross section, where Compton scattering
dominates. They travel several centimetres (the attenuation length, :attr:`Material.
photon_length`) before they scatter or are absorbed, in all directions, and leave small
(keV to MeV) deposits in cells far from the shower core, before and behind the shower
maximum. In a full simulation most cells of a shower are hit by this halo alone.

The halo is modelled as a compound Poisson process per cell:

- each energy spot of the shower hands a share of its energy to halo photons: a few
  percent near the start and the maximum, most of it deep in the tail, where the
  cascade has degraded to photons near the minimum of the cross section (their number
  is that energy over the mean deposit of one photon, so it grows linearly with the
  shower energy, as the total track length does);
- where they deposit follows those spots, each displaced by an isotropic flight with
  an exponential length (mean ``photon_length`` for photons near the minimum of the
  cross section, shorter for the softer ones the photoelectric effect stops): the
  flight's component along the axis sets the readout layer; per layer, the sources'
  energy, centre and spread, plus the transverse spread of their flights (photons that
  reached a far layer flew far, and spread wide), give the number of photons and
  their transverse distribution, taken as a
  product of two Laplace (double exponential) distributions, the profile of an
  exponential flight projected on an axis;
- the number of photons in a cell is Poisson with the integral of that density over the
  cell, and each photon deposits a Gamma-distributed energy (shape ``a``, mean ``a
  theta``; ``a = 1``, an exponential, approximates the flat Klein-Nishina spectrum of
  Compton electrons), so the energy of ``k`` photons in a cell is ``Gamma(k a, theta)``;
- from parametric-5 on, a photon deposits at each of its interactions (a few Compton
  scatterings, then photoabsorption), along its path: the cells it hits cluster
  (:func:`clustered_compound_poisson`), as the far cells of a full simulation's shower
  do.

All of it is vectorised over the showers of a block and the cells of the readout.

References:
    Particle Data Group, R. L. Workman et al., "Passage of particles through matter",
    Prog. Theor. Exp. Phys. 2022, 083C01, sec. 34.4 (photon cross sections, the minimum of
    the attenuation) and 34.5 (electromagnetic cascades: track length, the low-energy
    photons that carry the energy far from the shower axis).
    O. Klein and Y. Nishina, Z. Phys. 52 (1929) 853 (Compton scattering).
    G. Grindhammer and S. Peters, "The Parameterized Simulation of Electromagnetic Showers
    in Homogeneous and Sampling Calorimeters", hep-ex/0001020 (spot-based shower model).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

__all__ = ["Halo", "halo_fraction", "depth_flight", "laplace_cell_probabilities",
           "gaussian_cell_probabilities", "exponential_disc_mixture", "halo_expectation",
           "compound_poisson", "clustered_compound_poisson", "path_variance"]


@dataclass(frozen=True)
class Halo:
    """Parameters of the soft-photon halo.

    Attributes:
        near: share of the energy deposited through halo photons up to the shower's mean
            depth (``tau = t / <t> <= 1``).
        far: the share it tends to deep in the tail, where the cascade is made of
            photons near the minimum of the cross section and little else.
        depth: how fast (in ``tau``) the share rises from ``near`` to ``far`` behind the
            mean depth: ``near + (far - near) (1 - exp(-(tau - 1) / depth))``.
        length_scale: flight length in units of the medium's ``photon_length``, for the
            photons near the minimum of the cross section.
        soft_share: share of the halo energy carried by softer photons (a few hundred
            keV, where the photoelectric effect takes over), whose flights are shorter:
        soft_length: their flight length in units of ``photon_length``.
        shape: Gamma shape ``a`` of one photon's deposit (1: exponential).
        mean_mev: mean deposit of one photon, MeV; the number of halo photons is the
            energy they carry over this.
        core_mm: transverse spread (mm, added in quadrature) of the sources, the lateral
            extent of the cascade that emits them.
        tail_share, tail_scale: share and relative width of a broader transverse
            component (see :func:`halo_expectation`).
        mean_power: the mean deposit of one photon falls as ``(E / 10 GeV)^-mean_power``
            (their number grows as much faster than E): an empirical calibration of how
            fast the halo fills a layer's cells with the shower energy.
        spread_power: the transverse spread grows as ``(E / 10 GeV)^spread_power`` with
            the shower energy ``E``: an empirical calibration (the photon spectrum of a
            higher-energy shower reaches further), not a published parametrisation.
        radial: the transverse distribution of the photons' deposits is radially
            symmetric, ``exp(-r / b)`` in the plane of the layer (isotropic flights do
            not prefer the cell axes); ``False`` (the first halo): a product of two
            Laplace distributions, whose equal-density lines are diamonds, so that it
            fills the cells along the two axes through the core far more than the
            diagonal ones.
        interactions: mean number of deposits a halo photon makes (its Compton
            scatterings and the final photoabsorption), geometrically distributed; 1:
            one deposit per photon (the versions before parametric-5), so that the cells
            are hit independently of each other.
        interaction_length: mean flight between a photon's successive deposits, in units
            of the medium's ``photon_length`` (see :func:`clustered_compound_poisson`).
    """

    near: float = 0.0
    far: float = 0.0
    depth: float = 1.0
    length_scale: float = 1.0
    soft_share: float = 0.0
    soft_length: float = 0.3
    shape: float = 1.0
    mean_mev: float = 1.0
    core_mm: float = 0.0
    spread_power: float = 0.0
    mean_power: float = 0.0
    tail_share: float = 0.0
    tail_scale: float = 3.0
    radial: bool = False
    interactions: float = 1.0
    interaction_length: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.near > 0 or self.far > 0


def halo_fraction(halo: Halo, tau: np.ndarray) -> np.ndarray:
    """Share of a spot's energy that its halo photons carry, at relative depth ``tau``
    (``t / <t>`` of its shower), float32 like ``tau``."""
    f32 = np.float32
    rise = f32(1.0) - np.exp(-np.maximum(tau - f32(1.0), f32(0.0)) * f32(1.0 / halo.depth))
    return f32(halo.near) + f32(halo.far - halo.near) * rise


def depth_flight(rng: np.random.Generator, n: int, length: float | np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic flights of exponential length with mean ``length`` mm (a number, or
    one per flight): their component along the axis, and the variance per transverse
    axis of where they end (``l^2 sin^2(theta) / 2``, averaged over the azimuth), both
    ``(n,)`` float32 in mm and mm^2."""
    f32 = np.float32
    ell = rng.standard_exponential(n, dtype=f32) * np.asarray(length, dtype=f32)
    cos = rng.random(n, dtype=f32) * f32(2.0) - f32(1.0)
    return ell * cos, f32(0.5) * ell * ell * (f32(1.0) - cos * cos)


def laplace_cell_probabilities(edges: np.ndarray, centre: np.ndarray, scale: np.ndarray
                               ) -> np.ndarray:
    """``(m, n_cells)`` probability of each cell between consecutive ``edges`` (mm) under
    a Laplace distribution of per-shower ``centre`` and ``scale`` (``(m,)``, mm)."""
    x = (edges[None, :] - centre[:, None]) / scale[:, None]
    half = 0.5 * np.exp(-np.abs(x))
    cdf = np.where(x < 0, half, 1.0 - half)
    return np.diff(cdf, axis=1)


def gaussian_cell_probabilities(edges: np.ndarray, centre: np.ndarray, scale: np.ndarray
                                ) -> np.ndarray:
    """``(m, n_cells)`` probability of each cell between consecutive ``edges`` (mm) under
    a normal distribution of per-shower ``centre`` and standard deviation ``scale``
    (``(m,)``, mm)."""
    from scipy.special import ndtr

    return np.diff(ndtr((edges[None, :] - centre[:, None]) / scale[:, None]), axis=1)


@cache
def exponential_disc_mixture(n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A radially symmetric density ``exp(-r / b)`` in a plane as a mixture of ``n``
    isotropic two-dimensional normal distributions: their standard deviations per axis
    in units of ``b`` and their weights (non-negative least squares on the radial
    density, then normalised; the cumulative distribution agrees within 1.5 %).

    A normal distribution in a plane is both radially symmetric and a product of one
    normal per axis, so each component's expected count in a rectangular cell is a
    product of two one-dimensional probabilities (:func:`gaussian_cell_probabilities`).
    """
    from scipy.optimize import nnls

    r = np.linspace(0.0, 25.0, 2000)
    sigma = np.geomspace(0.35, 5.0, n)
    basis = np.stack([r / s**2 * np.exp(-0.5 * (r / s) ** 2) for s in sigma], axis=1)
    weight, _ = nnls(basis, r * np.exp(-r))
    keep = weight > 0
    return sigma[keep], weight[keep] / weight[keep].sum()


def halo_expectation(photons: np.ndarray, centre: np.ndarray, spread: np.ndarray,
                     grids: list[tuple[np.ndarray, np.ndarray]], tail_share: float = 0.0,
                     tail_scale: float = 3.0, radial: bool = False) -> np.ndarray:
    """Mean number of halo photons in every cell.

    Args:
        photons: ``(m, n_layers)`` mean number of halo photons of each shower in each
            readout layer.
        centre: ``(m, n_layers, 2)`` centre of their transverse distribution (mm, rows
            and columns axes).
        spread: ``(m, n_layers, 2)`` its standard deviation along each axis (mm).
        grids: per layer, the cell edges in mm along rows and along columns.
        tail_share, tail_scale: share and relative scale of a broader component (the
            photons that scattered several times before depositing).
        radial: radially symmetric profile ``exp(-r / b)`` per component (see
            :attr:`Halo.radial`) with ``3 b^2`` the variance per axis, instead of a
            product of two Laplace distributions.

    Returns:
        ``(m, n_voxels + n_layers)``: the voxels in the geometry's flat order, then the
        photons outside each layer's grid (its overflow).
    """
    m, n_layers = photons.shape
    # Per axis a Laplace distribution of the given variance (2 b^2), and a share of it
    # spread tail_scale times wider.
    w, k = tail_share, tail_scale
    scale = np.maximum(spread, 1.0) / np.sqrt(2.0)
    parts, outside = [], np.empty((m, n_layers))

    def profile(edges, c, b):
        p = laplace_cell_probabilities(edges, c, b)
        if w > 0:
            p = (1.0 - w) * p + w * laplace_cell_probabilities(edges, c, k * b)
        return p

    if radial:
        return _radial_expectation(photons, centre, spread, grids, w, k)
    for i, (row_edges, col_edges) in enumerate(grids):
        p_rows = profile(row_edges, centre[:, i, 0], scale[:, i, 0])
        p_cols = profile(col_edges, centre[:, i, 1], scale[:, i, 1])
        mu = photons[:, i, None, None] * p_rows[:, :, None] * p_cols[:, None, :]
        parts.append(mu.reshape(m, -1))
        outside[:, i] = photons[:, i] * (1.0 - p_rows.sum(axis=1) * p_cols.sum(axis=1))
    return np.concatenate([*parts, np.maximum(outside, 0.0)], axis=1)


def _radial_expectation(photons: np.ndarray, centre: np.ndarray, spread: np.ndarray,
                        grids: list[tuple[np.ndarray, np.ndarray]], tail_share: float,
                        tail_scale: float) -> np.ndarray:
    """:func:`halo_expectation` with the radially symmetric profile: per layer, a sum
    over the components of :func:`exponential_disc_mixture` (and of its broader copy)
    of the product of their per-axis cell probabilities."""
    m, n_layers = photons.shape
    sigma, weight = exponential_disc_mixture()
    b = np.maximum(spread, 1.0) / np.sqrt(3.0)  # per-axis variance 3 b^2
    components = [(s, (1.0 - tail_share) * wt) for s, wt in zip(sigma, weight, strict=True)]
    if tail_share > 0:
        components += [(tail_scale * s, tail_share * wt)
                       for s, wt in zip(sigma, weight, strict=True)]
    parts, outside = [], np.empty((m, n_layers))
    for i, (row_edges, col_edges) in enumerate(grids):
        mu = np.zeros((m, len(row_edges) - 1, len(col_edges) - 1))
        inside = np.zeros(m)
        for s, wt in components:
            p_rows = gaussian_cell_probabilities(row_edges, centre[:, i, 0], s * b[:, i, 0])
            p_cols = gaussian_cell_probabilities(col_edges, centre[:, i, 1], s * b[:, i, 1])
            mu += wt * p_rows[:, :, None] * p_cols[:, None, :]
            inside += wt * p_rows.sum(axis=1) * p_cols.sum(axis=1)
        parts.append((photons[:, i, None, None] * mu).reshape(m, -1))
        outside[:, i] = photons[:, i] * (1.0 - inside)
    return np.concatenate([*parts, np.maximum(outside, 0.0)], axis=1)


def compound_poisson(rng: np.random.Generator, halo: Halo, mean_photons: np.ndarray,
                     mean_mev: np.ndarray) -> np.ndarray:
    """Energy (MeV, float32, same shape) of a Poisson number of photons with mean
    ``mean_photons`` ``(m, n_cells)`` per cell, each depositing ``Gamma(halo.shape,
    mean_mev / shape)``, ``mean_mev`` ``(m,)`` one per shower (row)."""
    return _gamma_sums(rng, halo, rng.poisson(mean_photons), mean_mev)


def _gamma_sums(rng: np.random.Generator, halo: Halo, counts: np.ndarray,
                mean_mev: np.ndarray) -> np.ndarray:
    """Energy (MeV, float32) of ``counts`` ``(m, n_cells)`` deposits per cell, each
    ``Gamma(halo.shape, mean_mev / shape)`` with ``mean_mev`` ``(m,)`` per row."""
    energy = np.zeros(counts.shape, dtype=np.float32)
    hit = np.flatnonzero(counts)
    if len(hit):
        theta = (np.asarray(mean_mev, dtype=np.float32) / np.float32(halo.shape))
        k = counts.flat[hit]
        # Few photons (most cells): quantile tables of Gamma(k a), by look-up (fast).
        table = _gamma_quantiles(halo.shape)
        few = k <= len(table)
        u = (rng.random(len(hit), dtype=np.float32) * np.float32(table.shape[1])).astype(np.int32)
        sums = np.empty(len(hit), dtype=np.float32)
        sums[few] = table[k[few] - 1, np.minimum(u[few], table.shape[1] - 1)]
        many = ~few
        if np.any(many):
            sums[many] = rng.standard_gamma(k[many] * halo.shape)
        energy.flat[hit] = sums * theta[hit // counts.shape[1]]
    return energy


def path_variance(halo: Halo, photon_length: float) -> float:
    """Mean variance per transverse axis (mm^2) of a halo photon's deposits about the
    point where it reached its cell (see :func:`clustered_compound_poisson`): a deposit
    is ``j`` flights on, each of per-axis variance ``2 L^2 / 3`` (an isotropic flight of
    exponential length, mean ``L``, projected on an axis), and over a geometric number
    of deposits of mean ``k`` the mean ``j`` is ``k - 1``. 0 with one deposit each."""
    if halo.interactions <= 1:
        return 0.0
    step = halo.interaction_length * photon_length
    return (halo.interactions - 1.0) * 2.0 / 3.0 * step * step


# Cells expecting more halo photons than this are "dense": whether their photons'
# deposits cluster no longer changes whether a cell is hit, only (a little) how the
# expected deposits spread, which is then taken on average (a convolution). Checked on
# calogan photons of parametric-5 against every cell drawn photon by photon: layer
# occupancies within 1 % (1 keV and 1 MeV), seven to eight times faster.
_DENSE_PHOTONS = 3.0


def clustered_compound_poisson(rng: np.random.Generator, halo: Halo, mean_deposits: np.ndarray,
                               mean_mev: np.ndarray, grids: list[tuple[np.ndarray, np.ndarray]],
                               photon_length: float) -> np.ndarray:
    """Like :func:`compound_poisson`, but each halo photon makes several deposits along
    its path (Compton scatterings, then photoabsorption), so that the hit cells cluster.

    A photon that reaches a cell deposits there, then flies on: ``halo.interactions``
    deposits on average (geometrically distributed, as when each interaction ends the
    photon with a fixed probability), separated by isotropic exponential flights of mean
    ``halo.interaction_length * photon_length`` mm, projected on the plane of its
    readout layer (they stay in that layer; deposits that leave its grid go to its
    overflow). Where a cell expects few photons (at most ``_DENSE_PHOTONS``) each photon
    and its path is drawn; from the cells that expect many, the deposits spread on
    average (the expected counts convolved with the path's displacement, then Poisson).

    A full simulation's soft photons do this (PDG "Passage of particles through matter",
    34.4: Compton scattering dominates from a few hundred keV to a few MeV, the
    photoelectric effect below), and its far, sparse cells are hit in clusters: in the
    Geant4 reference showers a hit layer-0 strip far from the core has its neighbour hit
    four times as often as independent cells would.

    Args:
        rng: random generator.
        halo: the halo (``interactions``, ``interaction_length``, ``shape``).
        mean_deposits: ``(m, n_voxels + n_layers)`` mean number of deposits per cell (the
            voxels in the geometry's flat order, then each layer's overflow).
        mean_mev: ``(m,)`` mean energy of one deposit, MeV.
        grids: per layer, the cell edges in mm along rows and along columns (uniform).
        photon_length: the medium's photon attenuation length, mm.

    Returns:
        ``(m, n_voxels + n_layers)`` float32 energies, MeV.
    """
    m, n_cols = mean_deposits.shape
    k_mean, step = float(halo.interactions), float(halo.interaction_length * photon_length)
    photons = mean_deposits / k_mean
    n_layers = len(grids)
    n_voxels = n_cols - n_layers
    shapes = [(len(r) - 1, len(c) - 1) for r, c in grids]
    starts = np.cumsum([0] + [a * b for a, b in shapes])
    dense = mean_deposits.copy()
    sparse = np.zeros_like(photons)
    for i, ((rows, cols), (row_edges, col_edges)) in enumerate(zip(shapes, grids, strict=True)):
        sl = slice(starts[i], starts[i + 1])
        few = photons[:, sl] <= _DENSE_PHOTONS
        sparse[:, sl] = np.where(few, photons[:, sl], 0.0)
        mu = np.where(few, 0.0, mean_deposits[:, sl]).reshape(m, rows, cols).astype(np.float32)
        kernel = _path_kernel(float(row_edges[1] - row_edges[0]),
                              float(col_edges[1] - col_edges[0]), k_mean, step)
        a, b = (kernel.shape[0] - 1) // 2, (kernel.shape[1] - 1) // 2
        spread = np.zeros((m, rows + 2 * a, cols + 2 * b), dtype=np.float32)
        term = np.empty_like(mu)
        for (da, db), w in np.ndenumerate(kernel):
            if w > 0:
                np.multiply(mu, np.float32(w), out=term)
                spread[:, da:da + rows, db:db + cols] += term
        inside = spread[:, a:a + rows, b:b + cols]
        dense[:, sl] = inside.reshape(m, -1)
        dense[:, n_voxels + i] += (mu.sum(axis=(1, 2), dtype=np.float64)
                                   - inside.sum(axis=(1, 2), dtype=np.float64))
    counts = _poisson(rng, np.maximum(dense, 0.0))
    parents = _poisson(rng, sparse)
    hit = np.flatnonzero(parents)
    if len(hit):
        f32 = np.float32
        cell = np.repeat(hit, parents.flat[hit])  # one entry per photon
        owner, path = _photon_paths(rng, len(cell), k_mean, step, f32)
        total = len(owner)
        # where each photon reached its cell, in cell units: uniform over it (the grids
        # are uniform), then the path in cell units
        reach = rng.random((2, len(cell)), dtype=f32)
        shower, flat = np.divmod(cell, n_cols)
        layer = np.searchsorted(starts, flat, side="right") - 1
        target = np.empty(total, dtype=np.int64)
        for i, ((rows, cols), (row_edges, col_edges)) in enumerate(zip(shapes, grids,
                                                                       strict=True)):
            mine = np.flatnonzero(layer == i)
            if not len(mine):
                continue
            r0, c0 = np.divmod(flat[mine] - starts[i], cols)
            sel = np.flatnonzero(layer[owner] == i)
            k = np.searchsorted(mine, owner[sel])  # the photon of each deposit, among mine
            dx = f32(row_edges[1] - row_edges[0])
            dy = f32(col_edges[1] - col_edges[0])
            r = np.floor(r0[k] + reach[0, mine][k] + path[0, sel] / dx).astype(np.int64)
            c = np.floor(c0[k] + reach[1, mine][k] + path[1, sel] / dy).astype(np.int64)
            inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
            target[sel] = np.where(inside, starts[i] + r * cols + c, n_voxels + i)
        counts += np.bincount(shower[owner] * n_cols + target,
                              minlength=m * n_cols).reshape(m, n_cols)
    return _gamma_sums(rng, halo, counts, mean_mev)


def _photon_paths(rng: np.random.Generator, n: int, interactions: float, step: float,
                  dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """The deposits of ``n`` halo photons along their paths: a geometric number of them
    per photon (mean ``interactions``), the first where the photon reached its cell, each
    next one an isotropic flight of exponential length (mean ``step`` mm) further on,
    projected on the plane of the layer.

    Returns:
        ``owner`` ``(n_deposits,)``, the photon of each deposit (photons in order), and
        ``path`` ``(2, n_deposits)``, its displacement in mm (rows, columns axes) from
        where its photon reached the cell.
    """
    n_dep = rng.geometric(1.0 / interactions, n) if interactions > 1 else np.ones(n, int)
    total = int(n_dep.sum())
    first = np.cumsum(n_dep) - n_dep
    owner = np.repeat(np.arange(n), n_dep)
    length = rng.standard_exponential(total, dtype=dtype) * dtype(step)
    cos = rng.random(total, dtype=dtype) * dtype(2.0) - dtype(1.0)
    phi = rng.random(total, dtype=dtype) * dtype(2.0 * np.pi)
    length *= np.sqrt(dtype(1.0) - cos * cos)
    length[first] = 0.0
    path = np.cumsum(np.stack([length * np.cos(phi), length * np.sin(phi)]), axis=1)
    path -= path[:, first][:, owner]
    return owner, path


def _poisson(rng: np.random.Generator, mean: np.ndarray) -> np.ndarray:
    """Poisson counts of ``mean`` (any shape), drawn only where the mean is positive."""
    counts = np.zeros(mean.shape, dtype=np.int64)
    where = np.flatnonzero(mean)
    counts.flat[where] = rng.poisson(mean.flat[where])
    return counts


@cache
def _path_kernel(dx: float, dy: float, interactions: float, step: float,
                 n: int = 200_000, tail: float = 1e-4) -> np.ndarray:
    """The expected share of a halo photon's deposits in the cells around the one it
    reached (uniformly), for :func:`clustered_compound_poisson`: ``(2a + 1, 2b + 1)``
    over the row and column offsets, cut where less than ``tail`` of the deposits
    land (renormalised). Computed once per cell size (fixed random stream)."""
    rng = np.random.default_rng(54321)
    owner, path = _photon_paths(rng, n, interactions, step, np.float64)
    x = rng.random(n)[owner] * dx + path[0]
    y = rng.random(n)[owner] * dy + path[1]
    r, c = np.floor(x / dx).astype(int), np.floor(y / dy).astype(int)
    a, b = int(np.abs(r).max()), int(np.abs(c).max())
    kernel = np.zeros((2 * a + 1, 2 * b + 1))
    np.add.at(kernel, (r + a, c + b), 1.0)
    kernel /= kernel.sum()
    keep_r = np.flatnonzero(kernel.sum(axis=1) >= tail)
    keep_c = np.flatnonzero(kernel.sum(axis=0) >= tail)
    ar = max(abs(keep_r[0] - a), abs(keep_r[-1] - a))
    bc = max(abs(keep_c[0] - b), abs(keep_c[-1] - b))
    kernel = kernel[a - ar:a + ar + 1, b - bc:b + bc + 1]
    return kernel / kernel.sum()


@cache
def _gamma_quantiles(shape: float, most: int = 8, size: int = 2048) -> np.ndarray:
    """``(most, size)`` float32: quantiles at ``(i + 0.5) / size`` of Gamma(k shape, 1),
    k = 1..most."""
    from scipy.special import gammaincinv

    q = (np.arange(size) + 0.5) / size
    return np.stack([gammaincinv(k * shape, q) for k in range(1, most + 1)]).astype(np.float32)
