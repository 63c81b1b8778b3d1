"""Calorimeter geometries as data.

A :class:`Geometry` is a frozen description of a calorimeter's readout: its layers (each a
2D cell grid with cell sizes and a depth range), the conditions a shower depends on, the
particles and energy range it was designed for, and its on-disk format. Every other module
asks the geometry for shapes; nothing else hard-codes 504 or 51.

Flat voxel order: layers are concatenated in order, each layer flattened in C order
(``layer.shape``), so ``voxels[:, geometry.layer_slice(i)].reshape(-1, *layer.shape)``
is layer ``i``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np

from caloforge.errors import CaloforgeError

__all__ = [
    "Layer",
    "Geometry",
    "CALOGAN",
    "ATLAS89",
    "CLIC51",
    "GEOMETRIES",
    "get_geometry",
    "register_geometry",
    "geometry_from_binning_xml",
]


@dataclass(frozen=True)
class Layer:
    """One readout layer: a 2D grid of cells.

    Attributes:
        name: the layer's name in the field's words (``"presampler"``, ``"layer_1"``).
        shape: number of cells along the two transverse axes ``(rows, cols)``.
        cell_size: cell size along the two axes, in ``cell_unit``.
        depth: ``(start, end)`` of the layer along the shower axis, in ``depth_unit``.
        cell_unit: ``"mm"``, ``"eta,phi"``, or ``"alpha,r"`` for polar layers (CaloChallenge),
            whose rows are angular bins and columns radial bins.
        depth_unit: ``"mm"``, ``"X0"`` (radiation lengths) or ``"layer"`` (index only).
        r_edges: radial bin edges in mm for polar layers, else ``None``.
    """

    name: str
    shape: tuple[int, int]
    cell_size: tuple[float, float]
    depth: tuple[float, float]
    cell_unit: str = "mm"
    depth_unit: str = "mm"
    r_edges: tuple[float, ...] | None = None

    @property
    def n_cells(self) -> int:
        return int(self.shape[0] * self.shape[1])

    @property
    def is_polar(self) -> bool:
        return self.r_edges is not None

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Centres of the cells along the two axes (centred on 0), in ``cell_unit``.

        For polar layers: angular bin centres in radians and radial bin centres in mm.
        """
        if self.is_polar:
            alpha = (np.arange(self.shape[0]) + 0.5) * 2 * np.pi / self.shape[0]
            edges = np.asarray(self.r_edges)
            return alpha, 0.5 * (edges[1:] + edges[:-1])
        rows = (np.arange(self.shape[0]) - (self.shape[0] - 1) / 2) * self.cell_size[0]
        cols = (np.arange(self.shape[1]) - (self.shape[1] - 1) / 2) * self.cell_size[1]
        return rows, cols

    def cell_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Transverse position of every cell centre, two arrays of ``shape``.

        Cartesian layers: (row coordinate, column coordinate) in ``cell_unit``.
        Polar layers: (x, y) = (r cos(alpha), r sin(alpha)) in mm.
        """
        a, b = self.cell_centres()
        if self.is_polar:
            alpha, r = np.meshgrid(a, b, indexing="ij")
            return r * np.cos(alpha), r * np.sin(alpha)
        return tuple(np.meshgrid(a, b, indexing="ij"))


@dataclass(frozen=True)
class Geometry:
    """A calorimeter readout.

    Attributes:
        name: registry name (``"calogan"``, ``"atlas89"``, ``"clic51"``, ...).
        layers: the readout layers, front to back.
        conditions: names of the conditions a shower depends on (``"energy"``, ``"angle"``).
        particles: particles the reference simulator knows for this geometry.
        energy_range: default incident energy range in GeV.
        angle_range: default polar angle range in degrees, or ``None`` (perpendicular).
        file_format: ``"calogan"``, ``"3dgan"`` or ``"calochallenge"``.
        has_overflow: whether the format stores energy outside the grid per layer.
        description: one line for humans.
    """

    name: str
    layers: tuple[Layer, ...]
    conditions: tuple[str, ...] = ("energy",)
    particles: tuple[str, ...] = ()
    energy_range: tuple[float, float] = (1.0, 100.0)
    angle_range: tuple[float, float] | None = None
    file_format: str = "calochallenge"
    has_overflow: bool = False
    description: str = ""

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @cached_property
    def layer_sizes(self) -> tuple[int, ...]:
        return tuple(layer.n_cells for layer in self.layers)

    @property
    def n_voxels(self) -> int:
        return int(sum(self.layer_sizes))

    @cached_property
    def layer_offsets(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(self.layer_sizes)]))

    def layer_slice(self, index: int) -> slice:
        """The slice of the flat voxel vector holding layer ``index``."""
        return slice(self.layer_offsets[index], self.layer_offsets[index + 1])

    def split_layers(self, voxels: np.ndarray) -> list[np.ndarray]:
        """Split flat voxels ``(N, n_voxels)`` into per-layer arrays ``(N, *layer.shape)``.

        Raises:
            CaloforgeError: ``voxels`` is not ``(N, n_voxels)``.
        """
        voxels = np.asarray(voxels)
        if voxels.ndim != 2 or voxels.shape[1] != self.n_voxels:
            raise CaloforgeError(
                f"expected voxels of shape (N, {self.n_voxels}) for geometry {self.name!r}, "
                f"got {voxels.shape}"
            )
        return [
            voxels[:, self.layer_slice(i)].reshape(len(voxels), *layer.shape)
            for i, layer in enumerate(self.layers)
        ]

    def join_layers(self, layers: list[np.ndarray]) -> np.ndarray:
        """Inverse of :meth:`split_layers`: per-layer arrays to flat ``(N, n_voxels)``.

        Raises:
            CaloforgeError: the wrong number of layers or a layer of the wrong shape.
        """
        if len(layers) != self.n_layers:
            raise CaloforgeError(
                f"geometry {self.name!r} has {self.n_layers} layers, got {len(layers)}"
            )
        flat = []
        for layer, arr in zip(self.layers, layers, strict=True):
            arr = np.asarray(arr)
            if arr.shape[1:] != layer.shape:
                raise CaloforgeError(
                    f"layer {layer.name!r} of {self.name!r} has shape {layer.shape}, "
                    f"got {arr.shape[1:]}"
                )
            flat.append(arr.reshape(len(arr), -1))
        return np.concatenate(flat, axis=1)

    def to_dict(self) -> dict:
        """A plain dict (JSON/YAML-safe) that :meth:`from_dict` turns back into the geometry."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        d = dict(d)
        d["layers"] = tuple(
            Layer(**{**layer, "shape": tuple(layer["shape"]),
                     "cell_size": tuple(layer["cell_size"]), "depth": tuple(layer["depth"]),
                     "r_edges": None if layer.get("r_edges") is None
                     else tuple(layer["r_edges"])})
            for layer in d["layers"]
        )
        for key in ("conditions", "particles", "energy_range"):
            d[key] = tuple(d[key])
        if d.get("angle_range") is not None:
            d["angle_range"] = tuple(d["angle_range"])
        return cls(**d)


