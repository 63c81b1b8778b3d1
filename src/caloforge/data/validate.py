"""The checks every shower file goes through before a single shower reaches the library.

:func:`file_layout` looks at a file's datasets (never their values): the format, that every
dataset present is a dataset (not a group) of a numeric type with the rank and shape the
format prescribes, that all of them have one row per shower, and the geometry.
:func:`read_block` then reads rows through the layout: a corrupt chunk names the file and
the dataset, values are converted to a safe type before any unit conversion (a float16 file
works), and must be finite and non-negative; the incident energies must be plausible in the
units the format prescribes (a CaloGAN ``energy`` in MeV instead of GeV is refused with the
fix). Every reader of :mod:`caloforge.data.formats` goes through both, so ``inspect``,
``train``, ``evaluate`` and ``generate`` refuse a malformed file in one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import h5py
import numpy as np

from caloforge.data.showers import ShowerSet
from caloforge.errors import CaloforgeError
from caloforge.geometry import GEOMETRIES, Geometry, get_geometry, register_geometry
from caloforge.units import MEV_PER_GEV

__all__ = ["Layout", "file_layout", "read_block", "check_units"]

_CALOGAN_KEYS = ("layer_0", "layer_1", "layer_2", "energy")
# 3DGAN files: the public training files have `energy`; the files the 3DGAN code writes for
# generated showers have `Target` (GeV) and `Angle` (radians) instead.
_3DGAN_ENERGY = ("energy", "Target")
_3DGAN_ANGLE = ("theta", "mtheta", "eta", "Angle")
_SCALAR = ((), (1,))  # one value per shower: (N,) or (N, 1)
# The incident energy in a file is taken for MeV instead of GeV only with two signs at once:
# values above this (GeV) and deposits below 1/100 (1/1000 for the sampling 3DGAN ECAL) of
# it, so that a genuine multi-TeV file is still read.
_MEV_SUSPECT_GEV = {"calogan": 1000.0, "3dgan": 10_000.0}
_MEV_SUSPECT_RESPONSE = {"calogan": 1e-2, "3dgan": 1e-3}
_MAX_RESPONSE = 100.0  # deposits 100 x the incident energy: units, not physics
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Layout:
    """What :func:`file_layout` learned from a file's datasets.

    Attributes:
        fmt: ``"calogan"``, ``"calochallenge"`` or ``"3dgan"``.
        geometry: the calorimeter the file holds.
        n: number of showers (every dataset has this many rows).
        energy_key: dataset of the incident energy (``energy``, ``incident_energies`` or
            ``Target``).
        angle_key: dataset of the polar angle, or ``None``.
        has_overflow: whether the file stores the energy outside the grid (``overflow``).
    """

    fmt: str
    geometry: Geometry
    n: int
    energy_key: str
    angle_key: str | None
    has_overflow: bool


def _shape_text(trailing: tuple) -> str:
    return "(" + ", ".join(["N", *map(str, trailing)]) + ")"


def _dataset(f: h5py.File, key: str, path) -> h5py.Dataset:
    try:
        obj = f[key]
    except (KeyError, OSError) as err:
        raise CaloforgeError(f"{path}: cannot open '{key}' ({err}); the file is damaged or "
                             "holds a broken link") from None
    if isinstance(obj, h5py.Group):
        raise CaloforgeError(f"{path}: '{key}' is an HDF5 group, expected a dataset with one "
                             "row per shower")
    if not isinstance(obj, h5py.Dataset):
        raise CaloforgeError(f"{path}: '{key}' is not a dataset")
    if obj.dtype.kind not in "fiub":
        raise CaloforgeError(f"{path}: dataset '{key}' holds {obj.dtype} values, expected "
                             "numbers")
    if obj.ndim == 0:
        raise CaloforgeError(f"{path}: dataset '{key}' is a single value, expected one row "
                             "per shower")
    return obj


def _expect(ds: h5py.Dataset, key: str, path, allowed: tuple[tuple, ...], what: str) -> None:
    if tuple(ds.shape[1:]) not in allowed:
        options = " or ".join(_shape_text(a) for a in allowed)
        raise CaloforgeError(f"{path}: dataset '{key}' has shape {tuple(ds.shape)}, expected "
                             f"{options} ({what})")


def _detect(f: h5py.File, path) -> str:
    keys = set(f.keys())
    calogan = [k for k in _CALOGAN_KEYS if k in keys]
    if len(calogan) == len(_CALOGAN_KEYS):
        return "calogan"
    if "ECAL" in keys:
        return "3dgan"
    if "showers" in keys and "incident_energies" in keys:
        return "calochallenge"
    if any(k.startswith("layer_") for k in calogan):
        missing = [k for k in _CALOGAN_KEYS if k not in keys]
        raise CaloforgeError(f"{path}: a CaloGAN file needs datasets layer_0, layer_1, layer_2 "
                             f"and energy (GeV); missing: {', '.join(missing)}")
    if "showers" in keys or "incident_energies" in keys:
        missing = "incident_energies" if "showers" in keys else "showers"
        raise CaloforgeError(f"{path}: a CaloChallenge file needs datasets incident_energies and "
                             f"showers (both MeV); missing: {missing}")
    raise CaloforgeError(
        f"{path}: not a shower file: expected CaloGAN (layer_0..2, energy), CaloChallenge "
        f"(incident_energies, showers) or 3DGAN (ECAL) datasets, found {sorted(keys)}"
    )


def _named_geometry(f: h5py.File, path) -> str | None:
    name = f.attrs.get("geometry")
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    if name is not None and not isinstance(name, str):
        raise CaloforgeError(f"{path}: attribute 'geometry' must be a geometry name, got "
                             f"{name!r}")
    if name and name not in GEOMETRIES and "geometry_json" in f.attrs:
        # A geometry defined at run time (e.g. from a binning XML): the file carries it.
        try:
            register_geometry(Geometry.from_dict(json.loads(f.attrs["geometry_json"])))
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise CaloforgeError(f"{path}: attribute 'geometry_json' is not a valid geometry "
                                 f"({err})") from None
    return name or None


def _geometry(name: str, fmt: str, path) -> Geometry:
    geometry = get_geometry(name)
    if geometry.file_format != fmt:
        raise CaloforgeError(
            f"{path}: geometry {geometry.name!r} is stored as {geometry.file_format!r}, "
            f"but the file is in {fmt!r} layout"
        )
    return geometry


def file_layout(f: h5py.File, path) -> Layout:
    """Check a file's datasets (kinds, ranks, shapes, lengths) and learn its layout.

    Args:
        f: the open HDF5 file.
        path: its path, for messages.

    Raises:
        CaloforgeError: not a shower file; a dataset that is a group, not numeric, of the
            wrong rank or shape; datasets of different lengths (all named with their
            lengths); a geometry that does not match the file.
    """
    fmt = _detect(f, path)
    name = _named_geometry(f, path)
    rows: dict[str, int] = {}
    angle_key = None
    if fmt == "calogan":
        geometry = _geometry(name or "calogan", fmt, path)
        for i, layer in enumerate(geometry.layers):
            key = f"layer_{i}"
            ds = _dataset(f, key, path)
            _expect(ds, key, path, (tuple(layer.shape),), f"layer {i} cells in MeV")
            rows[key] = ds.shape[0]
        energy_key = "energy"
        ds = _dataset(f, "energy", path)
        _expect(ds, "energy", path, _SCALAR, "one incident energy per shower, in GeV")
        rows["energy"] = ds.shape[0]
        has_overflow = "overflow" in f
        if has_overflow:
            ds = _dataset(f, "overflow", path)
            _expect(ds, "overflow", path, ((geometry.n_layers,),),
                    "energy outside the grid per layer, MeV")
            rows["overflow"] = ds.shape[0]
    elif fmt == "calochallenge":
        energy_key, has_overflow = "incident_energies", False
        ds = _dataset(f, energy_key, path)
        _expect(ds, energy_key, path, _SCALAR, "one incident energy per shower, in MeV")
        rows[energy_key] = ds.shape[0]
        showers = _dataset(f, "showers", path)
        if showers.ndim != 2:
            raise CaloforgeError(f"{path}: dataset 'showers' has shape {tuple(showers.shape)}, "
                                 "expected (N, voxels): one row of voxel energies (MeV) per "
                                 "shower")
        rows["showers"] = showers.shape[0]
        n_voxels = showers.shape[1]
        if name:
            geometry = _geometry(name, fmt, path)
        else:
            matches = [g for g in GEOMETRIES.values() if g.n_voxels == n_voxels
                       and g.file_format == "calochallenge"]
            if len(matches) != 1:
                known = ", ".join(f"{g.name} ({g.n_voxels})" for g in GEOMETRIES.values()
                                  if g.file_format == "calochallenge")
                raise CaloforgeError(
                    f"{path}: no single known geometry has {n_voxels} voxels per shower "
                    f"(known: {known}); write the file with a 'geometry' attribute"
                )
            geometry = matches[0]
        _expect(showers, "showers", path, ((geometry.n_voxels,),),
                    f"{geometry.n_voxels} voxels of geometry {geometry.name!r}, MeV")
        if "angle" in f:
            angle_key = "angle"
            ds = _dataset(f, "angle", path)
            _expect(ds, "angle", path, _SCALAR, "one polar angle per shower, in degrees")
            rows["angle"] = ds.shape[0]
    else:
        geometry = _geometry(name or "clic51", fmt, path)
        ecal = _dataset(f, "ECAL", path)
        expected = (*geometry.layers[0].shape, geometry.n_layers)
        _expect(ecal, "ECAL", path, (expected,), "cells in GeV, depth last")
        rows["ECAL"] = ecal.shape[0]
        energy_key = next((k for k in _3DGAN_ENERGY if k in f), None)
        if energy_key is None:
            raise CaloforgeError(
                f"{path}: a 3DGAN file needs the incident energy per shower in GeV: dataset "
                f"'energy' (training files) or 'Target' (generated files); found "
                f"{sorted(f.keys())}"
            )
        ds = _dataset(f, energy_key, path)
        _expect(ds, energy_key, path, _SCALAR, "one incident energy per shower, in GeV")
        rows[energy_key] = ds.shape[0]
        angle_key = next((k for k in _3DGAN_ANGLE if k in f), None)
        if angle_key is not None:
            ds = _dataset(f, angle_key, path)
            unit = "pseudorapidity" if angle_key == "eta" else "radians"
            _expect(ds, angle_key, path, _SCALAR, f"one polar angle per shower, in {unit}")
            rows[angle_key] = ds.shape[0]
        has_overflow = False
    if fmt == "calochallenge" and "angle" in geometry.conditions and angle_key is None:
        raise CaloforgeError(f"{path}: geometry {geometry.name!r} needs a polar angle per "
                             "shower: dataset 'angle' (degrees) is missing")
    if len(set(rows.values())) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in rows.items())
        raise CaloforgeError(
            f"{path}: inconsistent file: its datasets have different numbers of rows "
            f"({listed}); every dataset needs one row per shower"
        )
    n = next(iter(rows.values()))
    return Layout(fmt, geometry, int(n), energy_key, angle_key, has_overflow)


def _read(f: h5py.File, key: str, start: int, stop: int, path) -> np.ndarray:
    """Rows ``[start, stop)`` of dataset ``key`` in a safe floating type: float16 and integer
    data become float32 before any unit conversion; float64 stays until it is checked."""
    try:
        arr = np.asarray(f[key][start:stop])
    except (OSError, RuntimeError) as err:
        raise CaloforgeError(
            f"{path}: cannot read dataset '{key}' (showers {start} to {stop - 1}): {err}; the "
            "file is damaged: fetch or write it again"
        ) from None
    if arr.dtype != np.float64:
        arr = arr.astype(np.float32)
    return arr


def _check_values(arr: np.ndarray, key: str, start: int, path, *, positive: bool = False,
                  non_negative: bool = True) -> None:
    if not arr.size:
        return
    # min and max see NaN and inf without a mask the size of the data; the masks are only
    # built to name the first bad shower
    lo, hi = float(arr.min()), float(arr.max())
    flat = arr.reshape(len(arr), -1)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = ~np.isfinite(flat)
        row = int(np.argmax(bad.any(axis=1)))
        raise CaloforgeError(f"{path}: dataset '{key}' holds {int(bad.sum())} NaN or infinite "
                             f"values (first in shower {start + row})")
    if arr.dtype == np.float64 and max(abs(lo), abs(hi)) > _F32_MAX:
        raise CaloforgeError(f"{path}: dataset '{key}' holds values beyond the float32 range "
                             f"({max(abs(lo), abs(hi)):.3g})")
    if positive and lo <= 0:
        row = int(np.argmax((flat <= 0).any(axis=1)))
        raise CaloforgeError(f"{path}: dataset '{key}' holds incident energies that are not "
                             f"positive (first in shower {start + row}: "
                             f"{float(flat[row].min()):g})")
    if non_negative and lo < 0:
        row = int(np.argmax((flat < 0).any(axis=1)))
        raise CaloforgeError(f"{path}: dataset '{key}' holds {int((flat < 0).sum())} negative "
                             f"energies (first in shower {start + row}: "
                             f"{float(flat[row].min()):g})")


def read_block(f: h5py.File, layout: Layout, start: int, stop: int, path, meta: dict,
               check: bool = True) -> ShowerSet:
    """Read showers ``[start, stop)`` through a :class:`Layout`, in MeV and degrees.

    Args:
        f: the open file.
        layout: from :func:`file_layout`.
        start, stop: rows to read.
        path: the file's path, for messages.
        meta: file attributes for the ShowerSet.
        check: check values (finite, non-negative, positive incident energies) and units
            (:func:`check_units`).

    Raises:
        CaloforgeError: a corrupt chunk (file and dataset named); with ``check``, bad values
            or implausible units.
    """
    g = layout.geometry

    def get(key: str, **kw) -> np.ndarray:
        arr = _read(f, key, start, stop, path)
        if check:
            _check_values(arr, key, start, path, **kw)
        return arr

    angle = None
    overflow = None
    if layout.fmt == "calogan":
        voxels = g.join_layers([get(f"layer_{i}") for i in range(g.n_layers)])
        energy = get("energy", positive=True).reshape(-1).astype(np.float64) * MEV_PER_GEV
        if layout.has_overflow:
            overflow = get("overflow")
    elif layout.fmt == "calochallenge":
        voxels = get("showers")
        energy = get("incident_energies", positive=True).reshape(-1)
        if layout.angle_key:
            angle = get(layout.angle_key, non_negative=False).reshape(-1)
    else:  # 3dgan: (N, x, y, z) in GeV with depth last; our layers are the z slices
        ecal = get("ECAL")
        voxels = np.ascontiguousarray(ecal.transpose(0, 3, 1, 2)).reshape(len(ecal), -1)
        voxels = voxels * MEV_PER_GEV
        energy = get(layout.energy_key, positive=True).reshape(-1).astype(np.float64) * MEV_PER_GEV
        angle = _3dgan_angle_deg(get, layout, len(ecal))
    showers = ShowerSet(g, voxels, energy, angle=angle, overflow=overflow, meta=meta)
    if check:
        check_units(showers, layout, path)
    return showers


def _3dgan_angle_deg(get, layout: Layout, n: int) -> np.ndarray:
    """Polar angle in degrees from a 3DGAN file: ``theta`` (radians, the generated angle),
    else ``mtheta`` (radians, measured), else ``eta`` (pseudorapidity, converted with
    ``theta = 2 atan(exp(-eta))``), else ``Angle`` (radians, files of generated showers),
    else 90 degrees (the fixed-angle data sets)."""
    key = layout.angle_key
    if key is None:
        return np.full(n, 90.0, dtype=np.float32)
    values = get(key, non_negative=False).reshape(-1).astype(np.float64)
    if key == "eta":
        return np.degrees(2.0 * np.arctan(np.exp(-values)))
    return np.degrees(values)


def check_units(showers: ShowerSet, layout: Layout, path) -> None:
    """Refuse incident energies that are implausible in the units of the format.

    A CaloGAN ``energy`` (GeV) above 1000 whose showers deposit under 1% of it, or a 3DGAN
    one above 10 TeV depositing under 0.1%, is almost surely in MeV; deposits a hundred
    times the incident energy mean the incident energy is in too large a unit for the
    cells (GeV where MeV is expected).

    Raises:
        CaloforgeError: naming the dataset, the values and the fix.
    """
    if not len(showers):
        return
    energy = showers.incident_energy.astype(np.float64)
    response = showers.voxels.sum(axis=1, dtype=np.float64) / energy
    median = float(np.median(response))
    key = layout.energy_key
    if layout.fmt in _MEV_SUSPECT_GEV:
        top = float(energy.max()) / MEV_PER_GEV
        if top > _MEV_SUSPECT_GEV[layout.fmt] and median < _MEV_SUSPECT_RESPONSE[layout.fmt]:
            raise CaloforgeError(
                f"{path}: '{key}' goes up to {top:.4g} while the showers deposit only "
                f"{median:.2g} of it: the incident energies look like MeV, but this format "
                f"stores them in GeV; divide '{key}' by 1000 (h5py: f['{key}'][...] = "
                f"f['{key}'][...] / 1000)"
            )
    if layout.fmt == "3dgan" and layout.angle_key not in (None, "eta") \
            and float(showers.angle.max()) > 360.0:
        raise CaloforgeError(
            f"{path}: '{layout.angle_key}' goes up to {float(showers.angle.max()) / 57.29578:.4g}:"
            " that looks like degrees, but 3DGAN files store the angle in radians"
        )
    if median > _MAX_RESPONSE:
        unit = "GeV" if layout.fmt != "calochallenge" else "MeV"
        cells = "MeV" if layout.fmt != "3dgan" else "GeV"
        raise CaloforgeError(
            f"{path}: the showers deposit {median:.3g} times their incident energy: '{key}' "
            f"must be in {unit} and the cells in {cells}; one of them is in the wrong unit "
            f"(a factor 1000 means GeV for MeV)"
        )
