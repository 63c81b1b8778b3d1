"""Energy spots of electromagnetic and hadronic showers, vectorised over many showers.

A shower is a cloud of energy spots: position along the shower axis ``s`` (mm from the
point where the primary enters the medium), transverse position ``(u, v)`` (mm, ``u`` in
the plane of the incidence angle), and energy (MeV). Spots of all showers in a block are
kept in flat arrays with the index of their shower, so every step is one numpy call.

Electromagnetic showers follow GFlash (Grindhammer & Peters): a Gamma longitudinal profile
whose depth of maximum T and shape alpha fluctuate shower by shower, log-normally and
correlated, and a two-component (core + tail) radial profile whose radii and core weight
depend on the relative depth tau = t / <t>. Spots are drawn from a broader profile than
the energy (as GFlash's spot profile is) and carry importance weights, so the soft halo
of a shower is made of many small deposits, as in a full simulation.

References:
    G. Grindhammer and S. Peters, "The Parameterized Simulation of Electromagnetic Showers
    in Homogeneous and Sampling Calorimeters", hep-ex/0001020.
    D. E. Groom, "Energy flow in a hadronic cascade", NIM A 572 (2007) 633 (pi0 fraction).
    R. K. Bock et al., "Parametrization of the longitudinal development of hadronic
    showers in sampling calorimeters", NIM 186 (1981) 533.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from caloforge.simulate._halo import Halo, halo_fraction
from caloforge.simulate._materials import Material
from caloforge.units import MEV_PER_GEV

__all__ = ["PHOTON_CONVERSION_X0", "PHOTON_TMAX_SHIFT", "Spots", "WALK_STEPS",
           "axis_walk_steps", "walk_offsets", "em_showers", "hadron_showers", "mip_tracks",
           "landau_factor"]

# Mean depth (X0) of the first pair conversion of a photon: 9/7 X0 (the high-energy pair
# production cross section 7 / (9 X0), PDG "Passage of particles through matter", 34.4.5).
PHOTON_CONVERSION_X0 = 9.0 / 7.0
# Shift of the shower maximum (X0) of the pair after the conversion, relative to an
# electron of the full energy: a photon shower peaks 1.0 X0 deeper than an electron one
# (t_max = ln(E / E_c) + C, C = -0.5 for electrons, +0.5 for photons, PDG eq. 34.35), of
# which the conversion depth already gives 9/7 X0 on average.
PHOTON_TMAX_SHIFT = 1.0 - PHOTON_CONVERSION_X0


# X0 of depth a shower's centroid walk takes steps over (it stays put after).
WALK_STEPS = 48


@dataclass
class Spots:
    """Energy spots of a block of showers (flat arrays, one entry per spot)."""

    shower: np.ndarray  # int, index of the shower in the block
    s: np.ndarray  # mm along the shower axis
    u: np.ndarray  # mm, transverse, in the plane of the incidence angle
    v: np.ndarray  # mm, transverse, perpendicular to it
    energy: np.ndarray  # MeV
    halo: np.ndarray | None = None  # MeV handed to the soft-photon halo (see ._halo)
    # Longitudinal profiles of the EM showers among the spots (for the halo): arrays
    # "shower", "start" (mm), "alpha", "beta" (1/X0), "tau_scale" (1/X0), "energy" (MeV),
    # one per shower.
    profiles: dict | None = None

    @staticmethod
    def join(parts: list[Spots]) -> Spots:
        joined = Spots(*(np.concatenate([getattr(p, k) for p in parts])
                         for k in ("shower", "s", "u", "v", "energy")))
        if any(p.halo is not None for p in parts):
            joined.halo = np.concatenate([np.zeros_like(p.energy) if p.halo is None else p.halo
                                          for p in parts])
        profiles = [p.profiles for p in parts if p.profiles is not None]
        if profiles:
            joined.profiles = {k: np.concatenate([q[k] for q in profiles]) for k in profiles[0]}
        return joined


def _moyal_quantiles(size: int = 4096) -> np.ndarray:
    """Quantiles of the Moyal distribution at ``(i + 0.5) / size``, i = 0..size-1.

    The Moyal distribution is the classic closed-form approximation of the Landau
    distribution of energy loss in thin layers: its CDF is ``erfc(exp(-x / 2) / sqrt 2)``.
    """
    x = np.linspace(-4.0, 60.0, 16001)
    cdf = np.array([math.erfc(math.exp(-xi / 2) / math.sqrt(2.0)) for xi in x])
    return np.interp((np.arange(size) + 0.5) / size, cdf, x)


_MOYAL = _moyal_quantiles()
# Moyal mean (gamma_E + ln 2) and standard deviation (pi / sqrt 2), to rescale.
_MOYAL_MEAN, _MOYAL_STD = 1.2703628, 2.2214415


def landau_factor(rng: np.random.Generator, n: int, width: float) -> np.ndarray:
    """``(n,)`` positive multiplicative fluctuations, mean ~1, standard deviation
    ``width``, with a Landau-like (Moyal) tail; drawn by table look-up (fast)."""
    table = (1.0 + (width / _MOYAL_STD) * (_MOYAL - _MOYAL_MEAN)).clip(0.02)
    table = table.astype(np.float32)
    i = (rng.random(n, dtype=np.float32) * np.float32(len(table))).astype(np.int32)
    return table[np.minimum(i, len(table) - 1)]


def _normalise(shower: np.ndarray, weight: np.ndarray, total: np.ndarray,
               per_spot: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Scale per-spot weights so that each shower's spots sum to ``total`` (MeV);
    ``per_spot`` (optional) maps a per-shower array to the spots, as ``a[shower]``."""
    sums = np.bincount(shower, weights=weight, minlength=len(total))
    scale = np.where(sums > 0, total / np.where(sums > 0, sums, 1.0), 0.0)
    return (weight * (scale[shower] if per_spot is None else per_spot(scale))).astype(np.float32)


