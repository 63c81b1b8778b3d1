"""The embedded parametric reference simulator (GFlash-style, pure numpy).

It is fast and behaves like a calorimeter (fluctuating longitudinal and radial profiles,
photons converting late, Landau-like cell fluctuations, hadron showers with exponential
first interactions and punch-through), but it is a parametrisation: files and reports call
it ``"parametric"``, never Geant4.

Each geometry is described by a :class:`Calorimeter`: an effective medium, the depth
boundaries of its readout layers along the detector normal, cell sizes in mm, and how the
image is centred. Showers are made as energy spots (see :mod:`._showers`) binned into
voxels with one ``np.bincount`` per block.

Reproducibility: showers are simulated in blocks of a fixed size, each with its own random
stream ``SeedSequence(seed, spawn_key=(block,))``, so the same seed gives the same showers
whatever the chunk size or the number of threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache

import numpy as np

from caloforge.data.showers import ShowerSet
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry, get_geometry
from caloforge.simulate._halo import (
    Halo,
    clustered_compound_poisson,
    compound_poisson,
    depth_flight,
    halo_expectation,
    halo_fraction,
    path_variance,
)
from caloforge.simulate._materials import LEAD, LIQUID_ARGON, SILICON, TUNGSTEN, Material, mix
from caloforge.simulate._showers import (
    PHOTON_CONVERSION_X0,
    PHOTON_TMAX_SHIFT,
    Spots,
    em_showers,
    hadron_showers,
    walk_offsets,
)
from caloforge.units import MEV_PER_GEV

# Energy a positron's annihilation adds to its shower: two photons of the electron's rest
# energy, 0.51099895 MeV (PDG).
ANNIHILATION_MEV = 2 * 0.51099895

__all__ = ["SIMULATOR_VERSION", "SIMULATOR_VERSIONS", "Calorimeter", "check_version",
           "calorimeter", "simulate_chunks", "simulate_block"]

# Written to every file as ``generator_version``, so that a model card can say which
# showers a model learned; every version stays selectable (``version=``), so that a
# model's figures can be reproduced against the showers it learned. 3: radially
# symmetric halo, the wandering shower centroid, denser spots (calibrated on the
# Geant4 11.4 showers' high-level features); 2: the soft-photon halo and the calibration
# on Geant4 11.4 (electromagnetic physics, data-free models) showers; 1 (files without
# the attribute, no longer available): the first GFlash-style version.
SIMULATOR_VERSIONS = ("parametric-2", "parametric-3", "parametric-4", "parametric-5")
SIMULATOR_VERSION = SIMULATOR_VERSIONS[-1]

# Largest chunk handed out, in voxel values (float32): 32 M values = 128 MB.
_MAX_CHUNK_VALUES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Calorimeter:
    """How the parametric simulator sees a geometry.

    Attributes:
        geometry: the readout.
        medium: effective homogeneous medium of the sampling structure.
        layer_edges: ``(n_layers + 1,)`` readout-layer boundaries in mm along the detector
            normal, from the point where the primary enters the medium; deposits before
            the first edge (dead material) or after the last (leakage) are lost.
        cell_mm: ``(n_layers, 2)`` cell sizes in mm along rows and columns.
        centring: ``"beam"`` (primary at the grid centre), ``"cell"`` (impact point spread
            over the central cell, as a cluster centred on its hottest cell) or
            ``"barycentre"`` (image centred on the shower's energy barycentre).
        jitter_mm: half-width of the uniform impact-point spread (rows, cols) in mm.
        spots_per_gev, spots_power: spot count ``per_gev * (E/GeV)**power`` of an EM shower.
        t_max_shift: shift of the mean depth of the EM shower maximum in X0, a calibration
            of the effective-medium profile to a geometry's full-simulation layer
            fractions (0: GFlash as published).
        depth_spread, depth_uniform, radius_spread: how much broader than the energy the
            spots are spread (see :func:`._showers.em_showers`).
        max_radius: where the spots' radial profile is cut, in units of its radii.
        cell_width: relative Landau-like fluctuation of one spot's energy.
        fluctuation, radial_power: calibrations of the longitudinal fluctuations and of
            the energy dependence of the lateral width (see :func:`._showers.em_showers`).
        photon_t_max_shift: added to ``t_max_shift`` for photons, X0 (see
            :data:`._showers.PHOTON_TMAX_SHIFT`).
        resolution: stochastic term a of the total-deposit fluctuation, ``a / sqrt(E/GeV)``.
        constant_term: its constant term, added in quadrature.
        loss: mean fraction of the energy escaping backwards (albedo).
        halo: the soft-photon halo of EM showers (see :mod:`._halo`).
        axis_walk: the wandering of an EM shower's energy centroid with depth (see
            :func:`._showers.axis_walk_steps`): variance per axis in Moliere radii
            squared per X0 of depth, at 1 GeV; 0: none.
        axis_walk_power: that variance falls as ``(E/GeV)^-axis_walk_power``.
        photon_pair_split: a photon's shower is two electron showers from its conversion
            point, sharing its energy by the Bethe-Heitler spectrum and following one
            centroid walk, that of the photon's energy (else one shower of the full
            energy).
        halo_follows_walk: the halo's photons leave the wandering shower (its walk at
            each depth, weighted as the photons reaching each layer are) instead of the
            incident axis.
        sampling_correlation: ln T and ln alpha correlate as in GFlash's fit for sampling
            calorimeters instead of the homogeneous-media one.
        escape_fluctuates: the energy an EM shower loses (the halo's photons that leave
            through the front or back, plus ``loss``) is drawn shower by shower, Gamma-
            distributed about its mean with the spread ``resolution / sqrt(E/GeV)`` (+)
            ``constant_term``; else the halo's loss is its mean and the spread comes from
            a separate Gamma term of mean ``loss`` plus half of it (parametric-2 to -4).
        positron_annihilation: a positron's shower deposits its kinetic energy and the
            1.022 MeV of its annihilation (two 511 keV photons).
        block_size: showers per random stream (fixes reproducibility; do not change).
    """

    geometry: Geometry
    medium: Material
    layer_edges: tuple[float, ...]
    cell_mm: tuple[tuple[float, float], ...]
    centring: str = "beam"
    jitter_mm: tuple[float, float] = (0.0, 0.0)
    spots_per_gev: float = 30.0
    spots_power: float = 0.65
    t_max_shift: float = 0.0
    depth_spread: float = 0.6
    depth_uniform: float = 0.1
    radius_spread: float = 1.6
    max_radius: float = 45.0
    cell_width: float = 0.6
    fluctuation: float = 1.0
    radial_power: float = 0.0
    photon_t_max_shift: float = PHOTON_TMAX_SHIFT
    resolution: float = 0.03
    loss: float = 0.008
    constant_term: float = 0.002
    halo: Halo = Halo()
    axis_walk: float = 0.0
    axis_walk_power: float = 1.0
    halo_follows_walk: bool = False
    sampling_correlation: bool = False
    photon_pair_split: bool = False
    escape_fluctuates: bool = False
    positron_annihilation: bool = False
    block_size: int = 1000

    @property
    def depth(self) -> float:
        return float(self.layer_edges[-1])

    @property
    def cell_edges(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per layer, cell edges in mm along rows and columns (grid centred on 0)."""
        return _cell_edges(self)


