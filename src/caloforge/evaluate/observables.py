"""Shower-shape observables for any geometry.

The CaloGAN table is defined layer by layer, so it carries over to every geometry: per
layer ``E_i``, ``f_i``, ``E_ratio_i``, ``sigma_i`` and ``sparsity_i``; per shower ``E_tot``,
``d``, ``l_d``, ``s_d`` and ``sigma_sd``. Their analogues for the ATLAS-like cluster
(Klein) and the CLIC ECAL (Carminati, Khattak et al.) are added for every geometry as
well: the energy-weighted barycentre and RMS width of each layer along both cell axes, in
the geometry's cell units (mm, or eta/phi), the same over the whole shower, and the energy
response ``E_tot / E_inc``. The cell-energy spectrum is a distribution over cells, not over
showers, and lives in :func:`cell_energy_histogram`.

Which definition each observable follows:

- ``E_i``, ``E_tot`` (energy in the grid, overflow excluded, MeV), ``f_i``,
  ``E_ratio_i`` (highest minus second-highest cell over their sum), ``d``, ``l_d``,
  ``s_d``, ``sigma_sd``, ``sigma_i``: the CaloGAN table. ``sigma_i`` is the width along the
  layer's first axis in cell numbers (``eta`` in the CaloGAN code), or along the radial
  bins of a polar (CaloChallenge) layer.
- ``centre_<axis>_i``, ``width_<axis>_i`` (and the whole-shower ``centre_<axis>``,
  ``width_<axis>``): energy-weighted mean and RMS of the cell centres. For the
  CaloChallenge layouts they are the challenge's ``HighLevelFeatures`` ``EC_etas``/
  ``EC_phis`` and ``width_etas``/``width_phis`` with the same sign: ``x = r cos(alpha)``
  (its "eta") and ``y = r sin(alpha)`` (its "phi") in mm, angular bins centred from
  ``-pi`` as in its ``XMLHandler``.
- ``centre_r_i``, ``width_r_i`` (polar layers only): the challenge's ``EC_r`` and
  ``width_r``, energy-weighted mean and RMS of the radial bin centres, mm.
- ``sparsity_i``: for the CaloChallenge layouts the challenge's definition, the fraction
  of cells at or below ``threshold`` (empty cells); for the other geometries the CaloGAN
  one, the fraction of cells above it (non-zero cells). The plot label says which.
- Every value is finite (histograms, the classifier and FPD need that): quantities of an
  empty layer (``E_i = 0``) are 0 (barycentre, width, ``E_ratio_i``, ``f_i`` when
  ``E_tot = 0``); ``d`` is -1 for a shower with no energy at all.

References:
    M. Paganini, L. de Oliveira, B. Nachman, "CaloGAN: simulating 3D high energy particle
    showers in multilayer electromagnetic calorimeters with generative adversarial
    networks", Phys. Rev. D 97 (2018) 014021, arXiv:1712.10321, table I.

    C. Krause, M. Faucci Giannelli, G. Kasieczka, B. Nachman, D. Salamani, D. Shih,
    A. Zaborowska et al., "CaloChallenge 2022: a community challenge for fast calorimeter
    simulation", arXiv:2410.21611; evaluation code ``code/HighLevelFeatures.py`` and
    ``code/XMLHandler.py`` of https://github.com/CaloChallenge/homepage.

    P. Klein, "Generative modeling - electromagnetic shower of a calorimeter" (2017): the
    ATLAS-like 89-cell photon cluster, barycentres and RMS widths per layer.

    F. Carminati, G. Khattak et al., "Generative Adversarial Networks for fast
    simulation", J. Phys.: Conf. Ser. 1525 (2020) 012064 (CHEP 2019): the CLIC ECAL.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from caloforge.data import ShowerSet
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry, Layer

__all__ = [
    "Observable",
    "axis_names",
    "calochallenge_conventions",
    "observables",
    "shower_shapes",
    "CELL_ENERGY_EDGES",
    "cell_energy_histogram",
    "feature_matrix",
    "response_profile",
]

# Fixed log-spaced edges for the cell-energy spectrum, MeV: fixed so that files can be
# histogrammed chunk by chunk and compared on the same binning. Ten bins per decade.
CELL_ENERGY_EDGES = np.logspace(-4, 6, 101)


@dataclass(frozen=True)
class Observable:
    """What one shower-shape observable is.

    Attributes:
        name: key in :func:`shower_shapes` (``"E_0"``, ``"width_eta_2"``).
        label: axis label for plots (matplotlib mathtext, no LaTeX needed).
        unit: ``"MeV"``, ``"mm"``, ``"eta"``, ``"layer"``, ``""`` for ratios.
        family: observables plotted together (``"E_i"``, ``"centre_x_i"``, ...).
        layer: the layer index for per-layer observables, else ``None``.
        scale: binning: ``"linear"``, ``"log"`` or ``"discrete"``.
        limits: physical range ``(low, high)`` that bounds the histogram range (fractions
            in [0, 1], the response in [0, 1.5]), or ``None``.
    """

    name: str
    label: str
    unit: str
    family: str
    layer: int | None = None
    scale: str = "linear"
    limits: tuple[float, float] | None = None


def axis_names(layer: Layer) -> tuple[str, str]:
    """Names of the two transverse coordinates: ``("eta", "phi")`` or ``("x", "y")``
    (for polar layers, x and y in mm from the cell centres' radius and angle)."""
    if layer.cell_unit == "eta,phi":
        return "eta", "phi"
    return "x", "y"


def _coordinates(layer: Layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat per-cell transverse coordinates (both axes) and the cell index used by
    ``sigma_i``: the row for Cartesian layers, the radial bin for polar ones.

    Polar (CaloChallenge) layers follow the challenge's ``XMLHandler``: angular bin ``j``
    of ``n`` is centred at ``alpha = -pi + (j + 1/2) 2 pi / n`` and a cell sits at
    ``(r cos alpha, r sin alpha)`` with ``r`` its radial bin centre (mm), so that the
    barycentres have the challenge's sign (``x`` is its "eta", ``y`` its "phi")."""
    if layer.is_polar:
        n_alpha = layer.shape[0]
        alpha = -np.pi + (np.arange(n_alpha) + 0.5) * 2.0 * np.pi / n_alpha
        edges = np.asarray(layer.r_edges, dtype=np.float64)
        alpha, r = np.meshgrid(alpha, 0.5 * (edges[1:] + edges[:-1]), indexing="ij")
        a, b = r * np.cos(alpha), r * np.sin(alpha)
    else:
        a, b = layer.cell_positions()
    rows, cols = np.meshgrid(np.arange(layer.shape[0]), np.arange(layer.shape[1]),
                             indexing="ij")
    index = cols if layer.is_polar else rows
    return (np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel(),
            index.astype(np.float64).ravel())


def _axis_label(axis: str) -> str:
    return {"eta": r"\eta", "phi": r"\phi"}.get(axis, axis)


def _axis_unit(layer: Layer) -> str:
    if layer.is_polar:
        return "mm"
    return "" if layer.cell_unit == "eta,phi" else layer.cell_unit


def _with_unit(text: str, unit: str) -> str:
    return f"{text} [{unit}]" if unit else text


def observables(geometry: Geometry) -> dict[str, Observable]:
    """The observables :func:`shower_shapes` returns for ``geometry``, in a stable order."""
    out: dict[str, Observable] = {}

    def add(obs: Observable) -> None:
        out[obs.name] = obs

    add(Observable("E_tot", _with_unit(r"$E_\mathrm{tot}$", "MeV"), "MeV", "E_tot", scale="log"))
    add(Observable("response", r"$E_\mathrm{tot} / E_\mathrm{inc}$", "", "response",
                   limits=(0.0, 1.5)))
    add(Observable("d", "deepest layer $d$", "layer", "d", scale="discrete"))
    add(Observable("l_d", _with_unit("$l_d$", "MeV"), "MeV", "l_d", scale="log"))
    add(Observable("s_d", "shower depth $s_d$ [layer]", "layer", "s_d"))
    add(Observable("sigma_sd", r"depth width $\sigma_{s_d}$ [layer]", "layer", "sigma_sd"))
    first = geometry.layers[0]
    a, b = axis_names(first)
    unit = _axis_unit(first)
    for axis in (a, b):
        add(Observable(f"centre_{axis}", _with_unit(f"shower centre ${_axis_label(axis)}$", unit),
                       unit or axis, f"centre_{axis}"))
    for axis in (a, b):
        add(Observable(f"width_{axis}", _with_unit(f"shower width ${_axis_label(axis)}$", unit),
                       unit or axis, f"width_{axis}"))
    for i, layer in enumerate(geometry.layers):
        a, b = axis_names(layer)
        unit = _axis_unit(layer)
        add(Observable(f"E_{i}", _with_unit(f"$E_{{{i}}}$", "MeV"), "MeV", "E_i", i, "log"))
        add(Observable(f"f_{i}", f"$f_{{{i}}} = E_{{{i}}}/E_\\mathrm{{tot}}$", "", "f_i", i,
                       limits=(0.0, 1.0)))
        add(Observable(f"E_ratio_{i}", f"$E_{{\\mathrm{{ratio}},{i}}}$", "", "E_ratio_i", i,
                       limits=(0.0, 1.0)))
        add(Observable(f"sigma_{i}", f"$\\sigma_{{{i}}}$ [cells]", "cells", "sigma_i", i))
        add(Observable(f"sparsity_{i}", f"sparsity layer {i} ({_sparsity_text(geometry)})",
                       "", "sparsity_i", i, limits=(0.0, 1.0)))
        for axis in (a, b):
            add(Observable(f"centre_{axis}_{i}",
                           _with_unit(f"centre ${_axis_label(axis)}$ layer {i}", unit),
                           unit or axis, f"centre_{axis}_i", i))
        for axis in (a, b):
            add(Observable(f"width_{axis}_{i}",
                           _with_unit(f"width ${_axis_label(axis)}$ layer {i}", unit),
                           unit or axis, f"width_{axis}_i", i))
        if layer.is_polar:
            add(Observable(f"centre_r_{i}", f"centre $r$ layer {i} [mm]", "mm", "centre_r_i",
                           i))
            add(Observable(f"width_r_{i}", f"width $r$ layer {i} [mm]", "mm", "width_r_i", i))
    return out


def calochallenge_conventions(geometry: Geometry) -> bool:
    """Whether ``geometry`` is a CaloChallenge layout (every layer polar), whose
    observables follow the challenge's definitions (see the module)."""
    return all(layer.is_polar for layer in geometry.layers)


def _sparsity_text(geometry: Geometry) -> str:
    if calochallenge_conventions(geometry):
        return "empty cells, CaloChallenge"
    return "non-zero cells, CaloGAN"


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _moments(flat: np.ndarray, coordinate: np.ndarray, energy: np.ndarray):
    """Energy-weighted mean and RMS of a per-cell coordinate ``(n,)`` for showers
    ``(N, n)``; also the raw first and second moments (for sums over layers)."""
    first, second = flat @ coordinate, flat @ coordinate**2
    mean = _safe_divide(first, energy)
    width = np.sqrt(np.clip(_safe_divide(second, energy) - mean**2, 0.0, None))
    return mean, width, first, second


def _layer_shapes(layer: Layer, i: int, flat: np.ndarray, threshold: float,
                  challenge: bool) -> tuple[dict[str, np.ndarray], tuple]:
    """Per-layer observables of layer ``i`` from its ``(N, cells)`` deposits (MeV), and the
    raw first and second moments along both axes (``(N, 2)`` each) for the whole-shower
    barycentre and width."""
    n = len(flat)
    energy = flat.sum(axis=1)
    coord_a, coord_b, index = _coordinates(layer)
    a, b = axis_names(layer)
    centre_a, width_a, first_a, second_a = _moments(flat, coord_a, energy)
    centre_b, width_b, first_b, second_b = _moments(flat, coord_b, energy)
    if flat.shape[1] >= 2:
        top = np.partition(flat, flat.shape[1] - 2, axis=1)[:, -2:]
        first, second = top[:, 1], top[:, 0]
    else:
        first, second = flat[:, 0], np.zeros(n)
    occupied = (flat > threshold).mean(axis=1)
    out = {
        f"E_{i}": energy,
        f"E_ratio_{i}": _safe_divide(first - second, first + second),
        f"sigma_{i}": _moments(flat, index, energy)[1],
        f"sparsity_{i}": 1.0 - occupied if challenge else occupied,
        f"centre_{a}_{i}": centre_a,
        f"centre_{b}_{i}": centre_b,
        f"width_{a}_{i}": width_a,
        f"width_{b}_{i}": width_b,
    }
    if layer.is_polar:
        centre_r, width_r, _, _ = _moments(flat, np.hypot(coord_a, coord_b), energy)
        out[f"centre_r_{i}"], out[f"width_r_{i}"] = centre_r, width_r
    raw = (np.stack([first_a, second_a], axis=1), np.stack([first_b, second_b], axis=1))
    return out, raw


def shower_shapes(showers: ShowerSet, threshold: float = 0.0) -> dict[str, np.ndarray]:
    """Shower-shape observables of every shower.

    Args:
        showers: showers of any geometry, MeV.
        threshold: cells at or below this energy (MeV) count as empty for the sparsity.

    Returns:
        ``{name: (N,) float64 array}`` in the order of :func:`observables`; units as there.

    Raises:
        CaloforgeError: for an empty set of showers.
    """
    geometry = showers.geometry
    n = len(showers)
    if n == 0:
        raise CaloforgeError("no showers to compute shower shapes of")
    challenge = calochallenge_conventions(geometry)
    layer_energy = np.empty((n, geometry.n_layers))
    per_layer: dict[str, np.ndarray] = {}
    # Sums over the whole shower for its barycentre and width, in the first layer's units
    # (layers of one geometry share their cell unit).
    a0, b0 = axis_names(geometry.layers[0])
    sums = {a0: np.zeros((n, 2)), b0: np.zeros((n, 2))}
    for i, (layer, arr) in enumerate(zip(geometry.layers, showers.layers, strict=True)):
        flat = arr.astype(np.float64).reshape(n, -1)
        shapes, raw = _layer_shapes(layer, i, flat, threshold, challenge)
        per_layer.update(shapes)
        layer_energy[:, i] = shapes[f"E_{i}"]
        sums[a0] += raw[0]
        sums[b0] += raw[1]

    total = layer_energy.sum(axis=1)
    index = np.arange(geometry.n_layers, dtype=np.float64)
    hit = layer_energy > 0
    last_hit = geometry.n_layers - 1 - np.argmax(hit[:, ::-1], axis=1)
    deepest = np.where(hit.any(axis=1), last_hit, -1)
    l_d = layer_energy @ index
    s_d = _safe_divide(l_d, total)
    sigma_sd = np.sqrt(np.clip(_safe_divide(layer_energy @ index**2, total) - s_d**2, 0, None))

    out: dict[str, np.ndarray] = {
        "E_tot": total,
        "response": total / showers.incident_energy.astype(np.float64),
        "d": deepest.astype(np.float64),
        "l_d": l_d,
        "s_d": s_d,
        "sigma_sd": sigma_sd,
    }
    for axis in (a0, b0):
        out[f"centre_{axis}"] = _safe_divide(sums[axis][:, 0], total)
    for axis in (a0, b0):
        mean = out[f"centre_{axis}"]
        second = _safe_divide(sums[axis][:, 1], total)
        out[f"width_{axis}"] = np.sqrt(np.clip(second - mean**2, 0, None))
    for i in range(geometry.n_layers):
        out[f"f_{i}"] = _safe_divide(layer_energy[:, i], total)
    # Reorder to the documented order.
    order = observables(geometry)
    merged = {**out, **per_layer}
    return {name: merged[name] for name in order}


def cell_energy_histogram(voxels: np.ndarray, edges: np.ndarray = CELL_ENERGY_EDGES
                          ) -> np.ndarray:
    """Counts of non-zero cell energies (MeV) on ``edges``; values outside go to the end bins.

    Args:
        voxels: ``(N, n_voxels)`` deposits in MeV (any shape; flattened).
        edges: bin edges in MeV, increasing.

    Returns:
        ``(len(edges) - 1,)`` int64 counts.
    """
    values = np.asarray(voxels).ravel()
    values = values[values > 0]
    values = np.clip(values, edges[0], np.nextafter(edges[-1], -np.inf))
    counts, _ = np.histogram(values, bins=edges)
    return counts.astype(np.int64)


# Observables left out of the feature vector: f_i sum to 1 and sigma_i is width_<a>_i in
# other units, both exact linear relations that make a covariance matrix singular; l_d is
# s_d * E_tot and E_tot is carried by the response.
_REDUNDANT_FAMILIES = ("f_i", "sigma_i", "l_d", "E_tot")
_ENERGY_OFFSET = 1.0  # MeV, added before the log of layer energies (empty layers stay finite)


def feature_matrix(shapes: dict[str, np.ndarray], geometry: Geometry) -> tuple[np.ndarray,
                                                                             list[str]]:
    """The high-level feature vector of each shower, for the classifier and FPD/KPD.

    Layer energies enter as ``log10(E_i / MeV + 1)``; the other observables as they are.
    Observables that are exact linear functions of others are left out (see the module).

    Returns:
        ``(N, n_features)`` float64 array and the feature names.
    """
    info = observables(geometry)
    names, columns = [], []
    for name, obs in info.items():
        if obs.family in _REDUNDANT_FAMILIES:
            continue
        values = np.asarray(shapes[name], dtype=np.float64)
        if obs.family == "E_i":
            values = np.log10(values + _ENERGY_OFFSET)
            name = f"log10_{name}"
        names.append(name)
        columns.append(values)
    return np.stack(columns, axis=1), names


def response_profile(condition: np.ndarray, response: np.ndarray, edges: np.ndarray) -> dict:
    """Mean, RMS and error of the mean of ``response`` in bins of a condition.

    Used for the energy response ``E_tot / E_inc`` against the incident energy (MeV) or
    the angle (degrees).

    Args:
        condition: ``(N,)`` values binned on ``edges``.
        response: ``(N,)`` values averaged per bin.
        edges: bin edges of the condition.

    Returns:
        ``{"count", "mean", "rms", "error"}``, lists with one entry per bin (``None`` where a
        bin is empty).
    """
    condition = np.asarray(condition, dtype=np.float64)
    response = np.asarray(response, dtype=np.float64)
    inside = (condition >= edges[0]) & (condition <= edges[-1])  # outside: left out
    condition, response = condition[inside], response[inside]
    which = np.clip(np.digitize(condition, edges) - 1, 0, len(edges) - 2)
    out: dict[str, list] = {"count": [], "mean": [], "rms": [], "error": []}
    for b in range(len(edges) - 1):
        values = response[which == b]
        out["count"].append(int(values.size))
        if values.size == 0:
            out["mean"].append(None)
            out["rms"].append(None)
            out["error"].append(None)
            continue
        rms = float(values.std())
        out["mean"].append(float(values.mean()))
        out["rms"].append(rms)
        out["error"].append(rms / np.sqrt(values.size))
    return out
