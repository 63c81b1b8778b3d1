"""Reference showers: the embedded parametric simulator (default) and Geant4.

The parametric engine is a fast GFlash-style parametrisation, always labelled
``"parametric"`` in files and reports; it is not Geant4.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from caloforge.data.formats import ShowerWriter
from caloforge.data.showers import ShowerSet, concatenate
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry, get_geometry

__all__ = ["ENGINES", "simulate", "simulate_showers", "simulate_to_file", "check_range"]

ENGINES = ("parametric", "geant4")


def check_range(name: str, value: tuple[float, float] | None, lo: float, hi: float,
                unit: str) -> tuple[float, float] | None:
    """Validate a ``(low, high)`` range inside ``[lo, hi]``; raise CaloforgeError if not."""
    if value is None:
        return None
    a, b = (float(v) for v in value)
    if not (np.isfinite(a) and np.isfinite(b)):
        raise CaloforgeError(f"{name} range {a}:{b} is not finite")
    if a > b:
        raise CaloforgeError(f"{name} range {a:g}:{b:g} {unit} is reversed; write {b:g}:{a:g}")
    if a < lo or b > hi:
        raise CaloforgeError(f"{name} range {a:g}:{b:g} {unit} is outside [{lo:g}, {hi:g}] {unit}")
    return a, b


def simulate(geometry: Geometry | str, particle: str, n: int,
             energy_range: tuple[float, float] | None = None,
             angle_range: tuple[float, float] | None = None, seed: int = 0,
             chunk_size: int = 10_000, engine: str = "parametric",
             version: str | None = None) -> Iterator[ShowerSet]:
    """Simulate ``n`` showers, yielded in chunks of at most ``chunk_size``.

    Args:
        geometry: geometry or its name.
        particle: ``"eplus"``, ``"gamma"``, ``"piplus"``, ``"eminus"`` (as the geometry allows).
        n: number of showers.
        energy_range: incident energy range in GeV, sampled uniformly (geometry default).
        angle_range: polar angle range in degrees, sampled uniformly (geometry default).
        seed: random seed; the same seed and arguments give the same showers, whatever
            ``chunk_size``.
        chunk_size: showers per yielded chunk.
        engine: ``"parametric"`` (default, embedded) or ``"geant4"`` (needs geant4-pybind).
        version: the parametric engine's calibration, one of
            :data:`caloforge.simulate.parametric.SIMULATOR_VERSIONS` (default: the newest;
            an older one reproduces the showers a model card's figures were measured on).

    Yields:
        ShowerSet chunks in MeV, with ``meta`` holding particle, generator, seed and, for
        the parametric engine, ``generator_version`` (its calibration, e.g.
        ``"parametric-5"``; written to files as an attribute).

    Raises:
        CaloforgeError: unknown particle, engine or version, a bad range, ``n <= 0``, or
            a version asked of the geant4 engine.
    """
    geometry = get_geometry(geometry)
    if not geometry.particles:
        raise CaloforgeError(f"geometry {geometry.name!r} cannot be simulated (no reference "
                             "simulator for its layout)")
    if particle not in geometry.particles:
        raise CaloforgeError(
            f"unknown particle {particle!r} for geometry {geometry.name!r}; "
            f"choose from {', '.join(geometry.particles)}"
        )
    if n <= 0:
        raise CaloforgeError(f"number of showers must be positive, got {n}")
    energy_range = check_range("energy", energy_range or geometry.energy_range, 0.01, 1e5, "GeV")
    if "angle" in geometry.conditions:
        angle_range = check_range("angle", angle_range or geometry.angle_range, 0.0, 180.0, "deg")
    elif angle_range is not None:
        raise CaloforgeError(f"geometry {geometry.name!r} has no angle condition")
    if engine == "parametric":
        from caloforge.simulate.parametric import simulate_chunks
    elif engine == "geant4":
        try:
            from caloforge.simulate.geant4 import simulate_chunks
        except ModuleNotFoundError as err:
            if err.name != "caloforge.simulate.geant4":
                raise
            raise CaloforgeError(
                "the geant4 engine is not available in this installation; install it with "
                "pip install 'caloforge[geant4]' (and the Geant4 data sets)"
            ) from None
    else:
        raise CaloforgeError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    meta = {"particle": particle, "generator": engine, "seed": int(seed)}
    kwargs = {}
    if engine == "parametric":
        from caloforge.simulate.parametric import check_version

        kwargs["version"] = meta["generator_version"] = check_version(version)
    elif version is not None:
        raise CaloforgeError(f"a simulator version ({version}) is for the parametric engine, "
                             f"not {engine}")
    for chunk in simulate_chunks(geometry, particle, n, energy_range, angle_range, seed,
                                 chunk_size, **kwargs):
        chunk.meta.update(meta)
        yield chunk


def simulate_showers(geometry: Geometry | str, particle: str, n: int, **kwargs) -> ShowerSet:
    """Like :func:`simulate`, all showers in one ShowerSet."""
    return concatenate(list(simulate(geometry, particle, n, **kwargs)))


def simulate_to_file(path: str | Path, geometry: Geometry | str, particle: str, n: int,
                     progress: bool = True, **kwargs) -> Path:
    """Simulate ``n`` showers straight to a file, chunk by chunk, atomically."""
    from tqdm.auto import tqdm

    geometry = get_geometry(geometry)
    chunks = simulate(geometry, particle, n, **kwargs)
    first = next(chunks)
    with ShowerWriter(path, geometry, first.meta) as writer, tqdm(
        total=n, unit="shower", desc=f"simulate {particle}", disable=not progress
    ) as bar:
        writer.write(first)
        bar.update(len(first))
        for chunk in chunks:
            writer.write(chunk)
            bar.update(len(chunk))
    return Path(path)
