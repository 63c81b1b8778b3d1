"""ROOT input: Geant4 ntuples of cell energies to our HDF5 formats, through uproot.

A Geant4 application writes one entry per shower. The cell energies can be stored as

- one array branch per entry holding the ``n_voxels`` cells in the geometry's flat order,
  optionally followed by ``n_layers`` overflow values (fixed-size ``float[507]``, a
  variable-size ``vector<double>``, or a multidimensional array, flattened in C order);
- one array branch per readout layer (``layer_0``, ``layer_1``, ``layer_2``, each flattened
  in C order to the layer's ``rows x cols``), as in the CaloGAN HDF5 files;
- one scalar branch per cell (``cell_0`` ... ``cell_506`` of the original CaloGAN ntuple,
  cells then the overflow), given as a wildcard pattern such as ``"cell_*"`` and ordered by
  the number in the name.

Cell energies are MeV (Geant4's unit) unless told otherwise; the incident energy unit must
be stated (the CaloGAN ntuples store ``TotalEnergy`` in GeV). TTrees and RNTuples are both
read, in chunks of entries, and written with :class:`~caloforge.data.ShowerWriter`, so the
output opens in the tools that read the public CaloGAN files.

References:
    CaloGAN's ``generation/convert.py`` (github.com/hep-lbdl/CaloGAN); uproot,
    https://uproot.readthedocs.io
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from caloforge.data.formats import ShowerWriter
from caloforge.data.showers import ShowerSet
from caloforge.errors import CaloforgeError, require_extra
from caloforge.geometry import Geometry, get_geometry

__all__ = ["convert_root", "root_trees", "ENERGY_UNITS"]

# MeV per unit.
ENERGY_UNITS = {"eV": 1e-6, "keV": 1e-3, "MeV": 1.0, "GeV": 1e3, "TeV": 1e6}
ANGLE_UNITS = {"deg": 1.0, "rad": 180.0 / np.pi}


def _unit(value: str, table: dict, what: str) -> float:
    try:
        return table[value]
    except KeyError:
        raise CaloforgeError(f"unknown {what} unit {value!r}; choose from "
                             f"{', '.join(table)}") from None


def _open(path: str | Path):
    uproot = require_extra("uproot", "root")
    path = Path(path)
    if not path.is_file():
        raise CaloforgeError(f"file not found: {path}")
    try:
        return uproot.open(path)
    except Exception as err:  # uproot raises many types for a file that is not ROOT
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CaloforgeError(f"cannot read {path} as a ROOT file: {first}") from None


def _trees(f) -> dict[str, str]:
    return {key.split(";")[0]: cls for key, cls in f.classnames().items()
            if cls == "TTree" or "RNTuple" in cls}


def root_trees(path: str | Path) -> dict[str, str]:
    """``{name: class}`` of the TTrees and RNTuples in a ROOT file (cycle numbers dropped)."""
    with _open(path) as f:
        return _trees(f)


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _resolve(patterns: Sequence[str], available: list[str], what: str, path) -> list[str]:
    """Expand wildcard patterns (ordered by the numbers in the names); check plain names."""
    names: list[str] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matched = sorted(fnmatch.filter(available, pattern), key=_natural_key)
            if not matched:
                raise CaloforgeError(f"{path}: no branch matches {what} pattern {pattern!r}; "
                                     f"branches: {_show(available)}")
            names.extend(matched)
        elif pattern in available:
            names.append(pattern)
        else:
            raise CaloforgeError(f"{path}: no branch {pattern!r} ({what}); "
                                 f"branches: {_show(available)}")
    return names


def _show(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _matrix(array, name: str, widths: tuple[int, ...]) -> np.ndarray:
    """One branch's chunk as ``(entries, width)`` float64, width one of ``widths``."""
    import awkward as ak

    while array.ndim > 2:  # fixed or variable multidimensional cells: flatten per entry
        array = ak.flatten(array, axis=2)
    if array.ndim == 1:
        out = ak.to_numpy(array).astype(np.float64).reshape(-1, 1)
    else:
        counts = np.unique(ak.to_numpy(ak.num(array, axis=1)))
        if len(counts) != 1:
            raise CaloforgeError(
                f"branch {name!r}: entries hold different numbers of cells "
                f"({', '.join(str(c) for c in counts[:5])}...), expected "
                f"{' or '.join(str(w) for w in widths)}"
            )
        out = ak.to_numpy(ak.to_regular(array, axis=1)).astype(np.float64)
        out = out.reshape(len(out), -1)
    if out.shape[1] not in widths and len(out):
        raise CaloforgeError(f"branch {name!r} holds {out.shape[1]} values per entry, "
                             f"expected {' or '.join(str(w) for w in widths)}")
    return out