def _spot_counts(energy_gev: np.ndarray, per_gev: float, power: float,
                 minimum: int = 16) -> np.ndarray:
    return np.maximum(minimum, np.rint(per_gev * energy_gev ** power)).astype(np.int64)


def em_showers(rng: np.random.Generator, energy: np.ndarray, start: np.ndarray,
               medium: Material, spots_per_gev: float, spots_power: float = 0.65,
               deposit: np.ndarray | None = None, cell_width: float = 0.6,
               shower: np.ndarray | None = None, depth: float = np.inf,
               depth_spread: float = 0.6, depth_uniform: float = 0.0,
               radius_spread: float = 1.6, t_max_shift: float = 0.0,
               halo: Halo | None = None, max_radius: float = 45.0,
               fluctuation: float = 1.0, radial_power: float = 0.0,
               axis_walk: float = 0.0, axis_walk_power: float = 1.0,
               sampling_correlation: bool = False, shared_walk: bool = False) -> Spots:
    """Spots of electromagnetic showers (GFlash, homogeneous effective medium).

    Args:
        rng: random generator.
        energy: ``(m,)`` energy of each shower in MeV (sets the profile).
        start: ``(m,)`` depth where each shower starts, mm along the axis.
        medium: the (effective) medium.
        spots_per_gev, spots_power: number of spots ``per_gev * (E/GeV)**power``.
        deposit: ``(m,)`` energy the spots carry in total, MeV (default: ``energy``).
        cell_width: relative Landau-like fluctuation of a spot's energy.
        shower: ``(m,)`` index each shower has in the block (default ``arange(m)``).
        depth: thickness of the calorimeter along the axis, mm (the uniform share of
            spots is spread up to there).
        depth_spread: spots' depths follow a Gamma with the energy profile's mean and
            its variance divided by this (< 1: more, smaller spots deep in the shower).
        depth_uniform: share of the spots spread uniformly in depth instead (> 0 needs a
            finite ``depth``).
        t_max_shift: added to the mean depth of maximum, X0 (a calibration).
        radius_spread: spots' radii follow the energy's radial profile stretched by this
            (> 1: more, smaller spots in the halo).
        max_radius: largest spot radius in units of its (stretched) core or tail radius:
            the 1 / r^4 tail of the GFlash profile is cut there (beyond it, a full
            simulation's energy is carried by the soft-photon halo).
        fluctuation: scales GFlash's shower-to-shower spreads of ln T and ln alpha (1: as
            published for homogeneous media; a calibration for a given calorimeter).
        radial_power: radii scaled by ``(E / 10 GeV)^-radial_power`` (0: GFlash as
            published; a calibration of the energy dependence of the lateral width).
        halo: if given, each spot hands the share :func:`._halo.halo_fraction` of its
            energy (at its relative depth) to the soft-photon halo: ``Spots.halo``.
        axis_walk, axis_walk_power: if ``axis_walk`` > 0, the shower's transverse energy
            centroid wanders with depth (see :func:`axis_walk_steps`): variance per axis
            ``axis_walk * (E/GeV)^-axis_walk_power`` mm^2 per X0 of depth. Its steps are
            kept in ``Spots.profiles["walk"]`` (zeros without a walk).
        sampling_correlation: correlate ln T and ln alpha as GFlash's fit for sampling
            calorimeters does (``0.784 - 0.023 ln y``) instead of the homogeneous-media
            one (``0.705 - 0.023 ln y``).
        shared_walk: the showers of one ``shower`` index follow one walk, that of their
            summed energy (a photon's conversion pair walks as the photon).
    """
    m = len(energy)
    shower = np.arange(m) if shower is None else shower
    deposit = energy if deposit is None else deposit
    e_gev = np.maximum(energy / MEV_PER_GEV, 1e-3)
    z = medium.Z
    ln_y = np.maximum(np.log(energy / medium.critical_energy), 1.6)

    # Longitudinal: GFlash homogeneous-media fluctuated parameters.
    mean_ln_t = np.log(ln_y - 0.812 + t_max_shift)
    mean_ln_a = np.log(0.81 + (0.458 + 2.26 / z) * ln_y)
    # The fitted fluctuations blow up below ~1 GeV (ln y < 4.5), outside the fit's range:
    # hold them at their values there.
    sig_ln_t = fluctuation / np.maximum(-1.4 + 1.26 * ln_y, 4.27)
    sig_ln_a = fluctuation / np.maximum(-0.58 + 0.86 * ln_y, 3.29)
    # correlation of ln T and ln alpha: GFlash's fit for homogeneous media, or the one
    # for sampling calorimeters (Grindhammer & Peters, hep-ex/0001020)
    rho = np.clip((0.784 if sampling_correlation else 0.705) - 0.023 * ln_y, 0.0, 1.0)
    g1, g2 = rng.standard_normal((2, m))
    c1, c2 = np.sqrt((1 + rho) / 2), np.sqrt((1 - rho) / 2)
    t_max = np.exp(mean_ln_t + sig_ln_t * (c1 * g1 + c2 * g2))
    alpha = np.maximum(np.exp(mean_ln_a + sig_ln_a * (c1 * g1 - c2 * g2)), 1.3)
    # A rare draw with alpha -> 1 would make an almost flat profile (beta -> 0); real
    # showers fall off at least as exp(-t / 4 X0) behind the maximum.
    beta = np.maximum((alpha - 1.0) / t_max, 0.25)
    t_max = (alpha - 1.0) / beta
    alpha_mean = np.exp(mean_ln_a)
    # tau = t / <t> of this shower, scaled to the mean alpha as in GFlash.
    tau_scale = (alpha - 1.0) / alpha * alpha_mean / np.maximum(alpha_mean - 1.0, 0.05) / t_max

    # Radial parameters (GFlash homogeneous), in Moliere radii.
    ln_e = np.log(e_gev)
    z1 = 0.0251 + 0.00319 * ln_e
    z2 = 0.1162 - 0.000381 * z
    k1 = 0.659 - 0.00309 * z
    k4 = 0.3585 + 0.0412 * ln_e
    p1 = 2.632 - 0.00094 * z
    p2 = 0.401 + 0.00187 * z
    p3 = 1.313 - 0.0686 * ln_e

    counts = _spot_counts(e_gev, spots_per_gev, spots_power)
    # Each shower's spots: a Gamma-distributed share, then a uniform share (stratified).
    n_uniform = np.rint(depth_uniform * counts).astype(np.int64)
    n_drawn = counts - n_uniform
    n_gamma, n = int(n_drawn.sum()), int(counts.sum())
    f32 = np.float32

    def per_spot(values: np.ndarray) -> np.ndarray:
        """``values`` (one per shower) for every spot: the Gamma-drawn spots come first,
        shower by shower, then the uniform ones (a repetition: several times faster
        than a gather with the spots' shower index)."""
        if n_gamma == n:
            return np.repeat(values, n_drawn)
        return np.concatenate([np.repeat(values, n_drawn), np.repeat(values, n_uniform)])

    idx = per_spot(np.arange(m, dtype=np.int32))

    # Spots are drawn from a broader proposal than the energy profile f: a Gamma with
    # the same mean and the variance / depth_spread, mixed with a uniform share
    # ``depth_uniform`` over the calorimeter depth (so that the deep, soft end of the
    # shower is made of many small deposits). Each spot's weight is f / proposal.
    # (Shape kept >= 1.5 where the profile allows: a proposal diverging at t = 0 would
    # waste the few spots of a low-energy shower.)
    a_g = np.maximum(depth_spread * alpha, np.minimum(alpha, 1.5))
    b_g = a_g * beta / alpha
    reach = np.maximum((depth - start) / medium.radiation_length, 1.0)
    log_norm_f = alpha * np.log(beta) - gammaln(alpha)
    share = n_uniform / counts  # the uniform share actually drawn for each shower
    log_norm_g = a_g * np.log(b_g) - gammaln(a_g) + np.log1p(-share)
    per = {  # per-shower values, float32, repeated for every spot
        "am1": alpha - 1.0, "beta": beta, "agm1": a_g - 1.0, "b_g": b_g,
        "log_norm_f": log_norm_f, "log_norm_g": log_norm_g,
        "uniform_density": share / reach,
        "tau_scale": tau_scale, "z1": z1, "k4": k4, "inv_p3": 1.0 / p3,
    }
    per = {k: per_spot(v.astype(f32)) for k, v in per.items()}
    t = np.empty(n, dtype=f32)
    t[:n_gamma] = rng.standard_gamma(np.repeat(a_g.astype(f32), n_drawn), n_gamma, dtype=f32)
    t[:n_gamma] *= np.repeat((1.0 / b_g).astype(f32), n_drawn)
    t[n_gamma:] = rng.random(n - n_gamma, dtype=f32) * np.repeat(reach.astype(f32), n_uniform)
    np.maximum(t, f32(1e-3), out=t)
    if depth_spread == 1.0 and n_gamma == n:
        w_long = f32(1.0)  # the spots follow the energy profile itself
    else:
        ln_t = np.log(t)
        log_f = per["log_norm_f"] + per["am1"] * ln_t - per["beta"] * t
        proposal = (np.exp(per["log_norm_g"] + per["agm1"] * ln_t - per["b_g"] * t)
                    + per["uniform_density"])
        w_long = np.exp(log_f) / proposal

    tau = t * per["tau_scale"]
    x = tau - f32(0.645)
    r_core = per["z1"] + f32(z2) * tau
    # GFlash's tail radius also grows towards tau -> 0 (a fit where little energy is);
    # the start of a shower is a few collimated particles, so hold it at its tau = k2
    # value before: the lateral width then grows with depth, as in full simulation.
    r_tail = f32(k1) * (np.exp(f32(-2.59) * np.maximum(x, f32(0.0))) + np.exp(per["k4"] * x))
    q = (f32(p2) - tau) * per["inv_p3"]
    p_core = f32(p1) * np.exp(q - np.exp(q))
    radius = np.where(rng.random(n, dtype=f32) < p_core, r_core, r_tail)
    # Radii from the same two-component shape stretched by radius_spread; the weight is
    # the density ratio, between 1 / spread^2 (far out) and spread^2 (on the axis).
    w2 = f32(radius_spread * radius_spread)
    u_max = max_radius**2 / (1.0 + max_radius**2)
    u2 = rng.random(n, dtype=f32) * f32(u_max)
    ratio = u2 / (f32(1.0) - u2)  # (r / (spread R))^2
    if radius_spread == 1.0:
        w_rad = f32(1.0)
    else:
        w_rad = (w2 * (ratio + f32(1.0)) / (w2 * ratio + f32(1.0))) ** 2 / w2
    r = radius * np.sqrt(ratio) * f32(radius_spread * medium.moliere_radius)
    if radial_power:
        r *= per_spot(((e_gev / 10.0) ** -radial_power).astype(f32))
    phi = rng.random(n, dtype=f32) * f32(2 * np.pi)

    weight = w_long * w_rad * landau_factor(rng, n, cell_width)
    energy_spot = _normalise(idx, weight, deposit, per_spot)
    s = per_spot(start.astype(f32)) + t * f32(medium.radiation_length)
    u, v = r * np.cos(phi), r * np.sin(phi)
    walk = None
    if axis_walk > 0:
        if shared_walk:  # one walk per entry of ``shower``, followed by all its profiles
            _, inverse = np.unique(shower, return_inverse=True)
            group_gev = np.maximum(np.bincount(inverse, weights=energy) / MEV_PER_GEV, 1e-3)
            walk = axis_walk_steps(rng, axis_walk * group_gev**-axis_walk_power)[inverse]
        else:
            walk = axis_walk_steps(rng, axis_walk * e_gev**-axis_walk_power)
        du, dv = walk_offsets(walk, idx, t)
        u, v = u + du, v + dv
    spots = Spots(per_spot(shower), s, u, v, energy_spot)
    if halo is not None and halo.enabled:
        spots.halo = energy_spot * halo_fraction(halo, tau)
        spots.energy = energy_spot - spots.halo
        spots.profiles = {"shower": shower, "start": np.asarray(start, dtype=np.float64),
                          "alpha": alpha, "beta": beta, "tau_scale": tau_scale,
                          "energy": np.asarray(energy, dtype=np.float64),
                          "halo": np.bincount(idx, weights=spots.halo, minlength=m),
                          "walk": (np.zeros((m, 2, WALK_STEPS), np.float32) if walk is None
                                   else walk)}
    return spots


