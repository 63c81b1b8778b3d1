"""The quickstart: showers from a pretrained model judged against fresh reference showers in
a couple of minutes; or, with ``train_demo``, simulate, train, generate and evaluate.

A pipeline over library calls only (no mathematics here): parametric e+ showers as the
reference, showers from the shipped pretrained model (or a small CaloGAN trained on the
spot) over the same energy range, and :func:`caloforge.evaluate.evaluate_files` for the
report. ``caloforge quickstart`` is its command line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

# Training demo: about 10 minutes on two loaded CPU cores; --fast is for tests (seconds).
FULL = {"n_train": 20_000, "n_reference": 10_000, "n_generated": 10_000, "max_steps": 250,
        "batch_size": 64, "classifier_inputs": ("low", "normed", "high"), "epochs": 30}
FAST = {"n_train": 1_000, "n_reference": 600, "n_generated": 600, "max_steps": 3,
        "batch_size": 32, "classifier_inputs": ("high",), "epochs": 2}
# Pretrained model: no training, sized for under 2 minutes on two CPU cores.
PRETRAINED_FULL = {"n_reference": 10_000, "n_generated": 10_000,
                   "classifier_inputs": ("low", "normed", "high"), "epochs": 15}
PRETRAINED_FAST = {"n_reference": 600, "n_generated": 600, "classifier_inputs": ("high",),
                   "epochs": 2}
PRETRAINED = "calogan-eplus"
ENERGY_GEV = (1.0, 100.0)
PARTICLE = "eplus"

__all__ = ["run_quickstart", "FULL", "FAST", "PRETRAINED_FULL", "PRETRAINED_FAST",
           "PRETRAINED", "ENERGY_GEV", "PARTICLE"]


def run_quickstart(directory: str | Path, fast: bool = False, max_steps: int | None = None,
                   device: str = "auto", seed: int = 0, force: bool = False,
                   echo: Callable[[str], None] = print, train_demo: bool = False,
                   pretrained: str = PRETRAINED) -> Path:
    """Judge the pretrained model ``pretrained`` against fresh parametric showers in
    ``directory`` (``data/`` the reference, the generated file, ``evaluation/``); with
    ``train_demo``, first train a small CaloGAN in ``run/`` and judge that instead.

    Args:
        directory: the folder to work in (created).
        fast: tiny samples (and for the training demo a tiny model and 3 steps): checks an
            installation in seconds.
        max_steps: training steps of the demo (default: 250, or 3 with ``fast``).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        seed: seeds the simulation, training, generation and evaluation.
        force: redo a quickstart already in ``directory``.
        echo: where progress lines go.
        train_demo: train a CaloGAN (about 10 minutes) instead of using a pretrained model.
        pretrained: the pretrained model to judge (see ``caloforge models``).

    Returns:
        The path of the HTML report.

    Raises:
        CaloforgeError: ``directory`` already holds a quickstart run and ``force`` is
            not set, or no pretrained model of that name is installed.
    """
    if not train_demo:
        return _pretrained_quickstart(Path(directory), pretrained, fast, device, seed, force,
                                      echo)
    from caloforge.errors import CaloforgeError
    from caloforge.simulate import simulate_to_file
    from caloforge.simulate.parametric import SIMULATOR_VERSION
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
         f"{SIMULATOR_VERSION} (a GFlash-style parametrisation, not Geant4)")
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

    echo(f"[3/4] generating {plan['n_generated']} showers -> {generated_file}")
    # over the trained range: the lowest training energy of a small file lies above 1 GeV
    metrics = _generate_and_evaluate(rundir, generated_file, reference_file, outdir, plan,
                                     None, fast, device, seed, timings, echo, "[4/4]")
    _echo_summary(metrics, timings, echo)
    report = outdir / "report.html"
    echo(f"report: {report.resolve()}")
    return report


def _pretrained_quickstart(root: Path, name: str, fast: bool, device: str, seed: int,
                           force: bool, echo: Callable[[str], None]) -> Path:
    """Reference showers, showers from pretrained model ``name``, evaluation."""
    from caloforge.errors import CaloforgeError
    from caloforge.pretrained import load_pretrained, model_card
    from caloforge.simulate import simulate_to_file
    from caloforge.simulate.parametric import check_version
    from caloforge.units import mev_to_gev

    plan = PRETRAINED_FAST if fast else PRETRAINED_FULL
    card = model_card(name)  # an unknown name lists the installed ones
    # the reference is simulated with the version the model learned (its card says which)
    try:
        version = check_version(card.get("simulator_version"))
    except CaloforgeError as err:
        raise CaloforgeError(f"model card of {name}: {err}") from None
    # the model's trained energy range (the shipped models: 1-100 GeV)
    energy = tuple(mev_to_gev(e) for e in load_pretrained(name).conditioning.energy)
    particle = card.get("particle") or PARTICLE
    reference_file = root / "data" / f"{particle}_reference.h5"
    generated_file = root / f"{particle}_{name}.h5"
    outdir = root / "evaluation"
    if generated_file.exists() and not force:
        raise CaloforgeError(f"{root} already holds a quickstart run; pass --force to redo "
                             "it or --dir to use another folder")
    for stale in (generated_file, reference_file):
        stale.unlink(missing_ok=True)
    timings: dict[str, float] = {}
    progress = not fast
    echo(f"pretrained model {name}: {card.get('summary', '')}")

    t = time.perf_counter()
    echo(f"[1/3] simulating {plan['n_reference']} {particle} reference showers "
         f"({energy[0]:.3g}-{energy[1]:.3g} GeV) with the parametric simulator "
         f"{version} (a GFlash-style parametrisation, not Geant4)")
    simulate_to_file(reference_file, card.get("geometry", "calogan"), particle,
                     plan["n_reference"], progress=progress, energy_range=energy,
                     seed=seed + 1000, version=version)
    timings["simulate"] = time.perf_counter() - t

    echo(f"[2/3] generating {plan['n_generated']} showers with {name} -> {generated_file}")
    metrics = _generate_and_evaluate(name, generated_file, reference_file, outdir, plan,
                                     energy, fast, device, seed, timings, echo, "[3/3]")
    _echo_summary(metrics, timings, echo)
    figures = card.get("figures") or {}
    if "auc_low" in figures:
        echo(f"  (samples of {plan['n_generated']} a side bias the AUC low; the model card's "
             f"figures on {figures.get('n_generated', '?')} a side: AUC low / normed / high "
             f"{figures['auc_low']} / {figures.get('auc_normed')} / {figures.get('auc_high')})")
    report = outdir / "report.html"
    echo(f"report: {report.resolve()}")
    return report


def _generate_and_evaluate(run: str | Path, generated_file: Path, reference_file: Path,
                           outdir: Path, plan: dict, energy: tuple[float, float] | None,
                           fast: bool, device: str, seed: int, timings: dict[str, float],
                           echo: Callable[[str], None], step: str) -> dict:
    """Generate ``plan['n_generated']`` showers from ``run`` (a run directory or a pretrained
    name) over ``energy`` GeV (``None``: the trained range) and evaluate them against
    ``reference_file``; returns the metrics and adds the two steps' seconds to ``timings``."""
    from caloforge.evaluate import evaluate_files
    from caloforge.generate import generate_to_file

    progress = not fast
    t = time.perf_counter()
    generate_to_file(run, generated_file, plan["n_generated"], energy_range=energy,
                     batch_size=1024, seed=seed + 3, device=device, progress=progress)
    timings["generate"] = time.perf_counter() - t
    t = time.perf_counter()
    echo(f"{step} evaluating against the reference sample -> {outdir}")
    metrics = evaluate_files(reference_file, generated_file, outdir,
                             classifier_inputs=plan["classifier_inputs"], seed=seed,
                             device="cpu", epochs=plan["epochs"], plots=not fast,
                             progress=progress)
    timings["evaluate"] = time.perf_counter() - t
    return metrics


def _echo_summary(metrics: dict, timings: dict[str, float],
                  echo: Callable[[str], None]) -> None:
    """The classifier AUCs, the worst separation power and the time of each step."""
    for kind, res in metrics.get("classifier", {}).items():
        echo(f"  classifier AUC ({kind}): {res['auc']:.3f}  (0.5: indistinguishable)")
    sep = metrics.get("separation_power") or {}
    if sep:
        worst = max(sep, key=sep.get)
        echo(f"  worst separation power: {sep[worst]:.3f} ({worst})")
    total = sum(timings.values())
    echo("  time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
         + f"; total {total / 60:.1f} min")


def _tiny_model() -> dict:
    from caloforge.models.calogan import CaloGAN

    return CaloGAN.tiny_config().to_dict()
