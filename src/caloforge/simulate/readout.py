"""Readout of energy deposits into a geometry's voxels: plain numpy, no Geant4.

A deposit is a point ``(x, y, z)`` in mm with an energy in MeV. The readout layer is chosen
by depth ``z`` from the layers' depth ranges (the first layer also takes everything in front
of it and the last everything behind it, as CaloGAN's ``z < -150``, ``z >= 197`` cuts do);
the cell within the layer by ``(x, y)``: rows along x, columns along y, the grid centred on
the beam axis. A deposit outside the grid goes to the layer's overflow.

For calogan this gives layer 0 for ``z < -150`` mm (3 x 96 cells of 160 mm x 5 mm), layer 1
for ``-150 <= z < 197`` mm (12 x 12 of 40 mm x 40 mm) and layer 2 for ``z >= 197`` mm
(12 x 6 of 40 mm x 80 mm), over +-240 mm; cells are half-open, ``[-240, 240)``.

Flat readout index: ``0 .. n_voxels - 1`` for voxels (the geometry's flat order), and
``n_voxels + layer`` for the overflow of ``layer``.

References:
    M. Paganini, L. de Oliveira, B. Nachman, CaloGAN, arXiv:1705.02355, and its Geant4
    application (github.com/hep-lbdl/CaloGAN, ``generation/src/SteppingAction.cc``).
"""

from __future__ import annotations

from array import array

import numpy as np

from caloforge.data.showers import ShowerSet
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry, get_geometry

__all__ = [
    "check_readout",
    "locate",
    "readout_index",
    "bin_deposits",
    "ShowerAccumulator",
]


def check_readout(geometry: Geometry | str) -> Geometry:
    """Return the geometry if its layers are Cartesian grids in mm, else raise.

    Raises:
        CaloforgeError: a layer in eta/phi, polar bins or a depth not in mm.
    """
    geometry = get_geometry(geometry)
    for layer in geometry.layers:
        if layer.is_polar or layer.cell_unit != "mm" or layer.depth_unit != "mm":
            raise CaloforgeError(
                f"geometry {geometry.name!r} has no Cartesian readout in mm (layer "
                f"{layer.name!r}: cells in {layer.cell_unit}, depth in {layer.depth_unit}); "
                "deposits can be binned only for mm geometries such as calogan"
            )
    return geometry


