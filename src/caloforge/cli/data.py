"""``caloforge data``: list and fetch public shower data sets."""

from __future__ import annotations

import click


@click.group()
def data() -> None:
    """List and fetch public shower data sets (CaloGAN, CaloChallenge)."""


@data.command("list")
def list_() -> None:
    """Show the known data sets and their files."""
    from caloforge.data.fetch import DATASETS

    for name, (description, files) in DATASETS.items():
        click.echo(f"{name}: {description}")
        for remote in files:
            check = "sha256 published" if remote.sha256 else "no published checksum"
            click.echo(f"    {remote.name}  [{remote.geometry}; {check}]")


@data.command()
@click.argument("name")
@click.option("-o", "--output", "directory", default=".", show_default=True,
              type=click.Path(file_okay=False), help="Directory to put the files in.")
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