def _cells_from_chunk(batch, geometry: Geometry, cell_names: list[str],
                      per_layer: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat voxels and overflow (or None) from one chunk of branches."""
    n_vox, n_lay = geometry.n_voxels, geometry.n_layers
    if per_layer:
        parts = [_matrix(batch[name], name, (layer.n_cells,))
                 for name, layer in zip(cell_names, geometry.layers, strict=True)]
        return np.concatenate(parts, axis=1), None
    if len(cell_names) == 1:
        cells = _matrix(batch[cell_names[0]], cell_names[0], (n_vox, n_vox + n_lay))
    else:  # one scalar branch per cell
        cells = np.concatenate([_matrix(batch[name], name, (1,)) for name in cell_names],
                               axis=1)
    if cells.shape[1] == n_vox + n_lay:
        return cells[:, :n_vox], cells[:, n_vox:]
    return cells, None


def convert_root(path: str | Path, out_path: str | Path, *, cells: str | Sequence[str],
                 tree: str | None = None, geometry: Geometry | str = "calogan",
                 energy: str = "TotalEnergy", energy_unit: str = "GeV",
                 cell_unit: str = "MeV", overflow: str | None = None, angle: str | None = None,
                 angle_unit: str = "deg", generator: str = "geant4",
                 particle: str | None = None, chunk_size: int = 10_000) -> int:
    """Convert a ROOT ntuple of cell energies to a shower file in the geometry's format.

    Args:
        path: the ROOT file.
        out_path: the HDF5 file to write (atomically).
        cells: the cell branch(es): one name (all cells, optionally followed by the
            per-layer overflow), one name per layer (a list, or a comma-separated string),
            or a wildcard pattern for one scalar branch per cell (``"cell_*"``).
        tree: the TTree/RNTuple name; may be left out when the file holds exactly one.
        geometry: the calorimeter the cells belong to (name or Geometry).
        energy: the branch with the incident energy of each shower.
        energy_unit: unit of ``energy`` (``"MeV"`` or ``"GeV"``, also eV/keV/TeV).
        cell_unit: unit of the cell (and overflow) energies (Geant4 writes MeV).
        overflow: a branch with ``n_layers`` overflow values per entry, if the cells do not
            carry them.
        angle: the branch with the polar angle, for geometries with an angle condition.
        angle_unit: ``"deg"`` or ``"rad"``.
        generator: the file's ``generator`` attribute: ``"geant4"`` for Geant4 ntuples.
        particle: the file's ``particle`` attribute (``"eplus"``, ...), if known.
        chunk_size: entries read per step (bounds memory).

    Returns:
        The number of showers written.

    Raises:
        CaloforgeError: missing file, tree or branch; cells that do not fit the geometry;
            NaN, infinite or negative energies.
    """
    geometry = get_geometry(geometry)
    to_mev = _unit(energy_unit, ENERGY_UNITS, "energy")
    cell_to_mev = _unit(cell_unit, ENERGY_UNITS, "cell energy")
    to_deg = _unit(angle_unit, ANGLE_UNITS, "angle")
    if chunk_size <= 0:
        raise CaloforgeError(f"chunk size must be positive, got {chunk_size}")
    if "angle" in geometry.conditions and angle is None:
        raise CaloforgeError(f"geometry {geometry.name!r} needs an angle per shower; "
                             "name its branch (--angle)")
    patterns = ([c.strip() for c in cells.split(",") if c.strip()] if isinstance(cells, str)
                else list(cells))
    with _open(path) as f:
        trees = set(_trees(f))
        if tree is None:
            if len(trees) != 1:
                raise CaloforgeError(f"{path}: holds {len(trees)} trees "
                                     f"({', '.join(sorted(trees)) or 'none'}); pass --tree")
            tree = trees.pop()
        elif tree not in trees:
            raise CaloforgeError(f"{path}: no tree {tree!r}; trees: "
                                 f"{', '.join(sorted(trees)) or 'none'}")
        ntuple = f[tree]
        available = [str(k) for k in ntuple.keys()]
        cell_names = _resolve(patterns, available, "cells", path)
        per_layer = len(cell_names) == geometry.n_layers and len(patterns) > 1
        if not per_layer and len(cell_names) > 1 and len(cell_names) not in (
                geometry.n_voxels, geometry.n_voxels + geometry.n_layers):
            raise CaloforgeError(
                f"{path}: {len(cell_names)} cell branches for geometry {geometry.name!r}: "
                f"give one branch of {geometry.n_voxels} cells, {geometry.n_layers} per-layer "
                f"branches, or {geometry.n_voxels} (+{geometry.n_layers} overflow) scalar "
                "branches"
            )
        energy_name = _resolve([energy], available, "incident energy", path)[0]
        extra = [energy_name]
        if overflow is not None:
            extra += _resolve([overflow], available, "overflow", path)
        if angle is not None:
            extra += _resolve([angle], available, "angle", path)
        wanted = list(dict.fromkeys(cell_names + extra))
        attrs = {"generator": generator, "particle": particle, "source": Path(path).name,
                 "source_tree": tree}
        n = 0
        with ShowerWriter(out_path, geometry, attrs) as writer:
            for batch in ntuple.iterate(filter_name=wanted, step_size=chunk_size,
                                        library="ak"):
                voxels, over = _cells_from_chunk(batch, geometry, cell_names, per_layer)
                if overflow is not None:
                    over = _matrix(batch[overflow], overflow, (geometry.n_layers,))
                incident = _matrix(batch[energy_name], energy_name, (1,))[:, 0] * to_mev
                angles = (None if angle is None
                          else _matrix(batch[angle], angle, (1,))[:, 0] * to_deg)
                showers = ShowerSet(
                    geometry, voxels * cell_to_mev, incident, angle=angles,
                    overflow=None if over is None else over * cell_to_mev,
                    meta=dict(attrs),
                )
                showers.check_finite(f"{path} entries {n}..{n + len(showers) - 1}")
                writer.write(showers)
                n += len(showers)
        if n == 0:
            Path(out_path).unlink(missing_ok=True)
            raise CaloforgeError(f"{path}: tree {tree!r} holds no entries")
    return n
