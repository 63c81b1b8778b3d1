"""Readers and writers for the on-disk shower formats, unchanged from the tools people use.

- ``calogan``: ``layer_0`` (N,3,96), ``layer_1`` (N,12,12), ``layer_2`` (N,12,6) and
  ``overflow`` (N,3) in MeV, ``energy`` (N,1) in GeV (the public CaloGAN/CaloFlow files).
- ``calochallenge``: ``incident_energies`` (N,1) and ``showers`` (N, voxels), both MeV.
  Also used for the flat atlas89 file.
- ``3dgan``: ``ECAL`` (N,51,51,25) in GeV with depth last, ``energy`` (N,) in GeV and
  ``theta`` (N,) in radians (the public 3DGAN variable-angle files; ``mtheta`` in radians
  or the pseudorapidity ``eta`` are read when ``theta`` is absent; no angle at all means
  the fixed 90-degree data sets).

Our files add attributes: ``geometry``, ``particle``, ``generator`` (``"parametric"``, a
model name or ``"geant4"``), ``caloforge_version`` and ``seed``. Writing is chunked
(resizable datasets) and atomic (a temporary file renamed on success).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from caloforge._version import __version__
from caloforge.data.showers import ShowerSet, concatenate
from caloforge.errors import CaloforgeError
from caloforge.geometry import GEOMETRIES, Geometry, get_geometry, register_geometry

__all__ = [
    "read_showers",
    "iter_showers",
    "write_showers",
    "ShowerWriter",
    "file_info",
    "FileInfo",
]

_CALOGAN_KEYS = ("layer_0", "layer_1", "layer_2", "energy")
_GEV = 1000.0  # MeV per GeV


class FileInfo(dict):
    """What :func:`file_info` learns from a file's header: ``geometry``, ``format``,
    ``n`` and the attributes (``particle``, ``generator``, ...)."""

    @property
    def geometry(self) -> Geometry:
        return self["geometry"]

    @property
    def n(self) -> int:
        return self["n"]


def _open(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise CaloforgeError(f"file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise CaloforgeError(f"cannot read {path} as HDF5 (corrupt or not HDF5): {err}") from None


def _detect(f: h5py.File, path) -> tuple[str, Geometry]:
    """Detect format and geometry from a file's datasets and attributes."""
    name = f.attrs.get("geometry")
    if isinstance(name, bytes):
        name = name.decode()
    if name and name not in GEOMETRIES and "geometry_json" in f.attrs:
        # A geometry defined at run time (e.g. from a binning XML): the file carries it.
        register_geometry(Geometry.from_dict(json.loads(f.attrs["geometry_json"])))
    if all(k in f for k in _CALOGAN_KEYS):
        fmt = "calogan"
        geometry = get_geometry(name or "calogan")
    elif "ECAL" in f:
        fmt = "3dgan"
        geometry = get_geometry(name or "clic51")
    elif "showers" in f and "incident_energies" in f:
        fmt = "calochallenge"
        n_voxels = f["showers"].shape[1]
        if name:
            geometry = get_geometry(name)
        else:
            matches = [g for g in GEOMETRIES.values() if g.n_voxels == n_voxels
                       and g.file_format == "calochallenge"]
            if len(matches) != 1:
                raise CaloforgeError(
                    f"{path}: cannot tell the geometry of a file with {n_voxels} voxels; "
                    "pass --geometry"
                )
            geometry = matches[0]
    else:
        raise CaloforgeError(
            f"{path}: not a shower file: expected CaloGAN (layer_0..2, energy), "
            f"CaloChallenge (incident_energies, showers) or 3DGAN (ECAL) datasets, "
            f"found {sorted(f.keys())}"
        )
    if geometry.file_format != fmt:
        raise CaloforgeError(
            f"{path}: geometry {geometry.name!r} is stored as {geometry.file_format!r}, "
            f"but the file is in {fmt!r} layout"
        )
    return fmt, geometry


def _attrs(f: h5py.File) -> dict:
    meta = {}
    for key, value in f.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        meta[key] = value
    return meta


def _count(f: h5py.File, fmt: str) -> int:
    key = {"calogan": "energy", "calochallenge": "incident_energies", "3dgan": "ECAL"}[fmt]
    return int(f[key].shape[0])


def file_info(path: str | Path) -> FileInfo:
    """Read a file's header: geometry, format, number of showers and attributes."""
    with _open(path) as f:
        fmt, geometry = _detect(f, path)
        return FileInfo(geometry=geometry, format=fmt, n=_count(f, fmt), meta=_attrs(f))


