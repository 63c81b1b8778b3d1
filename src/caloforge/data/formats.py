"""Readers and writers for the on-disk shower formats, unchanged from the tools people use.

- ``calogan``: ``layer_0`` (N,3,96), ``layer_1`` (N,12,12), ``layer_2`` (N,12,6) and
  ``overflow`` (N,3) in MeV, ``energy`` (N,1) in GeV (the public CaloGAN/CaloFlow files).
- ``calochallenge``: ``incident_energies`` (N,1) and ``showers`` (N, voxels), both MeV.
  Also used for the flat atlas89 file.
- ``3dgan``: ``ECAL`` (N,51,51,25) in GeV with depth last, ``energy`` (N,) in GeV and
  ``theta`` (N,) in radians (the public 3DGAN variable-angle files; ``mtheta`` in radians
  or the pseudorapidity ``eta`` are read when ``theta`` is absent; no angle at all means
  the fixed 90-degree data sets). Files of generated showers as the 3DGAN code writes them
  have ``Target`` (GeV) instead of ``energy`` and ``Angle`` (radians) instead of ``theta``.

Every reader goes through :mod:`caloforge.data.validate` (dataset kinds, shapes, lengths,
values and units, corrupt chunks named).

Our files add attributes: ``geometry``, ``particle``, ``generator`` (``"parametric"``, a
model name or ``"geant4"``), ``caloforge_version`` and ``seed``. Writing is chunked
(resizable datasets) and atomic (:mod:`caloforge.data.atomic`).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from caloforge._version import __version__
from caloforge.data.atomic import atomic_output, record_input
from caloforge.data.showers import ShowerSet, concatenate
from caloforge.data.validate import Layout, file_layout, read_block
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry, get_geometry
from caloforge.units import MEV_PER_GEV

__all__ = [
    "read_showers",
    "iter_showers",
    "write_showers",
    "ShowerWriter",
    "file_info",
    "FileInfo",
]

# Showers whose values file_info checks up front (bounded to about 16 MB of cells), so that
# a file with bad values or units is refused before a command creates its outputs.
_HEAD_CELLS = 1 << 22


class FileInfo(dict):
    """What :func:`file_info` learns from a file: ``geometry``, ``format``, ``n``,
    ``has_overflow`` (whether the file stores an ``overflow`` dataset) and the attributes
    (``meta``: ``particle``, ``generator``, ...)."""

    @property
    def geometry(self) -> Geometry:
        return self["geometry"]

    @property
    def n(self) -> int:
        return self["n"]


@contextlib.contextmanager
def _open(path: str | Path) -> Iterator[tuple[h5py.File, Layout, dict]]:
    """Open a shower file, check its layout (:func:`~caloforge.data.validate.file_layout`)
    and record it as an input of the running command."""
    path = Path(path)
    if not path.exists():
        raise CaloforgeError(f"file not found: {path}")
    if path.is_dir():
        raise CaloforgeError(f"{path} is a folder, expected an HDF5 shower file")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise CaloforgeError(f"cannot read {path} as HDF5 (corrupt or not HDF5): {err}") from None
    record_input(path)
    with f:
        try:
            layout = file_layout(f, path)
            meta = _attrs(f)
        except (OSError, RuntimeError) as err:
            raise CaloforgeError(f"{path}: cannot read the file's structure ({err}); the file "
                                 "is damaged") from None
        yield f, layout, meta


def _attrs(f: h5py.File) -> dict:
    meta = {}
    for key, value in f.attrs.items():
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        meta[key] = value
    return meta


def file_info(path: str | Path, check: bool = True) -> FileInfo:
    """Read a file's header: geometry, format, number of showers and attributes.

    Args:
        path: a CaloGAN, CaloChallenge or 3DGAN HDF5 file.
        check: also check the values and units of the first showers (a few thousand at
            most), so that a bad file is refused before any output is made.

    Raises:
        CaloforgeError: a missing, unreadable or malformed file (see
            :mod:`caloforge.data.validate`).
    """
    with _open(path) as (f, layout, meta):
        if check and layout.n:
            head = max(1, min(1000, _HEAD_CELLS // max(layout.geometry.n_voxels, 1)))
            read_block(f, layout, 0, min(head, layout.n), path, meta)
        return FileInfo(geometry=layout.geometry, format=layout.fmt, n=layout.n,
                        has_overflow=layout.has_overflow, meta=meta)


def iter_showers(path: str | Path, chunk_size: int = 10_000, start: int = 0,
                 stop: int | None = None, check: bool = True) -> Iterator[ShowerSet]:
    """Stream a shower file in chunks of ``chunk_size`` showers (bounded memory).

    Args:
        path: a CaloGAN, CaloChallenge or 3DGAN HDF5 file.
        chunk_size: showers per chunk.
        start, stop: the showers to read (``stop`` ``None``: to the end).
        check: check values and units chunk by chunk (see
            :func:`~caloforge.data.validate.read_block`).

    Yields:
        ShowerSet chunks in MeV.

    Raises:
        CaloforgeError: a missing, unreadable or malformed file, a corrupt chunk, and with
            ``check`` bad values or units.
    """
    with _open(path) as (f, layout, meta):
        stop = layout.n if stop is None else min(stop, layout.n)
        for lo in range(start, stop, chunk_size):
            yield read_block(f, layout, lo, min(lo + chunk_size, stop), path, meta, check)


def read_showers(path: str | Path, n: int | None = None, start: int = 0,
                 check: bool = True) -> ShowerSet:
    """Read showers ``[start, start + n)`` of a file into memory.

    Args:
        path: a CaloGAN, CaloChallenge or 3DGAN HDF5 file.
        n: how many showers (all if ``None``).
        start: first shower.
        check: raise a :class:`CaloforgeError` on NaN, infinite or negative values and on
            implausible units.

    Raises:
        CaloforgeError: see :func:`iter_showers`; a file without showers.
    """
    stop = None if n is None else start + n
    chunks = list(iter_showers(path, chunk_size=100_000, start=start, stop=stop, check=check))
    if not chunks:
        raise CaloforgeError(f"{path}: file holds no showers")
    showers = concatenate(chunks)
    if check:
        showers.check_finite(str(path))
    return showers


class ShowerWriter:
    """Append showers to a file in the geometry's format, chunk by chunk, atomically.

    Use as a context manager: data go to a temporary file beside ``PATH`` (see
    :func:`~caloforge.data.atomic.atomic_output`) renamed to ``PATH`` only when the block
    exits without an exception, so a killed run never leaves a half file under the final
    name, nor a temporary after an exception, Ctrl-C or SIGTERM.

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
        self._atomic = None

    def __enter__(self) -> ShowerWriter:
        self._atomic = atomic_output(self.path)
        tmp = self._atomic.__enter__()
        try:
            self._file = h5py.File(tmp, "w")
            self._start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _start(self) -> None:
        attrs = {"geometry": self.geometry.name, "caloforge_version": __version__,
                 "geometry_json": json.dumps(self.geometry.to_dict()), **self.attrs}
        for key, value in attrs.items():
            if value is None:
                continue
            self._file.attrs[key] = value
        self._create()

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
            self._append("energy", showers.incident_energy.reshape(-1, 1) / MEV_PER_GEV)
        elif g.file_format == "calochallenge":
            self._append("incident_energies", showers.incident_energy.reshape(-1, 1))
            self._append("showers", showers.voxels)
            if "angle" in g.conditions:
                self._append("angle", showers.angle.reshape(-1, 1))
        else:
            ecal = showers.voxels.reshape(n, g.n_layers, *g.layers[0].shape)
            self._append("ECAL", ecal.transpose(0, 2, 3, 1) / MEV_PER_GEV)
            self._append("energy", showers.incident_energy / MEV_PER_GEV)
            self._append("theta", np.radians(showers.angle))
        self.n += n

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        atomic, self._atomic = self._atomic, None
        if atomic is not None:
            atomic.__exit__(exc_type, exc, tb)


def write_showers(path: str | Path, showers: ShowerSet, attrs: dict | None = None,
                  chunk_size: int = 10_000) -> Path:
    """Write a ShowerSet to ``path`` in its geometry's format (atomic)."""
    meta = {**showers.meta, **(attrs or {})}
    with ShowerWriter(path, showers.geometry, meta) as writer:
        for lo in range(0, len(showers), chunk_size):
            writer.write(showers[lo:lo + chunk_size])
    return Path(path)
