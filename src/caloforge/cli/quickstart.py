"""``caloforge quickstart``: simulate, train, generate, evaluate and report, in minutes."""

from __future__ import annotations

import click


@click.command()
@click.option("--dir", "directory", default="caloforge-quickstart", show_default=True,
              type=click.Path(file_okay=False), help="Folder for data, run and report.")
@click.option("--fast", is_flag=True,
              help="Tiny samples, a tiny model, 3 training steps and no figures: checks "
              "the installation in seconds (the model learns nothing).")
@click.option("--max-steps", type=click.IntRange(1), default=None,
              help="Training steps. [default: 250; 3 with --fast]")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--force", is_flag=True, help="Redo a quickstart already in --dir.")
@click.option("--open", "open_report", is_flag=True, help="Open the report in a browser.")
def quickstart(directory, fast, max_steps, device, seed, force, open_report) -> None:
    """Simulate small e+ samples, train a small CaloGAN for a few minutes, generate
    showers, evaluate them against a fresh reference sample and write a report
    (about 10 minutes on two CPU cores)."""
    from caloforge.quickstart import run_quickstart

    report = run_quickstart(directory, fast=fast, max_steps=max_steps, device=device,
                            seed=seed, force=force, echo=click.echo)
    if open_report:
        import webbrowser

        webbrowser.open(report.resolve().as_uri())
