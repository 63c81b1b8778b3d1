"""``caloforge simulate``: make reference showers with the parametric engine (or Geant4)."""

from __future__ import annotations

import click

from caloforge.cli._options import OutputPath, RangeType, seed_option


@click.command()
@click.option("--geometry", "-g", default="calogan", show_default=True,
              help="Calorimeter: calogan, atlas89 or clic51.")
@click.option("--particle", "-p", required=True,
              help="Primary particle: eplus, gamma, piplus (calogan); gamma (atlas89); "
              "eminus (clic51).")
@click.option("-n", "--n", "n", type=int, required=True, help="Number of showers.")
@click.option("--energy", type=RangeType("GeV", low=0.0), default=None,
              help="Incident energy range LO:HI in GeV, sampled uniformly; one value for a "
              "fixed energy. [default: the geometry's range, e.g. 1:100 for calogan]")
@click.option("--angle", type=RangeType("deg", low=0.0, high=180.0), default=None,
              help="Polar angle range LO:HI in degrees (90 = perpendicular incidence), "
              "for geometries with an angle (clic51). [default: 60:120]")
@seed_option(1)
@click.option("-o", "--output", required=True, type=OutputPath(),
              help="Output HDF5 file (the geometry's format: CaloGAN, CaloChallenge or "
              "3DGAN).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Showers simulated and written per chunk (bounds memory).")
@click.option("--engine", type=click.Choice(["parametric", "geant4"]), default="parametric",
              show_default=True,
              help="parametric: embedded GFlash-style simulator (fast, not Geant4); geant4: "
              "full simulation, needs pip install 'caloforge[geant4]' and Geant4 data.")
@click.option("--simulator-version", "version", default=None, metavar="VERSION",
              help="Calibration of the parametric engine: parametric-5 (the newest, "
              "default), parametric-4, parametric-3, or parametric-2 (the one the shipped "
              "pretrained models learned; their model cards say which). Written to the file "
              "as generator_version.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def simulate(geometry: str, particle: str, n: int, energy, angle, seed: int, output: str,
             chunk_size: int, engine: str, version: str | None, quiet: bool) -> None:
    """Simulate N reference showers into an HDF5 file.

    Energies are in GeV on the command line (voxels are written in MeV, the CaloGAN
    `energy` key in GeV, as the public files have them); angles in degrees.

    \b
    Examples:
      caloforge simulate --particle eplus -n 100000 --energy 1:100 --seed 1 -o eplus.h5
      caloforge simulate -g atlas89 --particle gamma -n 10000 -o gamma.h5
      caloforge simulate -g clic51 --particle eminus -n 1000 --angle 60:120 -o ele.h5
      caloforge simulate --particle eplus -n 50000 --simulator-version parametric-2 -o ref.h5
    """
    import importlib.util
    import time

    from caloforge.errors import CaloforgeError
    from caloforge.geometry import GEOMETRIES, get_geometry
    from caloforge.simulate import simulate_to_file

    if not get_geometry(geometry).particles:
        can = ", ".join(f"{g.name} ({'/'.join(g.particles)})" for g in GEOMETRIES.values()
                        if g.particles)
        raise CaloforgeError(f"geometry {geometry!r} cannot be simulated (no reference "
                             f"simulator for its layout); geometries that can: {can}")

    if engine == "geant4" and importlib.util.find_spec("caloforge.simulate.geant4") is None:
        raise CaloforgeError(
            "the geant4 engine is not available in this installation; install it with "
            "pip install 'caloforge[geant4]' (and the Geant4 data sets), or use "
            "--engine parametric"
        )
    if engine == "parametric":  # the default resolved, for the summary line
        from caloforge.simulate.parametric import check_version

        version = check_version(version)
    start = time.perf_counter()
    try:
        path = simulate_to_file(output, geometry, particle, n, progress=not quiet,
                                energy_range=energy, angle_range=angle, seed=seed,
                                chunk_size=chunk_size, engine=engine, version=version)
    except OSError as err:
        raise CaloforgeError(f"cannot write {output}: {err}") from None
    elapsed = time.perf_counter() - start
    label = f"{engine}, {version}" if version else engine
    click.echo(f"wrote {n} {particle} showers ({label}) to {path} in {elapsed:.1f} s "
               f"({n / max(elapsed, 1e-9):.0f} showers/s)")
