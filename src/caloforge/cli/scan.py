"""``caloforge scan``: showers from one fixed latent vector while a condition varies."""

from __future__ import annotations

import click

from caloforge.cli._options import OutputPath, RangeType, seed_option


@click.command()
@click.argument("rundir")
@click.option("--vary", type=click.Choice(["energy", "x"]), default="energy",
              show_default=True,
              help="energy: the incident energy runs over --energy; x: one latent "
              "component (--direction) runs over [-span, span] at the middle energy.")
@click.option("-n", "--n", "n", type=click.IntRange(2, 50), default=10, show_default=True,
              help="Number of showers.")
@click.option("--energy", type=RangeType("GeV", low=0.0), default=None,
              help="Energy range LO:HI in GeV. [default: the trained range]")
@click.option("--direction", type=click.IntRange(0), default=0, show_default=True,
              help="Latent component varied with --vary x.")
@click.option("--span", type=click.FloatRange(0, min_open=True), default=3.0,
              show_default=True, help="Half-width of the latent scan (standard deviations).")
@seed_option(0)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
@click.option("-o", "--output", default=None, type=OutputPath(),
              help="Figure file. [default: RUNDIR/scan_<vary>.png; for a pretrained "
              "model NAME_scan_<vary>.png here]")
def scan(rundir, vary, n, energy, direction, span, seed, device, output) -> None:
    """Draw N showers from a fixed latent vector while the energy (or a latent
    direction) varies, and plot them layer by layer (the CaloGAN paper's figure).
    RUNDIR is a run directory or a pretrained name.

    Prints the requested and generated energies of each shower.
    """
    from pathlib import Path

    from caloforge.generate import plot_scan
    from caloforge.generate import scan as run_scan
    from caloforge.pretrained import resolve_run
    from caloforge.train import load_run
    from caloforge.units import mev_to_gev

    model = load_run(resolve_run(rundir), device)
    showers, values = run_scan(model, vary, n, energy, direction, span, seed)
    label = "incident energy [GeV]" if vary == "energy" else f"latent z[{direction}]"
    if output is None:
        output = (Path(rundir) / f"scan_{vary}.png" if Path(rundir).is_dir()
                  else Path(f"{rundir}_scan_{vary}.png"))
    path = plot_scan(showers, values, label, output)
    fractions = showers.layer_energies() / showers.total_energy().clip(1e-9)[:, None]
    click.echo(f"{'value':>8} {'E_inc GeV':>10} {'E_dep GeV':>10}  layer fractions")
    for v, e, d, f in zip(values, showers.incident_energy, showers.total_energy(), fractions,
                          strict=True):
        click.echo(f"{v:8.3g} {mev_to_gev(e):10.2f} {mev_to_gev(d):10.2f}  "
                   + " ".join(f"{x:.3f}" for x in f))
    click.echo(f"wrote {path}")