@cache
def _cell_edges(cal: Calorimeter) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for layer, (dx, dy) in zip(cal.geometry.layers, cal.cell_mm, strict=True):
        rows, cols = layer.shape
        out.append(((np.arange(rows + 1) - rows / 2) * dx, (np.arange(cols + 1) - cols / 2) * dy))
    return out


# The soft-photon halo of electromagnetic showers (see ._halo), calibrated on the
# occupancy and cell-energy spectrum of Geant4 11.4 (electromagnetic physics, data-free
# models) showers in the calogan geometry; the flight length scales with each medium's
# photon attenuation length, so the same halo serves every geometry.
EM_HALO = Halo(near=0.053, far=0.44, depth=1.5, length_scale=1.5, soft_share=0.54,
               soft_length=0.29, shape=2.0, mean_mev=0.75, core_mm=13.0, spread_power=0.02,
               tail_share=0.2, tail_scale=2.0)

# parametric-3: what a classifier saw first in parametric-2 against the same Geant4
# showers, calibrated away on their high-level features per energy bin (calogan e+,
# 1-3 / 3-10 / 10-30 / 30-100 GeV; the same physics in every geometry, lengths scaled by
# each medium's):
# - the halo's transverse profile is radially symmetric (isotropic flights): the
#   product of two Laplace distributions hit the far layer-1 cells on the axes through
#   the core 27 % more often than Geant4 (0.97 against 0.76), the diagonal ones as often;
# - its broad tail (20 % of the halo) is narrower, 1.5 instead of 2 times the spread:
#   parametric-2 put 0.2 % of the energy beyond +-240 mm (Geant4: 0.09 %), so the deposit
#   in the grid was 0.13 % low and layer 1 too wide;
# - the shower's energy centroid wanders with depth (a random walk whose variance falls
#   as 1 / E, :func:`._showers.axis_walk_steps`; 0.75 mm^2 per X0 at 1 GeV in calogan):
#   with only the spots' sampling noise, the centroid in layer 1 and the balance of its
#   two hottest cells (E_ratio) fluctuated less than in Geant4 once the spots are dense;
# - 2.6 times as many spots per GeV, the GFlash radial tail cut at 4.25 instead of 5
#   radii: fewer, larger spots far out made the layer-1 width fluctuate up to 1.7 times
#   as much as Geant4's; and more of them deep in the shower (depth_spread 0.7 instead of
#   0.8), where layer 2 had 10 % too few cells hit;
# - the halo's share, depth dependence, photon deposit and soft flight length refitted
#   (same model), and on calogan 0.034 % more energy lost (the grid now holds what the
#   halo's tail lost).
EM_HALO_3 = replace(EM_HALO, radial=True, near=0.061, far=0.5, depth=2.2,
                    length_scale=1.33, soft_share=0.53, soft_length=0.323, mean_mev=0.784,
                    core_mm=15.0, tail_share=0.2, tail_scale=1.5)
EM_AXIS_WALK_3 = 0.75 / 35.4**2  # Moliere radii^2 per X0 at 1 GeV (calogan: R_M = 35.4 mm)


def _parametric_3(cal: Calorimeter) -> Calorimeter:
    """The parametric-3 calibration of a geometry's parametric-2 description."""
    dense = cal.geometry.name != "clic51"  # clic51 already has 400 spots per GeV
    loss = cal.loss + 0.00034 if cal.geometry.name == "calogan" else cal.loss
    return replace(cal, halo=EM_HALO_3, axis_walk=EM_AXIS_WALK_3,
                   spots_per_gev=cal.spots_per_gev * (2.6 if dense else 1.0),
                   depth_spread=min(cal.depth_spread, 0.7),
                   max_radius=min(cal.max_radius, 4.25), loss=loss)