CALOGAN = Geometry(
    name="calogan",
    layers=(
        Layer("layer_0", (3, 96), (160.0, 5.0), (-240.0, -150.0)),
        Layer("layer_1", (12, 12), (40.0, 40.0), (-150.0, 197.0)),
        Layer("layer_2", (12, 6), (40.0, 80.0), (197.0, 240.0)),
    ),
    particles=("eplus", "gamma", "piplus"),
    energy_range=(1.0, 100.0),
    file_format="calogan",
    has_overflow=True,
    description="CaloGAN 3-layer Pb/LAr sampling calorimeter, 80 x (2 mm Pb + 4 mm LAr), "
    "504 voxels (arXiv:1705.02355)",
)

ATLAS89 = Geometry(
    name="atlas89",
    layers=(
        Layer("presampler", (3, 2), (0.025, 0.1), (2.0, 2.5), "eta,phi", "X0"),
        Layer("strip", (24, 2), (0.003125, 0.1), (2.5, 6.8), "eta,phi", "X0"),
        Layer("middle", (3, 7), (0.025, 0.0245), (6.8, 22.8), "eta,phi", "X0"),
        Layer("back", (2, 7), (0.05, 0.0245), (22.8, 24.8), "eta,phi", "X0"),
    ),
    particles=("gamma",),
    energy_range=(10.0, 100.0),
    file_format="calochallenge",
    description="ATLAS-like barrel photon cluster at eta ~ 0: presampler, strip, middle, "
    "back; 89 cells",
)

