"""``caloforge data``: list and fetch public shower data sets, convert ROOT ntuples."""

from __future__ import annotations

import click

from caloforge.cli._options import OutputPath


@click.group()
def data() -> None:
    """List and fetch public shower data sets (CaloGAN, CaloChallenge); convert Geant4 ROOT
    ntuples of cell energies to caloforge HDF5."""


@data.command("list")
def list_() -> None:
    """Show the known data sets and their files."""
    from caloforge.data.fetch import describe_datasets

    for line in describe_datasets():
        click.echo(line)


@data.command()
@click.argument("name")
@click.option("-o", "--output", "directory", default=".", show_default=True,
              type=OutputPath("folder"), help="Directory to put the files in.")
@click.option("--mirror", default=None,
              help="Base URL of a mirror holding the same file names "
              "(or set CALOFORGE_DATA_MIRROR).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def fetch(name: str, directory: str, mirror: str | None, quiet: bool) -> None:
    """Download data set NAME (see `caloforge data list`).

    Downloads resume where an interrupted one stopped; files are verified and only then
    given their final name.
    """
    from caloforge.data.fetch import fetch_dataset

    for path in fetch_dataset(name, directory, progress=not quiet, base_url=mirror):
        click.echo(str(path))


@data.command("convert-root")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--tree", default=None,
              help="TTree/RNTuple name (optional when the file holds only one).")
@click.option("--cells", required=True,
              help="Cell branch(es): one array branch of all cells (optionally followed by "
              "the per-layer overflow); per-layer branches, comma-separated "
              "(layer_0,layer_1,layer_2); or a pattern of scalar per-cell branches ('cell_*').")
@click.option("--energy", default="TotalEnergy", show_default=True,
              help="Branch with the incident energy per shower.")
@click.option("--energy-unit", type=click.Choice(["MeV", "GeV"]), default="GeV",
              show_default=True, help="Unit of the incident energy branch.")
@click.option("--cell-unit", type=click.Choice(["MeV", "GeV"]), default="MeV",
              show_default=True, help="Unit of the cell energies (Geant4 writes MeV).")
@click.option("--overflow", default=None,
              help="Branch with the per-layer overflow, if the cells do not carry it.")
@click.option("--angle", default=None,
              help="Branch with the polar angle, for geometries with an angle (clic51).")
@click.option("--angle-unit", type=click.Choice(["deg", "rad"]), default="deg",
              show_default=True, help="Unit of the angle branch.")
@click.option("--geometry", "-g", default="calogan", show_default=True,
              help="Geometry the cells belong to.")
@click.option("--particle", default=None, help="Particle, recorded in the file (eplus, ...).")
@click.option("--generator", default="geant4", show_default=True,
              help="What made the showers, recorded as the file's generator attribute.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Entries read per step (bounds memory).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output HDF5 file in the geometry's format.")
def convert_root(file: str, tree: str | None, cells: str, energy: str, energy_unit: str,
                 cell_unit: str, overflow: str | None, angle: str | None, angle_unit: str,
                 geometry: str, particle: str | None, generator: str, chunk_size: int,
                 output: str) -> None:
    """Convert FILE, a ROOT ntuple of cell energies (Geant4), to a shower HDF5 file.

    Needs uproot: pip install 'caloforge[root]'.

    \b
    Examples:
      caloforge data convert-root run.root --tree fancy_tree --cells 'cell_*' -o eplus.h5
      caloforge data convert-root run.root --cells layer_0,layer_1,layer_2 \\
          --energy energy --energy-unit MeV -o eplus.h5
    """
    from caloforge.data.root import convert_root as convert

    n = convert(file, output, tree=tree, cells=cells, energy=energy, energy_unit=energy_unit,
                cell_unit=cell_unit, overflow=overflow, angle=angle, angle_unit=angle_unit,
                geometry=geometry, generator=generator, particle=particle,
                chunk_size=chunk_size)
    click.echo(f"wrote {n} showers to {output}")