# parametric-4: the shower-to-shower fluctuations a classifier still used in parametric-3,
# calibrated on the same Geant4 showers (calogan e+, per energy bin):
# - the centroid's walk falls as E^-1.5 instead of 1 / E, 3.0 mm^2 per X0 at 1 GeV in
#   calogan (0.75 before): the spread of the layer-1 centroid was 25-45 % low at 1-10 GeV
#   and 18 % high at 30-100 GeV, and with it the balance of the two hottest cells
#   (E_ratio_1, 11 standard errors high at 30-100 GeV);
# - the halo's photons leave the wandering shower, not the incident axis;
# - ln T and ln alpha of the longitudinal profile correlate as GFlash's fit for sampling
#   calorimeters has it (0.784 - 0.023 ln y instead of the homogeneous 0.705 - 0.023 ln
#   y), the published value for a sampling calorimeter like these: the layer-2 energy of
#   30-100 GeV showers fluctuates 1.6 times as much (in log) as Geant4's, and this narrows
#   it a little (1.5 times);
# - a photon's shower is its conversion pair's: two electron showers from the conversion
#   point sharing the energy by the Bethe-Heitler spectrum, with no photon-specific
#   shift of their maxima (parametric-3: one shower of the full energy from the
#   conversion point, its maximum 0.4 X0 earlier than an electron's in calogan and
#   PHOTON_TMAX_SHIFT elsewhere): the photons' layer-2 fraction was 23 % low (0.00165
#   against 0.00214) and layer 0 7 % low; both within 7 % now. The pair's two showers
#   follow one centroid walk (that of the photon's energy): with a walk each, the
#   centroid of 30-100 GeV photon showers wandered 14 % less than Geant4's.
EM_AXIS_WALK_4 = 3.0 / 35.4**2  # Moliere radii^2 per X0 at 1 GeV (calogan: R_M = 35.4 mm)


def _parametric_4(cal: Calorimeter) -> Calorimeter:
    """The parametric-4 calibration of a geometry's parametric-2 description."""
    return replace(_parametric_3(cal), axis_walk=EM_AXIS_WALK_4, axis_walk_power=1.5,
                   halo_follows_walk=True, sampling_correlation=True,
                   photon_pair_split=True, photon_t_max_shift=0.0)


# parametric-5: the halo's photons make several deposits each. In the Geant4 showers the
# far, sparse cells are hit in clusters (a hit layer-0 strip in the outer rows has its
# neighbour hit 4.5 times as often as independent cells would at 1-3 GeV, 2.2 times at
# 3-10 GeV; the layer-1 cells of the outer ring 4 and 2.2 times), so the number of far
# cells hit fluctuates from shower to shower far more than independent deposits allow
# (layer-0 outer rows, 1-3 GeV: 6.6 +- 4.5 cells against the parametric-4 6.6 +- 2.8).
# A soft photon Compton-scatters a few times before the photoelectric effect absorbs it,
# depositing at each interaction (see _halo.clustered_compound_poisson); where the
# photons arrive is narrower by the spread of their own paths, and the halo's share,
# deposit and reach were refitted (Nelder-Mead, calogan e+, per energy bin, on the
# occupancy of each layer at 1 keV and 1 MeV, its spread, the neighbour-hit rates and the
# layer-0 and layer-1 widths).
EM_HALO_5 = replace(EM_HALO_3, interactions=2.0357, interaction_length=0.1519,
                    mean_mev=0.5234, near=0.0501, far=0.6208, core_mm=12.9758,
                    length_scale=1.3152, shape=1.9569)


def _parametric_5(cal: Calorimeter) -> Calorimeter:
    """The parametric-5 calibration of a geometry's parametric-2 description."""
    cal = replace(_parametric_4(cal), halo=EM_HALO_5, positron_annihilation=True)
    if cal.geometry.name == "calogan":  # calibrated on the Geant4 showers there
        cal = replace(cal, escape_fluctuates=True, loss=0.0009, resolution=0.003,
                      constant_term=0.0006)
    return cal


def _calogan(geometry: Geometry) -> Calorimeter:
    # 80 x (2 mm Pb + 4 mm LAr), z in [-240, 240] mm; the readout layer of a deposit is
    # set by its z; the shower starts at the front face.
    medium = mix([(LEAD, 2.0), (LIQUID_ARGON, 4.0)], "Pb/LAr")
    front = -240.0
    edges = [layer.depth[0] - front for layer in geometry.layers]
    edges.append(geometry.layers[-1].depth[1] - front)
    # Calibrated on Geant4 11.4 (electromagnetic physics, data-free models) e+ and photon
    # showers in this geometry, 1-100 GeV: t_max_shift (the effective-medium GFlash
    # profile 0.2 X0 deeper) gives the layer fractions 0.196 / 0.802 / 0.0015 of e+;
    # photon_t_max_shift those of photons; the spots follow the energy closely (the far,
    # soft deposits are the halo's), with small fluctuations (the core cells of a full
    # simulation are the sum of many particles); loss and resolution give its deposited
    # fraction 0.997 and spread 0.1-0.3%.
    return Calorimeter(geometry, medium, tuple(edges),
                       tuple(layer.cell_size for layer in geometry.layers),
                       spots_per_gev=50.0, t_max_shift=0.2, depth_spread=0.8,
                       depth_uniform=0.0, radius_spread=1.5, max_radius=5.0, cell_width=0.3,
                       photon_t_max_shift=-0.4, loss=0.0, resolution=0.003,
                       constant_term=0.0005, fluctuation=0.85, halo=EM_HALO)


