"""``caloforge train``: train a model family on a shower file into a run directory."""

from __future__ import annotations

import click

from caloforge.cli._options import OutputPath, seed_option


@click.command()
@click.argument("model")
@click.option("--data", "-d", type=click.Path(dir_okay=False), default=None,
              help="Training showers (HDF5). Optional with --resume (the run remembers it).")
@click.option("--out", "-o", "rundir", required=True, type=OutputPath("folder"),
              help="Run directory: checkpoint.pt, log.jsonl, tensorboard/.")
@click.option("--config", "-c", type=click.Path(dir_okay=False), default=None,
              help="YAML run config with 'train' and 'model' sections (see configs/).")
@click.option("--max-steps", type=click.IntRange(1), default=None,
              help="Training steps (overrides the config).")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Showers per step (overrides the config).")
@click.option("--checkpoint-every", type=click.IntRange(1), default=None,
              help="Write the checkpoint every N steps (and at the end).")
@click.option("--device", default=None,
              help="cpu, cuda, cuda:N or auto (CUDA if available). [default: auto]")
@click.option("--num-threads", type=click.IntRange(1), default=None,
              help="torch CPU threads (leave cores to others on a shared machine).")
@seed_option(None)
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its checkpoint (exactly where it stopped).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
              help="Autocast precision (bf16: CUDA or CPU; fp16: CUDA, with a gradient "
                   "scaler). [default: fp32]")
@click.option("--compile/--no-compile", "compile_", default=None,
              help="torch.compile the training modules (checkpoints stay plain).")
@click.option("--lr-scaling", type=click.Choice(["none", "linear", "sqrt"]), default=None,
              help="Scale learning rates with the number of torchrun processes. "
                   "[default: none]")
@click.option("--stage", default=None,
              help="For models trained in stages (a distilled flow's flow1, teacher, "
              "student, for example): train up to the end of STAGE, or 'all' (sets "
              "--max-steps); one stage at a time with --resume.")
def train(model: str, data, rundir, config, max_steps, batch_size, checkpoint_every, device,
          num_threads, seed, resume, quiet, precision, compile_, lr_scaling,
          stage) -> None:
    """Train MODEL (calogan, ...) on showers from --data into the run directory --out.

    \b
    Examples:
      caloforge train calogan --data eplus.h5 --out runs/eplus --config configs/calogan.yaml
      caloforge train calogan --out runs/eplus --resume --max-steps 4000
      torchrun --nproc-per-node 2 -m caloforge train calogan --data eplus.h5 --out runs/ddp

    Under torchrun --batch-size is per process (docs/distributed.md).
    """
    from caloforge.train import load_run_config
    from caloforge.train import train as run_training

    train_section, model_section = load_run_config(config)
    cli = {"max_steps": max_steps, "batch_size": batch_size,
           "checkpoint_every": checkpoint_every, "device": device, "num_threads": num_threads,
           "seed": seed, "precision": precision, "compile": compile_,
           "lr_scaling": lr_scaling}
    overrides = {**train_section, **{k: v for k, v in cli.items() if v is not None}}
    if quiet:
        overrides["progress"] = False
    if stage is not None:
        from caloforge.errors import CaloforgeError
        from caloforge.train import stage_max_steps

        if max_steps is not None:
            raise CaloforgeError("give --stage or --max-steps, not both")
        overrides["max_steps"] = stage_max_steps(model, stage, rundir, model_section, resume)
    if resume and model_section:
        click.echo("note: --resume keeps the run's model settings; the config's 'model' "
                   "section is ignored", err=True)
    run_training(model, data, rundir, train_config=overrides, model_config=model_section,
                 resume=resume, log=click.echo)
