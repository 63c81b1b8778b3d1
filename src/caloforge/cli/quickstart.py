"""``caloforge quickstart``: simulate, train, generate, evaluate and report, in minutes.

A pipeline over library calls only (no mathematics here): parametric e+ showers for
training and a separate reference sample, a small CaloGAN, generated showers over the
same energy range, and ``caloforge.evaluate.evaluate_files`` for the report.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

# Sized for about 10 minutes on two loaded CPU cores; --fast is for tests (seconds).
FULL = {"n_train": 20_000, "n_reference": 10_000, "n_generated": 10_000, "max_steps": 250,
        "batch_size": 64, "classifier_inputs": ("low", "normed", "high"), "epochs": 30}
FAST = {"n_train": 1_000, "n_reference": 600, "n_generated": 600, "max_steps": 3,
        "batch_size": 32, "classifier_inputs": ("high",), "epochs": 2}
ENERGY_GEV = (1.0, 100.0)
PARTICLE = "eplus"


def run_quickstart(directory: str | Path, fast: bool = False, max_steps: int | None = None,
                   device: str = "auto", seed: int = 0, force: bool = False,
                   echo=click.echo) -> Path:
    """Run the whole chain in ``directory``; returns the path of the report."""
    from caloforge.errors import CaloforgeError
    from caloforge.evaluate import evaluate_files
    from caloforge.generate import generate_to_file
    from caloforge.simulate import simulate_to_file
    from caloforge.train import CHECKPOINT_NAME, train

    plan = dict(FAST if fast else FULL)
    if max_steps is not None:
        plan["max_steps"] = max_steps
    root = Path(directory)
    data_dir, rundir = root / "data", root / "run"
    train_file = data_dir / f"{PARTICLE}_train.h5"
    reference_file = data_dir / f"{PARTICLE}_reference.h5"
    generated_file = root / f"{PARTICLE}_calogan.h5"
    outdir = root / "evaluation"
    if (rundir / CHECKPOINT_NAME).exists():
        if not force:
            raise CaloforgeError(
                f"{root} already holds a quickstart run; pass --force to redo it or "
                "--dir to use another folder"
            )
        (rundir / CHECKPOINT_NAME).unlink()
    timings: dict[str, float] = {}
    progress = not fast

    t = time.perf_counter()
    echo(f"[1/4] simulating {plan['n_train']} + {plan['n_reference']} {PARTICLE} showers "
         f"({ENERGY_GEV[0]:g}-{ENERGY_GEV[1]:g} GeV) with the parametric simulator "
         "(a GFlash-style parametrisation, not Geant4)")
    simulate_to_file(train_file, "calogan", PARTICLE, plan["n_train"], progress=progress,
                     energy_range=ENERGY_GEV, seed=seed + 1)
    simulate_to_file(reference_file, "calogan", PARTICLE, plan["n_reference"],
                     progress=progress, energy_range=ENERGY_GEV, seed=seed + 2)
    timings["simulate"] = time.perf_counter() - t

    t = time.perf_counter()
    echo(f"[2/4] training a CaloGAN for {plan['max_steps']} steps of {plan['batch_size']} "
         f"showers -> {rundir}")
    train("calogan", train_file, rundir,
          train_config={"max_steps": plan["max_steps"], "batch_size": plan["batch_size"],
                        "checkpoint_every": max(plan["max_steps"] // 3, 1),
                        "log_every": 10, "seed": seed, "device": device,
                        "progress": progress},
          model_config=_tiny_model() if fast else None, log=echo if not fast else None)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    echo(f"[3/4] generating {plan['n_generated']} showers -> {generated_file}")
    generate_to_file(rundir, generated_file, plan["n_generated"], energy_range=ENERGY_GEV,
                     batch_size=1024, seed=seed + 3, device=device, progress=progress)
    timings["generate"] = time.perf_counter() - t

    t = time.perf_counter()
    echo(f"[4/4] evaluating against the reference sample -> {outdir}")
    metrics = evaluate_files(reference_file, generated_file, outdir,
                             classifier_inputs=plan["classifier_inputs"], seed=seed,
                             device="cpu", epochs=plan["epochs"], plots=not fast,
                             progress=progress)
    timings["evaluate"] = time.perf_counter() - t

    for kind, res in metrics.get("classifier", {}).items():
        echo(f"  classifier AUC ({kind}): {res['auc']:.3f}  (0.5: indistinguishable)")
    sep = metrics.get("separation_power") or {}
    if sep:
        worst = max(sep, key=sep.get)
        echo(f"  worst separation power: {sep[worst]:.3f} ({worst})")
    total = sum(timings.values())
    echo("  time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
         + f"; total {total / 60:.1f} min")
    report = outdir / "report.html"
    echo(f"report: {report.resolve()}")
    return report


def _tiny_model() -> dict:
    from caloforge.models.calogan import CaloGAN

    return CaloGAN.tiny_config().to_dict()


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
    report = run_quickstart(directory, fast=fast, max_steps=max_steps, device=device,
                            seed=seed, force=force)
    if open_report:
        import webbrowser

        webbrowser.open(report.resolve().as_uri())
