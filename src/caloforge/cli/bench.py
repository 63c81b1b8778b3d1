"""``caloforge bench``: milliseconds per shower, models and simulators side by side."""

from __future__ import annotations

import json

import click


def _batch_sizes(ctx, param, value: str) -> list[int]:
    try:
        sizes = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter("expected comma-separated integers, e.g. 1,10,100") from None
    if not sizes or sizes[0] < 1:
        raise click.BadParameter("batch sizes must be positive integers")
    return sizes


def _backends(ctx, param, value: str) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    bad = [k for k in kinds if k not in ("torch", "onnxruntime")]
    if bad or not kinds:
        raise click.BadParameter("choose torch and/or onnxruntime (comma-separated)")
    return kinds


@click.command()
@click.argument("rundirs", nargs=-1)
@click.option("--batch-sizes", default="1,10,100,1000,10000", show_default=True,
              callback=_batch_sizes, help="Comma-separated batch sizes.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="Device for the models (the simulators run on the CPU).")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads for torch, onnxruntime and the parametric simulator "
              "[default: all cores].")
@click.option("--backend", "backends", default="torch", show_default=True,
              callback=_backends, help="torch, onnxruntime, or both: torch,onnxruntime.")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True,
              help="Timed calls per batch size (median and spread reported).")
@click.option("--max-seconds", type=click.FloatRange(0.1), default=60.0, show_default=True,
              help="Time budget per batch size; larger batches are skipped once exceeded.")
@click.option("--no-simulator", is_flag=True, help="Do not time the parametric simulator.")
@click.option("--geant4", "geant4", type=click.IntRange(0), default=0, show_default=True,
              help="Also time N calogan showers in Geant4 (needs the geant4 extra and data).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write all timings, hardware and notes to this JSON file.")
def bench(rundirs, batch_sizes, device, threads, backends, repeats, max_seconds, no_simulator,
          geant4, json_out) -> None:
    """Time shower generation per shower for trained runs RUNDIR... (run directories or
    pretrained names; RUN:SAMPLER picks a sampler, e.g. RUN:teacher) at several batch
    sizes, with the parametric simulator (and Geant4 on request) timed in the same run so
    that speed-ups are ratios measured side by side. Warm-up calls are excluded; each
    cell is the median over repeats ± half the interquartile range, in ms per shower.

    \b
    Examples:
      caloforge bench runs/eplus --threads 2
      caloforge bench runs/eplus runs/flow --backend torch,onnxruntime --json bench.json
      caloforge bench runs/cf_eplus:teacher runs/cf_eplus:student   (two samplers)
    """
    import os

    from caloforge.bench import REFERENCE_FIGURES, Timing, bench_runs, markdown_table

    threads = threads or len(os.sched_getaffinity(0))
    result = bench_runs(list(rundirs), batch_sizes, backends=backends, device=device,
                        threads=threads, repeats=repeats, max_seconds=max_seconds,
                        simulator=not no_simulator, geant4=geant4,
                        log=lambda m: click.echo(m, err=True))
    hw = result["hardware"]
    click.echo(f"hardware: {hw['cpu']}, {hw['cores']} cores, {threads} threads"
               + (f", {hw['gpu']}" if "gpu" in hw and device == "cuda" else "")
               + f"; torch {hw.get('torch')}")
    timings = [Timing(**t) for t in result["timings"]]
    click.echo(markdown_table(timings, batch_sizes, REFERENCE_FIGURES))
    for note in result["notes"]:
        click.echo(f"note: {note}")
    if json_out:
        with open(json_out, "w") as f:
            json.dump(result, f, indent=2)
        click.echo(f"wrote {json_out}")