def _atlas89(geometry: Geometry) -> Calorimeter:
    # Lead/LAr accordion as an effective medium; depths are in X0 from the front of the
    # ~2 X0 of dead material (cryostat, solenoid) that precedes the presampler.
    medium = mix([(LEAD, 1.5), (LIQUID_ARGON, 4.2)], "Pb/LAr accordion")
    x0 = medium.radiation_length
    edges = [layer.depth[0] * x0 for layer in geometry.layers]
    edges.append(geometry.layers[-1].depth[1] * x0)
    # eta x phi cells at eta ~ 0: d_x = R d_eta, d_y = R d_phi, R the radius at the
    # layer's mid-depth, the calorimeter starting at R = 1.5 m.
    cells = []
    for layer in geometry.layers:
        radius = 1500.0 + ((layer.depth[0] + layer.depth[1]) / 2 - edges[0] / x0) * x0
        cells.append((layer.cell_size[0] * radius, layer.cell_size[1] * radius))
    middle = cells[2]
    return Calorimeter(geometry, medium, tuple(edges), tuple(cells), centring="cell",
                       jitter_mm=(middle[0] / 2, middle[1] / 2), spots_per_gev=30.0,
                       max_radius=4.0, halo=EM_HALO)


def _clic51(geometry: Geometry) -> Calorimeter:
    # Si-W ECAL: per 5.1 mm layer ~3 mm of W and ~2.1 mm of silicon, readout and support
    # (taken as silicon), 0.88 X0 per layer, ~22 X0 in all.
    medium = mix([(TUNGSTEN, 3.0), (SILICON, 2.1)], "W/Si")
    edges = [layer.depth[0] for layer in geometry.layers]
    edges.append(geometry.layers[-1].depth[1])
    return Calorimeter(geometry, medium, tuple(edges),
                       tuple(layer.cell_size for layer in geometry.layers),
                       centring="barycentre", jitter_mm=(2.55, 2.55), spots_per_gev=400.0,
                       spots_power=0.6, max_radius=4.0, halo=EM_HALO, block_size=50)


_BUILDERS = {"calogan": _calogan, "atlas89": _atlas89, "clic51": _clic51}


def check_version(version: str | None) -> str:
    """The simulator version to use (``None``: the newest); a CaloforgeError naming the
    known ones if ``version`` is not one of them."""
    if version is None:
        return SIMULATOR_VERSION
    if version not in SIMULATOR_VERSIONS:
        raise CaloforgeError(f"unknown parametric simulator version {version!r}; choose from "
                             f"{', '.join(SIMULATOR_VERSIONS)}")
    return version


@cache
def _calorimeter_by_name(name: str, version: str) -> Calorimeter:
    geometry = get_geometry(name)
    try:
        cal = _BUILDERS[name](geometry)
    except KeyError:
        known = ", ".join(sorted(_BUILDERS))
        raise CaloforgeError(
            f"the parametric simulator has no model of geometry {name!r}; it knows {known}"
        ) from None
    if version == "parametric-3":
        cal = _parametric_3(cal)
    elif version == "parametric-4":
        cal = _parametric_4(cal)
    elif version == "parametric-5":
        cal = _parametric_5(cal)
    return cal


def calorimeter(geometry: Geometry | str, version: str | None = None) -> Calorimeter:
    """The parametric simulator's description of a geometry.

    Args:
        geometry: geometry or its name.
        version: calibration, one of :data:`SIMULATOR_VERSIONS` (default: the newest).

    Raises:
        CaloforgeError: unknown geometry or version.
    """
    return _calorimeter_by_name(get_geometry(geometry).name, check_version(version))


