"""``caloforge generate``: showers from a trained run (or a pretrained model) into a file."""

from __future__ import annotations

import click

from caloforge.cli._options import RangeType, seed_option


@click.command()
@click.argument("rundir")
@click.option("-n", "--n", "n", type=click.IntRange(1), required=True,
              help="Number of showers.")
@click.option("--energy", type=RangeType("GeV", low=0.0), default=None,
              help="Incident energy range LO:HI in GeV, sampled uniformly (one value: fixed). "
              "Must lie inside the trained range. [default: the trained range]")
@click.option("--angle", type=RangeType("deg", low=0.0, high=180.0), default=None,
              help="Polar angle range LO:HI in degrees, for models trained with an angle.")
@click.option("--batch-size", "-b", type=click.IntRange(1), default=1024, show_default=True,
              help="Showers per forward pass and per written chunk.")
@seed_option(0)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="torch CPU threads (leave cores to others on a shared machine). "
              "[default: torch's, one per core]")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output HDF5 file, in the layout of the training data.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--sampler", default=None,
              help="For models with several samplers (a distilled flow's student and "
              "teacher, for example): the one to use. [default: the model's first]")
@click.option("--flow", default=None, hidden=True, help="Deprecated name of --sampler.")
@click.option("--threshold", type=click.FloatRange(min=0.0), default=None,
              help="Readout threshold in MeV per voxel: generated deposits below it are set "
              "to 0. [default: the threshold recorded with the training data, if any]")
def generate(rundir, n, energy, angle, batch_size, seed, device, threads, output, quiet,
             sampler, flow, threshold) -> None:
    """Generate N showers from the model trained in RUNDIR (a run directory or the name
    of a pretrained model, see `caloforge models`).

    \b
    Examples:
      caloforge generate runs/eplus -n 100000 --energy 1:100 -o eplus_calogan.h5
      caloforge generate runs/cf_eplus -n 1000 --sampler teacher -o cf_teacher.h5
      caloforge generate calogan-eplus -n 100000 --threads 1 -o eplus.h5
    """
    import time

    import torch

    from caloforge.errors import CaloforgeError
    from caloforge.generate import generate_to_file

    if flow is not None and sampler not in (None, flow):
        raise CaloforgeError("give --sampler only (--flow is its deprecated name)")
    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        path = generate_to_file(rundir, output, n, energy_range=energy, angle_range=angle,
                                batch_size=batch_size, seed=seed, device=device,
                                progress=not quiet, sampler=sampler or flow,
                                threshold_mev=threshold)
    except OSError as err:
        raise CaloforgeError(f"cannot write {output}: {err}") from None
    elapsed = time.perf_counter() - start
    click.echo(f"wrote {n} showers to {path} in {elapsed:.1f} s "
               f"({1e3 * elapsed / n:.3f} ms per shower, file writing included)")
