"""Geometry-specific evaluation that plugs into the streamed pipeline.

The generic pipeline (:mod:`caloforge.evaluate.pipeline`) runs for every geometry. A
geometry whose papers ask for more (barycentres per layer of the ATLAS-like cluster,
2D projections and correlation matrices of the 3DGAN ECAL) registers a
:class:`GeometryExtra`: one instance per file sees every streamed chunk, then
:meth:`GeometryExtra.compare` turns the two instances into metrics and figures::

    @register_extra("atlas89")
    class Atlas89Extra(GeometryExtra):
        title = "ATLAS-like cluster"

        def update(self, voxels, incident_energy, angle): ...

        @classmethod
        def compare(cls, ref, gen, outdir, plots): ...

Extras live in the modules listed in ``_MODULES``, imported the first time one is asked
for, so the pipeline pays nothing for geometries that have none.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from caloforge.geometry import Geometry

__all__ = ["GeometryExtra", "register_extra", "extra_for"]

_MODULES = ("caloforge.evaluate.atlas89", "caloforge.evaluate.clic51")
_REGISTRY: dict[str, type[GeometryExtra]] = {}
_discovered = False


class GeometryExtra:
    """Bounded-memory accumulator of one file's geometry-specific observables.

    Args:
        geometry: the readout both files share.

    Attributes:
        title: heading of the report section.
    """

    title: str = ""

    def __init__(self, geometry: Geometry):
        self.geometry = geometry

    def update(self, voxels: np.ndarray, incident_energy: np.ndarray,
               angle: np.ndarray | None) -> None:
        """Take one chunk: ``voxels`` ``(n, n_voxels)`` MeV, ``incident_energy`` ``(n,)``
        MeV, ``angle`` ``(n,)`` degrees or ``None``."""
        raise NotImplementedError

    @classmethod
    def compare(cls, ref: GeometryExtra, gen: GeometryExtra, outdir: Path,
                plots: bool) -> tuple[dict, list[tuple[str, str]]]:
        """JSON-safe metrics and the figures written to ``outdir`` as ``(caption, file)``
        pairs (none when ``plots`` is false)."""
        raise NotImplementedError


def register_extra(*geometry_names: str):
    """Class decorator: use a :class:`GeometryExtra` for the named geometries."""

    def decorate(cls: type[GeometryExtra]) -> type[GeometryExtra]:
        if not (isinstance(cls, type) and issubclass(cls, GeometryExtra)):
            raise TypeError("@register_extra needs a GeometryExtra subclass")
        for name in geometry_names:
            _REGISTRY[name] = cls
        return cls

    return decorate


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in _MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a missing dependency inside the module is a real error
                raise


def extra_for(geometry: Geometry) -> type[GeometryExtra] | None:
    """The extra registered for ``geometry`` (by name), or ``None``."""
    _discover()
    return _REGISTRY.get(geometry.name)
