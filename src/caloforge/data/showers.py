"""The in-memory shower container shared by every module."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry, get_geometry

__all__ = ["ShowerSet", "concatenate"]


@dataclass
class ShowerSet:
    """A batch of showers for one geometry.

    Attributes:
        geometry: the calorimeter readout.
        voxels: ``(N, geometry.n_voxels)`` float32 deposits in MeV, flat layer-major order.
        incident_energy: ``(N,)`` float32 incident particle energy in MeV.
        angle: ``(N,)`` float32 polar angle in degrees, or ``None`` for geometries without
            an angle condition.
        overflow: ``(N, n_layers)`` float32 energy outside the grid per layer in MeV, or
            ``None``.
        meta: file attributes (``particle``, ``generator``, ``seed``, ...).
    """

    geometry: Geometry
    voxels: np.ndarray
    incident_energy: np.ndarray
    angle: np.ndarray | None = None
    overflow: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.geometry = get_geometry(self.geometry)
        self.voxels = np.asarray(self.voxels, dtype=np.float32)
        self.incident_energy = np.asarray(self.incident_energy, dtype=np.float32).reshape(-1)
        n = len(self.incident_energy)
        if self.voxels.ndim != 2 or self.voxels.shape != (n, self.geometry.n_voxels):
            raise CaloforgeError(
                f"voxels must have shape ({n}, {self.geometry.n_voxels}) for geometry "
                f"{self.geometry.name!r}, got {self.voxels.shape}"
            )
        if self.angle is not None:
            self.angle = np.asarray(self.angle, dtype=np.float32).reshape(-1)
            if len(self.angle) != n:
                raise CaloforgeError(f"angle has {len(self.angle)} entries, expected {n}")
        elif "angle" in self.geometry.conditions:
            raise CaloforgeError(f"geometry {self.geometry.name!r} needs an angle per shower")
        if self.overflow is not None:
            self.overflow = np.asarray(self.overflow, dtype=np.float32).reshape(
                n, self.geometry.n_layers
            )

    def __len__(self) -> int:
        return len(self.incident_energy)

    def __getitem__(self, index) -> ShowerSet:
        """Select showers (slice, integer array or boolean mask); returns a new ShowerSet."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1)
        return replace(
            self,
            voxels=self.voxels[index],
            incident_energy=self.incident_energy[index],
            angle=None if self.angle is None else self.angle[index],
            overflow=None if self.overflow is None else self.overflow[index],
            meta=dict(self.meta),
        )

    @property
    def particle(self) -> str:
        return str(self.meta.get("particle", "unknown"))

    @property
    def layers(self) -> list[np.ndarray]:
        """Per-layer views ``(N, *layer.shape)`` in MeV."""
        return self.geometry.split_layers(self.voxels)

    def layer_energies(self) -> np.ndarray:
        """``(N, n_layers)`` summed deposit per layer in MeV (overflow excluded)."""
        return np.stack(
            [self.voxels[:, self.geometry.layer_slice(i)].sum(axis=1)
             for i in range(self.geometry.n_layers)],
            axis=1,
        )

    def total_energy(self) -> np.ndarray:
        """``(N,)`` summed deposit in the grid in MeV (overflow excluded)."""
        return self.voxels.sum(axis=1)

    def conditions(self) -> np.ndarray:
        """``(N, n_conditions)`` conditions in the geometry's order: energy in MeV, angle
        in degrees."""
        cols = []
        for name in self.geometry.conditions:
            if name == "energy":
                cols.append(self.incident_energy)
            elif name == "angle":
                cols.append(self.angle)
            else:  # pragma: no cover - geometries only declare these two
                raise CaloforgeError(f"unknown condition {name!r}")
        return np.stack(cols, axis=1).astype(np.float32)

    def check_finite(self, what: str = "showers") -> None:
        """Raise a :class:`CaloforgeError` on NaN/inf or negative energies."""
        for name, arr in (("voxels", self.voxels), ("incident_energy", self.incident_energy),
                          ("angle", self.angle), ("overflow", self.overflow)):
            if arr is None:
                continue
            if not np.all(np.isfinite(arr)):
                raise CaloforgeError(f"{what}: {name} contains NaN or infinite values")
        if np.any(self.incident_energy <= 0):
            raise CaloforgeError(f"{what}: incident energies must be positive")
        if np.any(self.voxels < 0):
            raise CaloforgeError(f"{what}: negative voxel energies")


def concatenate(sets: list[ShowerSet]) -> ShowerSet:
    """Join ShowerSets of the same geometry; ``meta`` is taken from the first."""
    if not sets:
        raise CaloforgeError("nothing to concatenate")
    geometry = sets[0].geometry
    for s in sets[1:]:
        if s.geometry.name != geometry.name:
            raise CaloforgeError(
                f"cannot join showers of geometries {geometry.name!r} and {s.geometry.name!r}"
            )

    def cat(attr):
        parts = [getattr(s, attr) for s in sets]
        return None if any(p is None for p in parts) else np.concatenate(parts)

    return ShowerSet(
        geometry=geometry,
        voxels=np.concatenate([s.voxels for s in sets]),
        incident_energy=np.concatenate([s.incident_energy for s in sets]),
        angle=cat("angle"),
        overflow=cat("overflow"),
        meta=dict(sets[0].meta),
    )