def _read_block(f: h5py.File, fmt: str, geometry: Geometry, start: int, stop: int,
                meta: dict) -> ShowerSet:
    if fmt == "calogan":
        layers = []
        for i, layer in enumerate(geometry.layers):
            arr = f[f"layer_{i}"][start:stop]
            if arr.shape[1:] != layer.shape:
                raise CaloforgeError(
                    f"dataset layer_{i} has shape {arr.shape[1:]}, expected {layer.shape}"
                )
            layers.append(arr)
        voxels = geometry.join_layers(layers)
        energy = f["energy"][start:stop].reshape(-1) * _GEV
        overflow = f["overflow"][start:stop] if "overflow" in f else None
        return ShowerSet(geometry, voxels, energy, overflow=overflow, meta=meta)
    if fmt == "calochallenge":
        showers = f["showers"][start:stop]
        if showers.shape[1] != geometry.n_voxels:
            raise CaloforgeError(
                f"showers have {showers.shape[1]} voxels, geometry {geometry.name!r} has "
                f"{geometry.n_voxels}"
            )
        energy = f["incident_energies"][start:stop].reshape(-1)
        angle = f["angle"][start:stop].reshape(-1) if "angle" in f else None
        return ShowerSet(geometry, showers, energy, angle=angle, meta=meta)
    # 3dgan: (N, x, y, z) in GeV with depth last; our layers are the z slices.
    ecal = f["ECAL"][start:stop]
    expected = (*geometry.layers[0].shape, geometry.n_layers)
    if ecal.shape[1:] != expected:
        raise CaloforgeError(f"ECAL has shape {ecal.shape[1:]}, expected {expected}")
    voxels = np.ascontiguousarray(ecal.transpose(0, 3, 1, 2)).reshape(len(ecal), -1) * _GEV
    energy = np.asarray(f["energy"][start:stop]).reshape(-1) * _GEV
    angle = _3dgan_angle_deg(f, start, stop, len(ecal))
    return ShowerSet(geometry, voxels, energy, angle=angle, meta=meta)


def _3dgan_angle_deg(f: h5py.File, start: int, stop: int, n: int) -> np.ndarray:
    """Polar angle in degrees from a 3DGAN file: ``theta`` (radians, the generated angle),
    else ``mtheta`` (radians, measured), else ``eta`` (pseudorapidity, converted with
    ``theta = 2 atan(exp(-eta))``), else 90 degrees (the fixed-angle data sets)."""
    for key in ("theta", "mtheta"):
        if key in f:
            return np.degrees(np.asarray(f[key][start:stop], dtype=np.float64).reshape(-1))
    if "eta" in f:
        eta = np.asarray(f["eta"][start:stop], dtype=np.float64).reshape(-1)
        return np.degrees(2.0 * np.arctan(np.exp(-eta)))
    return np.full(n, 90.0, dtype=np.float32)


def iter_showers(path: str | Path, chunk_size: int = 10_000, start: int = 0,
                 stop: int | None = None) -> Iterator[ShowerSet]:
    """Stream a shower file in chunks of ``chunk_size`` showers (bounded memory)."""
    with _open(path) as f:
        fmt, geometry = _detect(f, path)
        meta = _attrs(f)
        n = _count(f, fmt)
        stop = n if stop is None else min(stop, n)
        for lo in range(start, stop, chunk_size):
            yield _read_block(f, fmt, geometry, lo, min(lo + chunk_size, stop), meta)


def read_showers(path: str | Path, n: int | None = None, start: int = 0,
                 check: bool = True) -> ShowerSet:
    """Read showers ``[start, start + n)`` of a file into memory.

    Args:
        path: a CaloGAN, CaloChallenge or 3DGAN HDF5 file.
        n: how many showers (all if ``None``).
        start: first shower.
        check: raise a :class:`CaloforgeError` on NaN, infinite or negative values.
    """
    stop = None if n is None else start + n
    chunks = list(iter_showers(path, chunk_size=100_000, start=start, stop=stop))
    if not chunks:
        raise CaloforgeError(f"{path}: file holds no showers")
    showers = concatenate(chunks)
    if check:
        showers.check_finite(str(path))
    return showers


