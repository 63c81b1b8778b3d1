"""``caloforge evaluate``: compare generated showers with reference showers."""

from __future__ import annotations

import click

from caloforge.cli._options import OutputPath, SeedType


def _inputs(ctx, param, value: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    allowed = ("low", "normed", "high")
    bad = [k for k in kinds if k not in allowed]
    if bad or not kinds:
        raise click.BadParameter(f"choose from {', '.join(allowed)} (comma-separated)")
    return kinds


def _pm(result: dict, key: str) -> str:
    error = result.get(f"{key}_error")
    return f"{result[key]:.4f}" + (f" ± {error:.3f}" if error is not None else "")


@click.command(help="Compare generated showers with reference showers: shower-shape "
               "histograms and separation powers, classifier AUC/JSD, FPD/KPD, nearest "
               "neighbours. Writes OUTDIR/metrics.json and OUTDIR/report.html.")
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("generated", type=click.Path(dir_okay=False))
@click.option("-o", "--outdir", default="evaluation", show_default=True,
              type=OutputPath("folder"), help="Folder for metrics, report and plots.")
@click.option("--classifier-inputs", default="low,normed,high", show_default=True,
              callback=_inputs, help="Classifier inputs, comma-separated.")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(1),
              help="Classifier runs per input (error bar = their standard deviation).")
@click.option("--max-showers", default=None, type=click.IntRange(2),
              help="Use at most N showers of each file.")
@click.option("--no-classifier", is_flag=True, help="Skip the classifier test.")
@click.option("--seed", default=0, show_default=True, type=SeedType(), help="Random seed.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="Device of the classifier.")
@click.option("--epochs", default=50, show_default=True, type=click.IntRange(1),
              help="Most classifier epochs per run (early stopping usually ends sooner).")
@click.option("--threads", default=None, type=click.IntRange(1),
              help="CPU threads for torch and BLAS (default: all cores; 1 is often fastest "
              "on a machine shared with other jobs).")
@click.option("--threshold", default=None, type=click.FloatRange(min=0.0),
              help="Readout threshold in MeV per cell, applied to both samples before every "
              "metric (default: the geometry's, e.g. 1 MeV for CaloChallenge dataset 1, "
              "0.01515 MeV for datasets 2 and 3; see docs/evaluation.md).")
@click.option("--no-distances", is_flag=True, help="Skip FPD and KPD.")
@click.option("--no-plots", is_flag=True, help="Metrics only, no figures.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def evaluate(reference, generated, outdir, classifier_inputs, repeat, max_showers,
             no_classifier, seed, device, epochs, threads, threshold, no_distances,
             no_plots, quiet) -> None:
    from caloforge.evaluate.pipeline import evaluate_files

    metrics = evaluate_files(reference, generated, outdir, classifier_inputs=classifier_inputs,
                             repeat=repeat, max_showers=max_showers,
                             classifier=not no_classifier, seed=seed, device=device,
                             epochs=epochs, plots=not no_plots, progress=not quiet,
                             threads=threads, threshold=threshold,
                             distances=not no_distances)
    click.echo(f"reference: {metrics['reference']['generator_label']}, "
               f"{metrics['n_reference']} showers")
    click.echo(f"generated: {metrics['generated']['generator_label']}, "
               f"{metrics['n_generated']} showers")
    click.echo(f"readout threshold: {metrics['threshold_MeV']:.6g} MeV per cell "
               f"({metrics['threshold_source']})")
    for kind, res in metrics["classifier"].items():
        click.echo(f"classifier {kind:6s}: AUC {_pm(res, 'auc')} calibrated, "
                   f"{_pm(res, 'auc_uncalibrated')} raw; JSD {res['jsd']:.4f}")
    fpd, kpd = metrics["fpd"], metrics["kpd"]
    if fpd is None:
        click.echo(f"FPD/KPD {metrics['distances']}")
    else:
        click.echo(f"FPD {fpd[0]:.4g} ± {fpd[1]:.2g}; KPD {kpd[0]:.4g} ± {kpd[1]:.2g}")
    sep = metrics["separation_power"]
    worst = max(sep, key=sep.get)
    click.echo(f"separation power: mean {sum(sep.values()) / len(sep):.4f}, "
               f"max {sep[worst]:.4f} ({worst})")
    click.echo(f"wrote {outdir}/metrics.json and {outdir}/report.html "
               f"in {metrics['timing_s']['total']:.1f} s")