def axis_walk_steps(rng: np.random.Generator, variance: np.ndarray,
                    n_steps: int = WALK_STEPS) -> np.ndarray:
    """The steps of a random walk of each shower's energy centroid with depth:
    ``(m, 2, n_steps)`` float32, the transverse step (mm, per axis) in each whole X0 from
    the shower's start, of variance ``variance[shower]`` mm^2 (the walk starts on the
    axis and stays put after ``n_steps``; :func:`walk_offsets` gives its positions).

    The charged particles that carry the energy at a given depth descend from a few
    early, hard ones, each deflected by multiple scattering and by the opening angles of
    bremsstrahlung and pair production; the energy centroid of a full simulation's
    shower therefore wanders away from the incident axis as the shower develops, by an
    amount that falls with the shower energy (the number of particles grows with it) and
    is correlated between depths. A path whose variance grows linearly with depth is the
    simplest such model: the correlation between the centroids at depths t1 < t2 is
    sqrt(t1 / t2).
    """
    f32 = np.float32
    m = len(variance)
    steps = rng.standard_normal((2, m, n_steps), dtype=f32)
    steps *= np.sqrt(np.asarray(variance, dtype=f32))[None, :, None]
    return steps.transpose(1, 0, 2)


def walk_offsets(steps: np.ndarray, idx: np.ndarray, t: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Transverse displacement (mm, two float32 arrays shaped like ``t``) of showers
    ``idx`` at depths ``t`` (X0 from each shower's start) on their walks of ``steps``
    (:func:`axis_walk_steps`): linear within each X0, constant after the last step."""
    f32 = np.float32
    n_steps = steps.shape[2]
    # where the path is at the start of each X0, then the step it takes in it
    start = np.cumsum(steps, axis=2) - steps
    tc = np.minimum(t, f32(n_steps - 1e-3))
    j = tc.astype(np.int32)
    frac = tc - j.astype(f32)  # float32 (an int32 operand would promote to float64)
    flat = idx * (2 * n_steps) + j  # one gather index per spot, shared by both axes
    start, steps = start.reshape(-1), steps.reshape(-1)
    return (start.take(flat) + frac * steps.take(flat),
            start.take(flat + n_steps) + frac * steps.take(flat + n_steps))


def mip_tracks(rng: np.random.Generator, length: np.ndarray, medium: Material,
               step: float = 10.0, shower: np.ndarray | None = None,
               landau_width: float = 0.8, scatter: float = 0.7) -> Spots:
    """Spots along straight minimum-ionising tracks from depth 0 to ``length`` (mm).

    Every ``step`` mm of track leaves ``mip_dedx * step`` MeV on average, with Landau-like
    fluctuations; ``scatter`` (mm) smears the track transversally (multiple scattering).
    """
    m = len(length)
    shower = np.arange(m) if shower is None else shower
    counts = np.ceil(np.maximum(length, 0.0) / step).astype(np.int64)
    idx = np.repeat(np.arange(m), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    k = np.arange(len(idx)) - first
    seg = np.minimum(step, length[idx] - k * step)
    s = (k + 0.5) * step
    energy = medium.mip_dedx * seg * landau_factor(rng, len(idx), landau_width)
    u, v = rng.normal(0.0, scatter, (2, len(idx)))
    return Spots(shower[idx], s.astype(np.float32), u.astype(np.float32),
                 v.astype(np.float32), energy.astype(np.float32))


def hadron_showers(rng: np.random.Generator, energy: np.ndarray, medium: Material,
                   depth: float, spots_per_gev: float, em_spots_per_gev: float,
                   spots_power: float = 0.65, halo: Halo | None = None
                   ) -> tuple[Spots, np.ndarray]:
    """Spots of charged-pion showers: a track up to an exponential first interaction,
    then an electromagnetic (pi0) part and a wider, deeper hadronic part.

    Args:
        energy: ``(m,)`` incident energies in MeV.
        medium: the effective medium.
        depth: thickness of the calorimeter along the axis in mm (tracks stop there).
        spots_per_gev, em_spots_per_gev: spot densities of the hadronic and EM parts.
        halo: the soft-photon halo of the EM part (see :func:`em_showers`).

    Returns:
        The spots, and ``(m,)`` depth of the first interaction in mm (``inf`` for a pion
        that crosses the whole calorimeter without interacting: punch-through).
    """
    m = len(energy)
    lam = medium.interaction_length
    first = rng.exponential(lam, m)
    # A slow pion ranges out (E / <dE/dx>) before it can cross the calorimeter.
    reach = np.minimum(depth, energy / medium.mip_dedx)
    interacts = first < reach
    first = np.where(interacts, first, np.inf)
    parts = [mip_tracks(rng, np.minimum(first, reach), medium)]
    # The pion keeps ionising after the first interaction only as part of the cascade.
    idx = np.flatnonzero(interacts)
    if len(idx):
        # What the track did not take before the interaction goes into the cascade.
        e = np.maximum(energy[idx] - medium.mip_dedx * first[idx], 1.0)
        e_gev = e / MEV_PER_GEV
        # Mean pi0 (electromagnetic) fraction, Groom: 1 - (E / E0)^(k - 1), E0 = 1 GeV,
        # k = 0.82; event-by-event fluctuations from a Beta distribution.
        f_mean = np.clip(1.0 - np.maximum(e_gev, 1.0) ** (0.82 - 1.0), 0.05, 0.9)
        conc = 6.0
        f_em = rng.beta(f_mean * conc, (1 - f_mean) * conc)
        e_em = f_em * e
        # Invisible energy (nuclear binding, neutrinos, slow neutrons): h/e ~ 0.6.
        visible = np.clip(0.62 * np.exp(rng.normal(0.0, 0.18, len(idx))), 0.2, 0.95)
        e_had = (1.0 - f_em) * e * visible
        # pi0 photons convert within ~ 9/7 X0 of the interaction point.
        em_start = first[idx] + rng.exponential(PHOTON_CONVERSION_X0, len(idx)) \
            * medium.radiation_length
        has_em = e_em > 50.0
        if np.any(has_em):
            parts.append(em_showers(rng, e_em[has_em], em_start[has_em], medium,
                                    em_spots_per_gev, spots_power, cell_width=0.7,
                                    shower=idx[has_em], halo=halo))
        parts.append(_hadronic_part(rng, e_had, e_gev, first[idx], medium,
                                    spots_per_gev, spots_power, idx))
    spots = Spots.join(parts)
    # Energy conservation: Landau tails of a short track must not exceed what it had.
    total = np.bincount(spots.shower, weights=spots.energy, minlength=m)
    if spots.halo is not None:
        total += np.bincount(spots.shower, weights=spots.halo, minlength=m)
    scale = np.where(total > energy, energy / np.maximum(total, 1e-12), 1.0)
    spots.energy = (spots.energy * scale[spots.shower]).astype(np.float32)
    if spots.halo is not None:
        spots.halo = (spots.halo * scale[spots.shower]).astype(np.float32)
    return spots, first


def _hadronic_part(rng, deposit, e_gev, start, medium, spots_per_gev, spots_power, shower):
    """The purely hadronic (non-pi0) deposits: deep and wide, few large fluctuations."""
    m = len(deposit)
    lam = medium.interaction_length
    # Longitudinal: Gamma in units of lambda_I from the interaction point; the maximum
    # moves ~0.2 lambda per e-fold of energy (Bock et al.), the shape fluctuates.
    shape = 1.6 * np.exp(rng.normal(0.0, 0.2, m))
    mode = (0.25 + 0.2 * np.log(np.maximum(e_gev, 1.0))) * np.exp(rng.normal(0.0, 0.25, m))
    scale = mode / np.maximum(shape - 1.0, 0.2)
    counts = _spot_counts(np.maximum(deposit / MEV_PER_GEV, 0.05), spots_per_gev, spots_power,
                          minimum=6)
    idx = np.repeat(np.arange(m), counts)
    n = len(idx)
    t = rng.standard_gamma(shape[idx]) * scale[idx]  # in lambda_I
    # Radial: narrow core (charged hadrons) and a wide tail (neutrons, soft photons),
    # both growing with depth.
    grow = 1.0 + 0.6 * t
    core = rng.random(n) < 0.55
    radius = np.where(core, 0.045, 0.22) * lam * grow
    u = np.minimum(rng.random(n), 0.999)
    r = radius * np.sqrt(u / (1.0 - u))
    phi = rng.random(n) * 2 * np.pi
    weight = landau_factor(rng, n, 1.2)
    energy = _normalise(idx, weight, deposit)
    s = start[idx] + t * lam
    return Spots(shower[idx], s.astype(np.float32), (r * np.cos(phi)).astype(np.float32),
                 (r * np.sin(phi)).astype(np.float32), energy)
