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
- where they deposit follows those spots, each displaced by an
  isotropic flight with an exponential length (mean ``photon_length``): from these
  displaced sources come, per readout layer, the share of the halo photons and the
  centre and spread of their transverse distribution, taken as a product of two
  Laplace (double exponential) distributions, the profile of an exponential flight
  projected on an axis;
- the number of photons in a cell is Poisson with the integral of that density over the
  cell, and each photon deposits a Gamma-distributed energy (shape ``a``, mean ``a
  theta``; ``a = 1``, an exponential, approximates the flat Klein-Nishina spectrum of
  Compton electrons), so the energy of ``k`` photons in a cell is ``Gamma(k a, theta)``.

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

import numpy as np

__all__ = ["Halo", "halo_fraction", "flight", "laplace_cell_probabilities", "halo_deposits"]


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
        length_scale: flight length in units of the medium's ``photon_length``.
        shape: Gamma shape ``a`` of one photon's deposit (1: exponential).
        mean_mev: mean deposit of one photon, MeV; the number of halo photons is the
            energy they carry over this.
        core_mm: transverse spread (mm, added in quadrature) of the sources beyond what
            the spots give.
    """

    near: float = 0.0
    far: float = 0.0
    depth: float = 1.0
    length_scale: float = 1.0
    shape: float = 1.0
    mean_mev: float = 1.0
    core_mm: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.near > 0 or self.far > 0


def halo_fraction(halo: Halo, tau: np.ndarray) -> np.ndarray:
    """Share of a spot's energy that its halo photons carry, at relative depth ``tau``
    (``t / <t>`` of its shower), float32 like ``tau``."""
    f32 = np.float32
    rise = f32(1.0) - np.exp(-np.maximum(tau - f32(1.0), f32(0.0)) * f32(1.0 / halo.depth))
    return f32(halo.near) + f32(halo.far - halo.near) * rise


def flight(rng: np.random.Generator, n: int, length: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ds, du, dv)`` in mm, each ``(n,)`` float32: isotropic flights of exponential
    length with mean ``length`` mm."""
    f32 = np.float32
    ell = rng.standard_exponential(n, dtype=f32) * f32(length)
    cos = rng.random(n, dtype=f32) * f32(2.0) - f32(1.0)
    sin = np.sqrt(np.maximum(f32(1.0) - cos * cos, f32(0.0)))
    phi = rng.random(n, dtype=f32) * f32(2.0 * np.pi)
    return ell * cos, ell * sin * np.cos(phi), ell * sin * np.sin(phi)


def laplace_cell_probabilities(edges: np.ndarray, centre: np.ndarray, scale: np.ndarray
                               ) -> np.ndarray:
    """``(m, n_cells)`` probability of each cell between consecutive ``edges`` (mm) under
    a Laplace distribution of per-shower ``centre`` and ``scale`` (``(m,)``, mm)."""
    x = (edges[None, :] - centre[:, None]) / scale[:, None]
    half = 0.5 * np.exp(-np.abs(x))
    cdf = np.where(x < 0, half, 1.0 - half)
    return np.diff(cdf, axis=1)


def halo_deposits(rng: np.random.Generator, halo: Halo, photons: np.ndarray,
                  centre: np.ndarray, spread: np.ndarray,
                  grids: list[tuple[np.ndarray, np.ndarray]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Deposits of the halo in every cell.

    Args:
        rng: random generator.
        halo: the parameters.
        photons: ``(m, n_layers)`` mean number of halo photons of each shower in each
            readout layer.
        centre: ``(m, n_layers, 2)`` centre of their transverse distribution (mm, rows
            and columns axes).
        spread: ``(m, n_layers, 2)`` its standard deviation along each axis (mm).
        grids: per layer, the cell edges in mm along rows and along columns.

    Returns:
        ``(voxels, overflow)``: ``(m, n_voxels)`` and ``(m, n_layers)`` float32, MeV.
    """
    m, n_layers = photons.shape
    theta = halo.mean_mev / halo.shape
    scale = np.maximum(spread, 1.0) / np.sqrt(2.0)  # Laplace: variance 2 b^2
    lam_parts, lam_out = [], np.empty((m, n_layers))
    for i, (row_edges, col_edges) in enumerate(grids):
        p_rows = laplace_cell_probabilities(row_edges, centre[:, i, 0], scale[:, i, 0])
        p_cols = laplace_cell_probabilities(col_edges, centre[:, i, 1], scale[:, i, 1])
        mu = photons[:, i, None, None] * p_rows[:, :, None] * p_cols[:, None, :]
        lam_parts.append(mu.reshape(m, -1))
        lam_out[:, i] = photons[:, i] * (1.0 - p_rows.sum(axis=1) * p_cols.sum(axis=1))
    lam = np.concatenate([*lam_parts, np.maximum(lam_out, 0.0)], axis=1)
    counts = rng.poisson(lam)
    energy = np.zeros(lam.shape, dtype=np.float32)
    hit = np.flatnonzero(counts)
    if len(hit):
        energy.flat[hit] = rng.standard_gamma(counts.flat[hit] * halo.shape) * theta
    n_voxels = energy.shape[1] - n_layers
    return energy[:, :n_voxels], energy[:, n_voxels:]