def _bin(cal: Calorimeter, m: int, spots: Spots, angle: np.ndarray | None,
         offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxel energies ``(m, n_voxels)`` and overflow ``(m, n_layers)`` in MeV."""
    g = cal.geometry
    n_layers, n_voxels = g.n_layers, g.n_voxels
    f32 = np.float32
    k = spots.shower
    layer, a, b = _readout_coordinates(cal, spots, angle, offset)
    # Per-shower bins: the voxels, then one overflow bin per layer, then one bin for
    # deposits outside the readout depth (dead material, leakage), dropped afterwards.
    stride = n_voxels + n_layers + 1
    valid = (layer >= 0) & (layer < n_layers)
    layer = np.where(valid, layer, 0)
    # Per-layer constants, one contiguous table per axis, looked up per spot with take
    # (much faster than indexing a 2D table with [layer, axis]).
    shape = np.array([lay.shape for lay in g.layers], dtype=np.int32).T.copy()
    inv_cell = (1.0 / np.asarray(cal.cell_mm, dtype=np.float64)).astype(f32).T.copy()
    half1 = (shape / 2.0 + 1.0).astype(f32)
    # Cell index = floor(position / cell + n / 2); computed as a truncation of a value
    # shifted by +1 and clipped at 0 (cheaper than floor; anything below 0 is outside),
    # and at 1e6 so that far-away spots cannot overflow int32.
    big = f32(1e6)
    ia = np.clip(a * inv_cell[0].take(layer) + half1[0].take(layer), 0, big).astype(np.int32) - 1
    ib = np.clip(b * inv_cell[1].take(layer) + half1[1].take(layer), 0, big).astype(np.int32) - 1
    rows, cols = shape[0].take(layer), shape[1].take(layer)
    inside = (ia >= 0) & (ia < rows) & (ib >= 0) & (ib < cols)
    offsets = np.asarray(g.layer_offsets[:-1], dtype=np.int32)
    local = np.where(inside, offsets.take(layer) + ia * cols + ib, np.int32(n_voxels) + layer)
    local = np.where(valid, local, np.int32(stride - 1))
    flat = k.astype(np.int64) * stride + local
    sums = np.bincount(flat, weights=spots.energy, minlength=m * stride).reshape(m, stride)
    return (sums[:, :n_voxels].astype(f32),
            sums[:, n_voxels:n_voxels + n_layers].astype(f32))


def _readout_coordinates(cal: Calorimeter, spots: Spots, angle: np.ndarray | None,
                         offset: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Readout layer (-1 before the first, n_layers after the last) and transverse
    position (mm, along rows and columns) of every spot."""
    f32 = np.float32
    k = spots.shower
    if angle is None:
        z, a = spots.s, spots.u
    else:
        # theta = 90 deg is perpendicular incidence; the axis tilts in the rows-depth plane.
        th = np.radians(angle).astype(f32)[k]
        sin, cos = np.sin(th), np.cos(th)
        z = spots.s * sin - spots.u * cos
        a = spots.s * cos + spots.u * sin
    return _layer_index(cal, z), a + offset[k, 0], spots.v + offset[k, 1]


def _layer_index(cal: Calorimeter, z: np.ndarray) -> np.ndarray:
    """Readout layer of each depth ``z`` (mm); -1 before the first, n_layers after."""
    edges = np.asarray(cal.layer_edges, dtype=np.float64)
    widths = np.diff(edges)
    if len(widths) > 4 and np.allclose(widths, widths[0]):
        layer = np.floor((z - edges[0]) * np.float32(1.0 / widths[0]))
        return np.clip(layer, -1, len(widths)).astype(np.int32)
    if len(widths) <= 4:
        layer = np.full(len(z), -1, dtype=np.int32)
        for edge in edges.astype(np.float32):
            layer += z >= edge
        return layer
    return (np.searchsorted(edges.astype(np.float32), z, side="right") - 1).astype(np.int32)


def _centre(cal: Calorimeter, rng: np.random.Generator, m: int, spots: Spots,
            angle: np.ndarray | None) -> np.ndarray:
    """Transverse offset ``(m, 2)`` in mm added to every spot of a shower."""
    jitter = (rng.random((m, 2)) * 2.0 - 1.0) * np.asarray(cal.jitter_mm)
    if cal.centring != "barycentre":
        return jitter.astype(np.float32)
    # Energy barycentre of the deposits inside the calorimeter depth.
    k, e = spots.shower, spots.energy.astype(np.float64)
    if angle is None:
        z, a = spots.s, spots.u
    else:
        th = np.radians(angle)[k]
        z = spots.s * np.sin(th) - spots.u * np.cos(th)
        a = spots.s * np.cos(th) + spots.u * np.sin(th)
    w = np.where((z >= cal.layer_edges[0]) & (z < cal.depth), e, 0.0)
    norm = np.maximum(np.bincount(k, weights=w, minlength=m), 1e-12)
    bary_a = np.bincount(k, weights=w * a, minlength=m) / norm
    bary_b = np.bincount(k, weights=w * spots.v, minlength=m) / norm
    return (jitter - np.stack([bary_a, bary_b], axis=1)).astype(np.float32)


def simulate_block(cal: Calorimeter, particle: str, energy: np.ndarray,
                   angle: np.ndarray | None, rng: np.random.Generator) -> ShowerSet:
    """Simulate one block of showers.

    Args:
        cal: the calorimeter.
        particle: ``"eplus"``, ``"eminus"``, ``"gamma"`` or ``"piplus"``.
        energy: ``(m,)`` incident energies in MeV.
        angle: ``(m,)`` polar angles in degrees (90 = perpendicular), or ``None``.
        rng: the block's random generator.
    """
    m = len(energy)
    medium = cal.medium
    e_gev = energy / MEV_PER_GEV
    em = particle in ("eplus", "eminus", "gamma")
    if em:
        t_max_shift = cal.t_max_shift
        if particle == "gamma":
            start = rng.exponential(PHOTON_CONVERSION_X0 * medium.radiation_length, m)
            t_max_shift += cal.photon_t_max_shift
        else:
            start = np.zeros(m)
        if cal.escape_fluctuates:
            deposit = energy.copy()  # the loss is drawn with the halo's, below
        else:
            deposit = energy * (1.0 - _em_losses(cal, e_gev, rng))
        if particle == "eplus" and cal.positron_annihilation:
            deposit = deposit + ANNIHILATION_MEV
        walk = cal.axis_walk * medium.moliere_radius**2
        sub_energy, shower, shared_walk = energy, None, False
        if particle == "gamma" and cal.photon_pair_split:
            x = _pair_fraction(rng, m)
            sub_energy = np.stack([x * energy, (1.0 - x) * energy], axis=1).reshape(-1)
            deposit = np.stack([x * deposit, (1.0 - x) * deposit], axis=1).reshape(-1)
            start, shower = np.repeat(start, 2), np.repeat(np.arange(m), 2)
            shared_walk = True
        spots = em_showers(rng, sub_energy, start, medium, cal.spots_per_gev, cal.spots_power,
                           deposit=deposit, shower=shower, depth=cal.depth / _min_sin(angle),
                           depth_spread=cal.depth_spread, depth_uniform=cal.depth_uniform,
                           radius_spread=cal.radius_spread, t_max_shift=t_max_shift,
                           halo=cal.halo, max_radius=cal.max_radius,
                           cell_width=cal.cell_width, fluctuation=cal.fluctuation,
                           radial_power=cal.radial_power, axis_walk=walk,
                           axis_walk_power=cal.axis_walk_power,
                           sampling_correlation=cal.sampling_correlation,
                           shared_walk=shared_walk)
    elif particle in ("piplus", "piminus"):
        spots, _ = hadron_showers(rng, energy, medium, cal.depth / _min_sin(angle),
                                  spots_per_gev=cal.spots_per_gev,
                                  em_spots_per_gev=cal.spots_per_gev,
                                  spots_power=cal.spots_power, halo=cal.halo)
    else:
        raise CaloforgeError(f"the parametric simulator does not know particle {particle!r}")
    offset = _centre(cal, rng, m, spots, angle)
    voxels, overflow = _bin(cal, m, spots, angle, offset)
    if spots.halo is not None:
        h_vox, h_over, expected = _halo(cal, rng, m, spots, angle, offset)
        if cal.escape_fluctuates and em:
            expected = _escape(cal, rng, spots, expected, energy)
        # Energy conservation: the halo's Poisson fluctuation comes out of (or goes
        # into) the rest of the shower, whose total stays what the spots gave less what
        # the halo photons carried out of the calorimeter.
        drawn = h_vox.sum(axis=1, dtype=np.float64) + h_over.sum(axis=1, dtype=np.float64)
        rest = voxels.sum(axis=1, dtype=np.float64) + overflow.sum(axis=1, dtype=np.float64)
        factor = np.clip(1.0 + (expected - drawn) / np.maximum(rest, 1e-30), 0.0, None)
        factor = factor.astype(np.float32)[:, None]
        voxels = voxels * factor + h_vox
        overflow = overflow * factor + h_over
    g = cal.geometry
    return ShowerSet(g, voxels, energy.astype(np.float32),
                     angle=None if angle is None else angle.astype(np.float32),
                     overflow=overflow if g.has_overflow else None)


def _halo(cal: Calorimeter, rng: np.random.Generator, m: int, spots: Spots,
          angle: np.ndarray | None, offset: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxels ``(m, n_voxels)`` and overflow ``(m, n_layers)`` (MeV) of the soft-photon
    halo of the energy ``spots.halo`` that the spots handed to it (see :mod:`._halo`),
    and ``(m,)`` its mean in the calorimeter (the rest leaks out of the front or back).

    How that energy spreads over the readout layers follows each shower's own
    longitudinal profile (its Gamma profile times the halo share, on a grid of depths),
    folded with the photon flights (:func:`_flight_tables`); not the spots themselves,
    whose few deep ones would make the halo fluctuate far more than the sum of thousands
    of photons does.
    """
    halo, n_layers = cal.halo, cal.geometry.n_layers
    prof = spots.profiles
    k = prof["shower"]
    single = np.bincount(k, minlength=m).max(initial=0) <= 1  # one profile per shower
    n_grid = 32
    x0 = cal.medium.radiation_length
    sin = np.ones(len(k)) if angle is None else np.sin(np.radians(angle[k]))
    cos = np.zeros(len(k)) if angle is None else np.cos(np.radians(angle[k]))
    # Depths along the shower axis, X0 from its start, up to the back face.
    reach = np.maximum((cal.depth / np.maximum(sin, 0.1) - prof["start"]) / x0, 0.5)
    t = (np.arange(n_grid) + 0.5) / n_grid * reach[:, None]
    alpha, beta = prof["alpha"][:, None], prof["beta"][:, None]
    weight = np.exp((alpha - 1.0) * np.log(beta * t) - beta * t) * reach[:, None]
    weight *= halo_fraction(halo, (t * prof["tau_scale"][:, None]).astype(np.float32))
    axis = prof["start"][:, None] + t * x0  # mm along the axis
    z = axis * sin[:, None]  # depth along the detector normal
    a_axis = axis * cos[:, None]  # where the axis is, along the rows
    walk = None
    if cal.halo_follows_walk:
        rows = np.repeat(np.arange(len(k)), n_grid).reshape(len(k), n_grid)
        walk = walk_offsets(prof["walk"], rows, t.astype(np.float32))
    lengths = (halo.length_scale, halo.soft_length)
    shares = (1.0 - halo.soft_share, halo.soft_share)
    mean, inside = 0.0, np.zeros(m)
    # Mean deposit of one halo photon, per shower (of the block).
    shower_energy = np.zeros(m)
    np.maximum.at(shower_energy, k, prof["energy"])
    photon_mev = halo.mean_mev * (np.maximum(shower_energy, 1.0) / 10_000.0) ** -halo.mean_power
    grow = ((prof["energy"] / 10_000.0) ** halo.spread_power)[:, None]
    # The photons' own paths spread their deposits further (see
    # clustered_compound_poisson): where they arrive is narrower by that much.
    path_var = path_variance(halo, cal.medium.photon_length)
    for length, share in zip(lengths, shares, strict=True):
        if share <= 0:
            continue
        grid, reach_p, travel_v = _flight_tables(cal, length * cal.medium.photon_length)
        p = np.stack([np.interp(z, grid, reach_p[:, i]) for i in range(n_layers)], axis=2)
        v = np.stack([np.interp(z, grid, travel_v[:, i]) for i in range(n_layers)], axis=2)
        wp = weight[:, :, None] * p  # (showers, depths, layers)
        per_layer = wp.sum(axis=1)
        norm = np.maximum(per_layer, 1e-300)
        centre_a = (wp * a_axis[:, :, None]).sum(axis=1) / norm
        source_var = (wp * (a_axis[:, :, None] - centre_a[:, None, :]) ** 2).sum(axis=1) / norm
        travel = (wp * v).sum(axis=1) / norm
        # Normalise per shower: the shares of this class over the layers, times the
        # energy the spots handed over (what leaks out of the back is lost).
        emitted = np.maximum(weight.sum(axis=1), 1e-300)[:, None]
        energy = np.zeros((m, n_layers))
        part = share * per_layer / emitted * prof["halo"][:, None]
        np.add.at(energy, k, part)
        inside += energy.sum(axis=1)
        c = np.zeros((len(k), n_layers, 2))
        c[:, :, 0] = centre_a
        if walk is not None:  # the halo's photons leave the wandering shower
            c[:, :, 0] += (wp * walk[0][:, :, None]).sum(axis=1) / norm
            c[:, :, 1] += (wp * walk[1][:, :, None]).sum(axis=1) / norm
        spread_var = travel + halo.core_mm**2 - path_var
        sd = np.stack([grow * np.sqrt(np.maximum(spread_var + source_var, 1.0)),
                       grow * np.sqrt(np.maximum(spread_var, 1.0))], axis=2)
        centre = np.zeros((m, n_layers, 2))
        spread = np.full((m, n_layers, 2), 1.0)
        if single:
            centre[k], spread[k] = c, sd
        else:  # several showers (a photon's pair) in one: their energy-weighted moments
            w = part[:, :, None]
            first, second = np.zeros_like(centre), np.zeros_like(centre)
            np.add.at(first, k, w * c)
            np.add.at(second, k, w * (sd**2 + c**2))
            norm_e = np.maximum(energy, 1e-300)[:, :, None]
            centre = first / norm_e
            spread = np.sqrt(np.maximum(second / norm_e - centre**2, 1e-6))
        centre += offset[:, None, :]
        mean = mean + halo_expectation(energy / photon_mev[:, None], centre, spread,
                                       cal.cell_edges, halo.tail_share, halo.tail_scale,
                                       halo.radial)
    if halo.interactions > 1:
        deposits = clustered_compound_poisson(rng, halo, mean, photon_mev, cal.cell_edges,
                                              cal.medium.photon_length)
    else:
        deposits = compound_poisson(rng, halo, mean, photon_mev)
    n_voxels = cal.geometry.n_voxels
    return deposits[:, :n_voxels], deposits[:, n_voxels:], inside


@cache
def _flight_tables(cal: Calorimeter, length: float, n_depths: int = 121,
                   n_flights: int = 20_000, fold_front: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For photons leaving depth ``z`` (mm along the detector normal) on isotropic
    exponential flights of mean ``length`` mm: the probability to end in each readout
    layer, and the mean variance per transverse axis of those that do.

    Returns:
        ``(z grid (n_depths,), probability (n_depths, n_layers), variance (n_depths,
        n_layers) in mm^2)``. Flights out of the front face (the albedo) or the back leak
        (``fold_front``: the first are folded back in). Computed once per calorimeter
        and length (fixed random stream).
    """
    rng = np.random.default_rng(12345)
    dz, var = depth_flight(rng, n_flights, length)
    dz, var = dz.astype(np.float64), var.astype(np.float64)
    z = np.linspace(0.0, cal.depth, n_depths)
    n_layers = cal.geometry.n_layers
    prob, travel = np.zeros((n_depths, n_layers)), np.zeros((n_depths, n_layers))
    edges = np.asarray(cal.layer_edges, dtype=np.float64)
    for j, z0 in enumerate(z):
        end = z0 + dz
        if fold_front:
            end = np.abs(end)
        layer = np.searchsorted(edges, end, side="right") - 1
        for i in range(n_layers):
            sel = layer == i
            prob[j, i] = sel.mean()
            travel[j, i] = var[sel].mean() if sel.any() else 0.0
    return z, prob, travel


def _pair_fraction(rng: np.random.Generator, m: int) -> np.ndarray:
    """``(m,)`` energy fractions of the electron of a photon's conversion pair: the
    Bethe-Heitler spectrum in complete screening, ``1 - 4/3 x (1 - x)`` on [0, 1] (PDG,
    "Passage of particles through matter", eq. 34.31), by rejection."""
    out = np.empty(m)
    filled = 0
    while filled < m:
        x = rng.random(2 * (m - filled) + 8)
        keep = x[rng.random(len(x)) < 1.0 - 4.0 / 3.0 * x * (1.0 - x)]
        take = min(len(keep), m - filled)
        out[filled:filled + take] = keep[:take]
        filled += take
    return out


def _em_losses(cal: Calorimeter, e_gev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fraction of an EM shower's energy that is not deposited (albedo, escaping soft
    photons), ``(m,)``: never negative, so the deposit never exceeds the incident energy.

    Gamma-distributed with standard deviation ``resolution / sqrt(E/GeV)`` (+) ``constant_term``
    (the stochastic term of the total deposit) and mean ``loss`` plus half of that.
    """
    sigma = np.hypot(cal.resolution / np.sqrt(e_gev), cal.constant_term)
    mean = cal.loss + 0.5 * sigma
    shape = (mean / sigma) ** 2
    return np.minimum(rng.gamma(shape, sigma**2 / mean), 1.0)


def _escape(cal: Calorimeter, rng: np.random.Generator, spots: Spots, kept: np.ndarray,
            energy: np.ndarray) -> np.ndarray:
    """``(m,)`` the halo energy (MeV) an EM shower keeps in the calorimeter when what it
    loses fluctuates (:attr:`Calorimeter.escape_fluctuates`): the halo's mean loss (its
    photons out of the front or the back: what its profiles hand over,
    ``spots.profiles["halo"]``, less what it keeps on average, ``kept``) plus ``loss``
    of the energy, drawn from a Gamma distribution of that mean and the standard
    deviation ``resolution / sqrt(E/GeV)`` (+) ``constant_term`` of the energy.

    In the Geant4 reference showers the energy lost (albedo and leakage) fluctuates by
    0.09-0.23 % of the incident energy, about its mean of 0.24-0.35 %, and is never
    negative (photons); the halo's mean loss alone fluctuates by 0.04-0.07 %."""
    m = len(energy)
    prof = spots.profiles
    handed = np.bincount(prof["shower"], weights=prof["halo"], minlength=m)
    mean = np.maximum(handed - kept + cal.loss * energy, 1e-6)
    sigma = np.hypot(cal.resolution / np.sqrt(energy / MEV_PER_GEV), cal.constant_term) * energy
    lost = rng.gamma((mean / sigma) ** 2, sigma**2 / mean)
    return handed - lost


def _min_sin(angle: np.ndarray | None) -> float:
    if angle is None or len(angle) == 0:
        return 1.0
    return float(max(np.min(np.sin(np.radians(angle))), 0.1))


def _block(cal: Calorimeter, particle: str, m: int, energy_range: tuple[float, float],
           angle_range: tuple[float, float] | None, seed: int, index: int) -> ShowerSet:
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(index,)))
    energy = rng.uniform(energy_range[0], energy_range[1], m) * MEV_PER_GEV
    angle = None if angle_range is None else rng.uniform(angle_range[0], angle_range[1], m)
    return simulate_block(cal, particle, energy, angle, rng)