def _as_float(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise CaloforgeError(f"deposit {name} contains NaN or infinite values")
    return arr


def locate(geometry: Geometry | str, x, y, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Readout layer, row and column of deposits at ``(x, y, z)`` in mm.

    Args:
        geometry: a Cartesian geometry in mm (calogan).
        x, y, z: deposit positions in mm, arrays of the same length (or scalars).

    Returns:
        ``(layer, row, col)`` int arrays; ``row`` and ``col`` are -1 where the deposit
        falls outside the layer's grid (it goes to that layer's overflow).
    """
    geometry = check_readout(geometry)
    x, y, z = _as_float("x", x), _as_float("y", y), _as_float("z", z)
    if not (len(x) == len(y) == len(z)):
        raise CaloforgeError(f"x, y, z have different lengths: {len(x)}, {len(y)}, {len(z)}")
    starts = np.array([layer.depth[0] for layer in geometry.layers[1:]])
    layer = np.searchsorted(starts, z, side="right")
    row = np.full(len(z), -1, dtype=np.int64)
    col = np.full(len(z), -1, dtype=np.int64)
    for i, spec in enumerate(geometry.layers):
        sel = layer == i
        if not np.any(sel):
            continue
        (n_rows, n_cols), (dx, dy) = spec.shape, spec.cell_size
        r = np.floor((x[sel] + 0.5 * n_rows * dx) / dx).astype(np.int64)
        c = np.floor((y[sel] + 0.5 * n_cols * dy) / dy).astype(np.int64)
        inside = (r >= 0) & (r < n_rows) & (c >= 0) & (c < n_cols)
        row[sel] = np.where(inside, r, -1)
        col[sel] = np.where(inside, c, -1)
    return layer.astype(np.int64), row, col


def readout_index(geometry: Geometry | str, x, y, z) -> np.ndarray:
    """Flat readout index of deposits at ``(x, y, z)`` in mm (see the module docstring):
    a voxel in ``[0, n_voxels)``, or ``n_voxels + layer`` for overflow."""
    geometry = get_geometry(geometry)
    layer, row, col = locate(geometry, x, y, z)
    offsets = np.asarray(geometry.layer_offsets[:-1])
    n_cols = np.asarray([spec.shape[1] for spec in geometry.layers])
    voxel = offsets[layer] + row * n_cols[layer] + col
    return np.where(row >= 0, voxel, geometry.n_voxels + layer)


def bin_deposits(geometry: Geometry | str, x, y, z, edep, event=None,
                 n_events: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sum deposits into voxels and per-layer overflow, event by event.

    Args:
        geometry: a Cartesian geometry in mm (calogan).
        x, y, z: deposit positions in mm.
        edep: deposited energies in MeV.
        event: event number of each deposit in ``[0, n_events)``; all 0 if ``None``.
        n_events: number of events (rows of the result); ``max(event) + 1`` if ``None``.

    Returns:
        ``(voxels, overflow)``: ``(n_events, n_voxels)`` and ``(n_events, n_layers)``
        float64 arrays in MeV. Events without deposits are rows of zeros.
    """
    geometry = get_geometry(geometry)
    index = readout_index(geometry, x, y, z)
    edep = _as_float("energy", edep)
    if len(edep) != len(index):
        raise CaloforgeError(f"{len(edep)} energies for {len(index)} deposit positions")
    if event is None:
        event = np.zeros(len(index), dtype=np.int64)
    else:
        event = np.asarray(event, dtype=np.int64).reshape(-1)
        if len(event) != len(index):
            raise CaloforgeError(f"{len(event)} event numbers for {len(index)} deposits")
    if n_events is None:
        n_events = int(event.max()) + 1 if len(event) else 1
    if len(event) and (event.min() < 0 or event.max() >= n_events):
        raise CaloforgeError(f"event numbers must lie in [0, {n_events})")
    width = geometry.n_voxels + geometry.n_layers
    sums = np.bincount(event * width + index, weights=edep, minlength=n_events * width)
    sums = sums.astype(np.float64).reshape(n_events, width)
    return sums[:, :geometry.n_voxels], sums[:, geometry.n_voxels:]


class ShowerAccumulator:
    """Collect deposits, close them event by event, and hand back showers.

    Deposits come either as points (:meth:`add`: a position in mm, binned here) or already
    read out (:meth:`add_cells`: flat readout indices, as Geant4's scorers give them). It
    knows nothing of Geant4: any source of deposits can use it.

    Args:
        geometry: a Cartesian geometry in mm (calogan).
    """

    def __init__(self, geometry: Geometry | str):
        self.geometry = check_readout(geometry)
        self._x, self._y, self._z, self._e = (array("d") for _ in range(4))
        self._cell_index, self._cell_energy = array("q"), array("d")
        self._voxels: list[np.ndarray] = []
        self._overflow: list[np.ndarray] = []
        self._incident: list[float] = []

    def add(self, x: float, y: float, z: float, edep: float) -> None:
        """Add one deposit of ``edep`` MeV at ``(x, y, z)`` mm to the current event."""
        self._x.append(x)
        self._y.append(y)
        self._z.append(z)
        self._e.append(edep)

    def add_cells(self, index, energy) -> None:
        """Add deposits of ``energy`` MeV to flat readout indices ``index`` (voxels, then
        ``n_voxels + layer`` for overflow) of the current event."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        energy = _as_float("energy", energy)
        width = self.geometry.n_voxels + self.geometry.n_layers
        if len(index) != len(energy):
            raise CaloforgeError(f"{len(energy)} energies for {len(index)} readout indices")
        if len(index) and (index.min() < 0 or index.max() >= width):
            raise CaloforgeError(f"readout indices must lie in [0, {width})")
        self._cell_index.extend(index.tolist())
        self._cell_energy.extend(energy.tolist())

    @property
    def n_pending(self) -> int:
        """Deposits added since the last :meth:`end_event`."""
        return len(self._e) + len(self._cell_energy)

    def end_event(self, incident_energy: float) -> None:
        """Close the current event, whose primary had ``incident_energy`` MeV."""
        n_voxels = self.geometry.n_voxels
        cells = np.bincount(np.frombuffer(self._cell_index, dtype=np.int64),
                            weights=np.frombuffer(self._cell_energy),
                            minlength=n_voxels + self.geometry.n_layers).astype(np.float64)
        if len(self._e):
            voxels, overflow = bin_deposits(
                self.geometry, np.frombuffer(self._x), np.frombuffer(self._y),
                np.frombuffer(self._z), np.frombuffer(self._e), n_events=1,
            )
            cells[:n_voxels] += voxels[0]
            cells[n_voxels:] += overflow[0]
        self._voxels.append(cells[:n_voxels])
        self._overflow.append(cells[n_voxels:])
        self._incident.append(float(incident_energy))
        self.discard_event()

    def discard_event(self) -> None:
        """Forget the deposits of the current event (e.g. an aborted one)."""
        for buf in (self._x, self._y, self._z, self._e, self._cell_index, self._cell_energy):
            del buf[:]

    def __len__(self) -> int:
        return len(self._incident)

    def pop_showers(self, generator: str, **meta) -> ShowerSet:
        """The closed events as a ShowerSet (MeV), emptied from the accumulator.

        Args:
            generator: what made the deposits, written as the file's ``generator``
                attribute (``"geant4"`` only for deposits that came from Geant4).
            **meta: further attributes (``particle``, ``seed``, ...).
        """
        n, width = len(self._incident), self.geometry.n_voxels
        showers = ShowerSet(
            self.geometry,
            np.stack(self._voxels) if n else np.zeros((0, width)),
            np.asarray(self._incident),
            overflow=np.stack(self._overflow) if n else np.zeros((0, self.geometry.n_layers)),
            meta={"generator": generator, **meta},
        )
        self._voxels, self._overflow, self._incident = [], [], []
        return showers