class ShowerWriter:
    """Append showers to a file in the geometry's format, chunk by chunk, atomically.

    Use as a context manager: data go to ``PATH.tmp-<pid>`` and are renamed to ``PATH``
    only when the block exits without an exception, so a killed run never leaves a half
    file under the final name.

    Args:
        path: output file.
        geometry: the geometry of the showers to be written.
        attrs: file attributes (``particle``, ``generator``, ``seed``, ...).
        chunk_size: HDF5 chunk length along the shower axis.
    """

    def __init__(self, path: str | Path, geometry: Geometry | str, attrs: dict | None = None,
                 chunk_size: int = 1024, compression: str | None = "gzip"):
        self.path = Path(path)
        self.geometry = get_geometry(geometry)
        self.attrs = dict(attrs or {})
        self.chunk_size = chunk_size
        self.compression = compression
        self.n = 0
        self._file: h5py.File | None = None
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")

    def __enter__(self) -> ShowerWriter:
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self._tmp, "w")
        attrs = {"geometry": self.geometry.name, "caloforge_version": __version__,
                 "geometry_json": json.dumps(self.geometry.to_dict()), **self.attrs}
        for key, value in attrs.items():
            if value is None:
                continue
            self._file.attrs[key] = value
        self._create()
        return self

    def _dataset(self, name: str, shape: tuple[int, ...], unit: str) -> None:
        # At most ~4 MB per HDF5 chunk: 1024 showers of 51x51x25 would be 266 MB each.
        rows = max(1, min(self.chunk_size, (4 << 20) // (4 * int(np.prod(shape, dtype=np.int64)))))
        ds = self._file.create_dataset(
            name, shape=(0, *shape), maxshape=(None, *shape), dtype="float32",
            chunks=(rows, *shape), compression=self.compression,
        )
        ds.attrs["unit"] = unit

    def _create(self) -> None:
        g = self.geometry
        if g.file_format == "calogan":
            for i, layer in enumerate(g.layers):
                self._dataset(f"layer_{i}", layer.shape, "MeV")
            self._dataset("overflow", (g.n_layers,), "MeV")
            self._dataset("energy", (1,), "GeV")
        elif g.file_format == "calochallenge":
            self._dataset("incident_energies", (1,), "MeV")
            self._dataset("showers", (g.n_voxels,), "MeV")
            if "angle" in g.conditions:
                self._dataset("angle", (1,), "degree")
        elif g.file_format == "3dgan":
            self._dataset("ECAL", (*g.layers[0].shape, g.n_layers), "GeV")
            self._dataset("energy", (), "GeV")
            self._dataset("theta", (), "rad")
        else:  # pragma: no cover - geometries only declare these
            raise CaloforgeError(f"unknown file format {g.file_format!r}")

    def _append(self, name: str, data: np.ndarray) -> None:
        ds = self._file[name]
        ds.resize(self.n + len(data), axis=0)
        ds[self.n:] = data

    def write(self, showers: ShowerSet) -> None:
        """Append a chunk of showers."""
        if self._file is None:
            raise RuntimeError("ShowerWriter must be used as a context manager")
        if showers.geometry.name != self.geometry.name:
            raise CaloforgeError(
                f"cannot write {showers.geometry.name!r} showers to a {self.geometry.name!r} file"
            )
        g, n = self.geometry, len(showers)
        if g.file_format == "calogan":
            for i, layer in enumerate(showers.layers):
                self._append(f"layer_{i}", layer)
            overflow = showers.overflow
            if overflow is None:
                overflow = np.zeros((n, g.n_layers), np.float32)
            self._append("overflow", overflow)
            self._append("energy", showers.incident_energy.reshape(-1, 1) / _GEV)
        elif g.file_format == "calochallenge":
            self._append("incident_energies", showers.incident_energy.reshape(-1, 1))
            self._append("showers", showers.voxels)
            if "angle" in g.conditions:
                self._append("angle", showers.angle.reshape(-1, 1))
        else:
            ecal = showers.voxels.reshape(n, g.n_layers, *g.layers[0].shape)
            self._append("ECAL", ecal.transpose(0, 2, 3, 1) / _GEV)
            self._append("energy", showers.incident_energy / _GEV)
            self._append("theta", np.radians(showers.angle))
        self.n += n

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.close()
        self._file = None
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def write_showers(path: str | Path, showers: ShowerSet, attrs: dict | None = None,
                  chunk_size: int = 10_000) -> Path:
    """Write a ShowerSet to ``path`` in its geometry's format (atomic)."""
    meta = {**showers.meta, **(attrs or {})}
    with ShowerWriter(path, showers.geometry, meta) as writer:
        for lo in range(0, len(showers), chunk_size):
            writer.write(showers[lo:lo + chunk_size])
    return Path(path)
