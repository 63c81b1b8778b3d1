"""``caloforge quickstart``: simulate, train, generate, evaluate and report, in minutes."""

from __future__ import annotations

import click


@click.command()
@click.option("--dir", "directory", default="caloforge-quickstart", show_default=True,
              type=click.Path(file_okay=False), help="Folder for data, run and report.")
@click.option("--train", "train_demo", is_flag=True,
              help="Train a small CaloGAN first (about 10 minutes) and judge it instead of "
              "the pretrained model.")
@click.option("--pretrained", default="calogan-eplus", show_default=True,
              help="The pretrained model to judge (see `caloforge models`).")
@click.option("--fast", is_flag=True,
              help="Tiny samples and no figures (with --train also a tiny model and 3 "
              "steps): checks the installation in seconds.")
@click.option("--max-steps", type=click.IntRange(1), default=None,
              help="Training steps with --train. [default: 250; 3 with --fast]")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--force", is_flag=True, help="Redo a quickstart already in --dir.")
@click.option("--open", "open_report", is_flag=True, help="Open the report in a browser.")
def quickstart(directory, train_demo, pretrained, fast, max_steps, device, seed, force,
               open_report) -> None:
    """Generate e+ showers with the shipped pretrained model, evaluate them against fresh
    parametric reference showers and write a report (a couple of minutes on two CPU
    cores). With --train: simulate, train a small CaloGAN, generate, evaluate (about 10
    minutes)."""
    from caloforge.quickstart import run_quickstart

    report = run_quickstart(directory, fast=fast, max_steps=max_steps, device=device,
                            seed=seed, force=force, echo=click.echo, train_demo=train_demo,
                            pretrained=pretrained)
    if open_report:
        import webbrowser

        webbrowser.open(report.resolve().as_uri())
