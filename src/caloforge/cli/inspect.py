"""``caloforge inspect``: a one-screen summary of a shower file, and average layer images."""

from __future__ import annotations

import click


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="Write the average shower image of each layer as PNG into this folder.")
@click.option("--max-showers", type=click.IntRange(min=1), default=None,
              help="Read only the first N showers (default: all).")
def inspect(file: str, plot_dir: str | None, max_showers: int | None) -> None:
    """Summarise shower FILE: geometry, particle, N, energies, mean layer fractions.

    Incident energies are shown in GeV, deposits as fractions; images are in MeV.
    """
    from caloforge.inspect import plot_average_layers, summarize_file, summary_text

    stats = summarize_file(file, max_showers)
    click.echo(summary_text(file, stats))
    if plot_dir is not None:
        paths = plot_average_layers(stats, plot_dir)
        click.echo(f"wrote {len(paths)} images to {plot_dir}")