def _threads() -> int:
    env = os.environ.get("CALOFORGE_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def simulate_chunks(geometry: Geometry | str, particle: str, n: int,
                    energy_range: tuple[float, float] | None = None,
                    angle_range: tuple[float, float] | None = None, seed: int = 0,
                    chunk_size: int = 10_000, threads: int | None = None,
                    version: str | None = None) -> Iterator[ShowerSet]:
    """Simulate ``n`` showers with the parametric engine, in chunks.

    Args:
        geometry: geometry or its name (``calogan``, ``atlas89``, ``clic51``).
        particle: ``eplus``, ``gamma``, ``piplus`` (calogan), ``gamma`` (atlas89),
            ``eminus`` (clic51).
        n: number of showers.
        energy_range: ``(low, high)`` incident energy in GeV, sampled uniformly
            (default: the geometry's range). Not validated here: :func:`simulate` does.
        angle_range: ``(low, high)`` polar angle in degrees (90 = perpendicular), sampled
            uniformly (default: the geometry's range); ignored without an angle condition.
        seed: random seed; the same seed gives the same showers whatever ``chunk_size``
            and ``threads``.
        chunk_size: at most this many showers per chunk (also capped at ~128 MB).
        threads: worker threads (default: ``$CALOFORGE_THREADS`` or the usable cores, up
            to 4).
        version: the simulator's calibration, one of :data:`SIMULATOR_VERSIONS` (default:
            the newest); written to ``meta["generator_version"]``.

    Yields:
        ShowerSet chunks (MeV) with ``meta["generator"] = "parametric"``.

    Raises:
        CaloforgeError: unknown geometry, particle or version.
    """
    version = check_version(version)
    cal = calorimeter(geometry, version)
    if particle not in cal.geometry.particles:
        raise CaloforgeError(
            f"unknown particle {particle!r} for geometry {cal.geometry.name!r}; "
            f"choose from {', '.join(cal.geometry.particles)}"
        )
    g = cal.geometry
    energy_range = tuple(energy_range or g.energy_range)
    if "angle" in g.conditions:
        angle_range = tuple(angle_range or g.angle_range)
    else:
        angle_range = None
    n = int(n)
    chunk_size = max(1, min(int(chunk_size), _MAX_CHUNK_VALUES // cal.geometry.n_voxels))
    sizes = [min(cal.block_size, n - lo) for lo in range(0, n, cal.block_size)]
    threads = threads or _threads()
    meta = {"particle": particle, "generator": "parametric",
            "generator_version": version, "seed": int(seed)}

    def blocks() -> Iterator[ShowerSet]:
        args = [(cal, particle, m, energy_range, angle_range, seed, i)
                for i, m in enumerate(sizes)]
        if threads == 1 or len(args) == 1:
            for a in args:
                yield _block(*a)
            return
        with ThreadPoolExecutor(threads) as pool:
            # Keep a bounded number of blocks in flight, in order.
            pending = [pool.submit(_block, *a) for a in args[:2 * threads]]
            nxt = len(pending)
            while pending:
                result = pending.pop(0).result()
                if nxt < len(args):
                    pending.append(pool.submit(_block, *args[nxt]))
                    nxt += 1
                yield result

    buffer: list[ShowerSet] = []
    buffered = 0
    for block in blocks():
        buffer.append(block)
        buffered += len(block)
        while buffered >= chunk_size:
            chunk, buffer = _take(buffer, chunk_size)
            buffered -= chunk_size
            chunk.meta.update(meta)
            yield chunk
    if buffered:
        chunk, _ = _take(buffer, buffered)
        chunk.meta.update(meta)
        yield chunk


def _take(buffer: list[ShowerSet], k: int) -> tuple[ShowerSet, list[ShowerSet]]:
    """The first ``k`` showers of a list of sets, and what remains."""
    from caloforge.data.showers import concatenate

    taken, rest, need = [], [], k
    for i, s in enumerate(buffer):
        if need == 0:
            rest = buffer[i:]
            break
        if len(s) <= need:
            taken.append(s)
            need -= len(s)
        else:
            taken.append(s[:need])
            rest = [s[need:], *buffer[i + 1:]]
            need = 0
            break
    out = taken[0] if len(taken) == 1 else concatenate(taken)
    return out, rest