CLIC51 = Geometry(
    name="clic51",
    layers=tuple(
        Layer(f"layer_{i:02d}", (51, 51), (5.1, 5.1), (5.1 * i, 5.1 * (i + 1)))
        for i in range(25)
    ),
    conditions=("energy", "angle"),
    particles=("eminus",),
    energy_range=(100.0, 200.0),
    angle_range=(60.0, 120.0),
    file_format="3dgan",
    description="CLIC-like Si-W high-granularity ECAL, 51 x 51 x 25 cells of 5.1 mm, "
    "inner radius 1.5 m (3DGAN)",
)


def geometry_from_binning_xml(path, name: str, energy_range: tuple[float, float] = (1.0, 1000.0),
                              particles: tuple[str, ...] = (), description: str = "") -> Geometry:
    """Build a geometry from a CaloChallenge binning XML file.

    Each ``<Layer>`` has radial bin edges ``r_edges`` (mm) and ``n_bin_alpha`` angular bins;
    layers with no radial bin (``r_edges="0"``) hold no voxel and are left out. Voxels are
    flattened (layer, alpha, r), as in the CaloChallenge files.

    References:
        Fast Calorimeter Simulation Challenge 2022, https://calochallenge.github.io/homepage/

    Raises:
        CaloforgeError: the file is missing or not a CaloChallenge binning file.
    """
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as err:
        raise CaloforgeError(f"cannot read binning XML {path}: {err}") from None
    layers = []
    for node in root.iter("Layer"):
        edges = tuple(float(x) for x in node.attrib["r_edges"].split(","))
        n_alpha = int(node.attrib.get("n_bin_alpha", 1))
        if len(edges) < 2:
            continue
        index = int(node.attrib["id"])
        layers.append(Layer(
            f"layer_{index}", (n_alpha, len(edges) - 1),
            (360.0 / n_alpha, (edges[-1] - edges[0]) / (len(edges) - 1)),
            (float(index), float(index + 1)), "alpha,r", "layer", edges,
        ))
    if not layers:
        raise CaloforgeError(f"binning XML {path} defines no voxels")
    return Geometry(name=name, layers=tuple(layers), particles=particles,
                    energy_range=energy_range, file_format="calochallenge",
                    description=description or f"layout from {path}")


def _calochallenge_geometries() -> list[Geometry]:
    from importlib.resources import files

    folder = files("caloforge") / "geometries"
    specs = [
        ("calochallenge_ds1_photons", "binning_dataset_1_photons.xml", (0.256, 4194.304),
         "CaloChallenge dataset 1 photons (ATLAS-like), 368 voxels"),
        ("calochallenge_ds1_pions", "binning_dataset_1_pions.xml", (0.256, 4194.304),
         "CaloChallenge dataset 1 pions (ATLAS-like), 533 voxels"),
        ("calochallenge_ds2", "binning_dataset_2.xml", (1.0, 1000.0),
         "CaloChallenge dataset 2 electrons, 45 x 16 x 9 = 6480 voxels"),
        ("calochallenge_ds3", "binning_dataset_3.xml", (1.0, 1000.0),
         "CaloChallenge dataset 3 electrons, 45 x 50 x 18 = 40500 voxels"),
    ]
    return [geometry_from_binning_xml(folder / xml, name, energy_range=erange,
                                      description=text)
            for name, xml, erange, text in specs]


GEOMETRIES: dict[str, Geometry] = {
    g.name: g for g in (CALOGAN, ATLAS89, CLIC51, *_calochallenge_geometries())
}


def register_geometry(geometry: Geometry) -> Geometry:
    """Add a geometry to the registry (e.g. one built from a CaloChallenge binning XML)."""
    GEOMETRIES[geometry.name] = geometry
    return geometry


def get_geometry(name: str | Geometry) -> Geometry:
    """Look a geometry up by name; a :class:`Geometry` passes through.

    Raises:
        CaloforgeError: an unknown name; the message lists the known ones.

    Examples:
        >>> g = get_geometry("calogan")
        >>> g.n_voxels, [layer.shape for layer in g.layers]
        (504, [(3, 96), (12, 12), (12, 6)])
        >>> g.conditions, g.energy_range
        (('energy',), (1.0, 100.0))
    """
    if isinstance(name, Geometry):
        return name
    try:
        return GEOMETRIES[name]
    except KeyError:
        known = ", ".join(sorted(GEOMETRIES))
        raise CaloforgeError(f"unknown geometry {name!r}; known geometries: {known}") from None
