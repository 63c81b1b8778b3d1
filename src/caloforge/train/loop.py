"""The one training loop every model family runs in.

:func:`train` turns a shower file and configs into a run directory; :func:`fit` is the
loop itself. Per run directory:

- ``checkpoint.pt``: see :mod:`caloforge.train.checkpoint`; written every
  ``checkpoint_every`` steps and at the end, by rank 0 only.
- ``log.jsonl``: one JSON object per ``log_every`` steps (step, epoch, wall time,
  showers per second, effective batch size, learning rates ``lr_<optimiser>`` and the
  model's metrics averaged since the last line, and over the ranks under torchrun).
- ``tensorboard/``: the same metrics, when TensorBoard is installed.

Resuming restores weights, optimisers and random states and continues the data order at
the next step, so a killed run resumed from its last checkpoint ends with the same
weights as a run that was never interrupted.

Distributed training (torchrun, see :mod:`caloforge.train.distributed` and
``docs/distributed.md``): :func:`train` starts the process group from the torchrun
environment, builds identical initial weights on every rank (same seed; DDP also
broadcasts rank 0's at wrap time), scales the learning rates (``lr_scaling``), gives each
rank its share of every batch, wraps the model's gradient-taking modules once
(:func:`wrap_distributed`), draws different training noise per rank (seed + rank) and
lets only rank 0 log and checkpoint. After a torchrun restart
(``TORCHELASTIC_RESTART_COUNT > 0``) a run with a checkpoint resumes from it by itself.
Mixed precision: the loop enters an autocast context around each ``training_step`` and
gives the model a gradient scaler for fp16 (``model.scaler``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from caloforge.data.formats import read_showers
from caloforge.data.showers import ShowerSet
from caloforge.errors import CaloforgeError
from caloforge.models import Conditioning, GenerativeModel, build_model, get_model_class
from caloforge.train.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    model_from_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from caloforge.train.config import TrainConfig
from caloforge.train.data import ShowerDataset, StepBatchSampler, collate_batch
from caloforge.train.device import resolve_device, seed_everything
from caloforge.train.distributed import (
    autocast_context,
    average_metrics,
    broadcast_buffers,
    check_precision,
    distributed_info,
    gather_rng_states,
    init_distributed,
    learning_rates,
    make_grad_scaler,
    maybe_dump_state,
    maybe_inject_fault,
    restart_count,
    scale_learning_rates,
    shutdown_distributed,
)

__all__ = ["train", "fit", "resolve_device", "seed_everything", "wrap_distributed",
           "distributed_info"]  # distributed_info lives in caloforge.train.distributed

LOG_NAME = "log.jsonl"


def wrap_distributed(model: GenerativeModel, device: torch.device,
                     compile: bool = False) -> None:
    """The single place where modules are wrapped for multi-process training (DDP) and
    compiled (``torch.compile`` of the DDP wrapper, as PyTorch recommends; not the
    model's ``uncompiled_names``). The model's own submodules stay plain, so checkpoints
    keep their keys."""
    _, world_size = distributed_info()
    if world_size == 1 and not compile:
        return

    def wrap(module: torch.nn.Module, compilable: bool) -> torch.nn.Module:
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids)
        return torch.compile(module) if compile and compilable else module

    model.wrap_modules(wrap)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return None


class _Logger:
    """JSONL (and TensorBoard) logging, rank 0 only."""

    def __init__(self, rundir: Path, start_step: int, tensorboard: bool, enabled: bool):
        self.enabled = enabled
        self.path = rundir / LOG_NAME
        self.writer = None
        if not enabled:
            return
        if start_step > 0 and self.path.exists():
            # drop lines a killed run wrote after its last checkpoint (and a line it was
            # killed in the middle of writing)
            kept = [line for line in self.path.read_text().splitlines()
                    if _step_of(line) is not None and _step_of(line) <= start_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif start_step == 0:
            self.path.write_text("")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional
                pass
            else:
                self.writer = SummaryWriter(str(rundir / "tensorboard"), purge_step=start_step + 1)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def fit(model: GenerativeModel, dataset: ShowerDataset, config: TrainConfig,
        rundir: str | Path, *, particle: str, data: dict | None = None,
        resume_from: dict | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict:
    """Run the training loop.

    Args:
        model: the model, on its device, with optimisers configured (and, when resuming,
            weights and optimiser states loaded).
        dataset: the training showers.
        config: loop settings.
        rundir: run directory for checkpoint, log and TensorBoard events.
        particle: stored in checkpoints.
        data: description of the training data stored in checkpoints.
        resume_from: the checkpoint dict to continue from (its step and random states).
        on_step: called as ``on_step(step, metrics)`` after every step (and after any
            checkpoint of that step).

    Returns:
        ``{"step", "elapsed_s", "metrics"}`` (metrics of the last step).

    Raises:
        CaloforgeError: the run is already at ``max_steps``, an unsupported precision, or
            a training step with non-finite metrics (divergence).
    """
    rundir = Path(rundir)
    rank, world_size = distributed_info()
    main = rank == 0
    device = model.device
    start_step = int(resume_from["step"]) if resume_from else 0
    elapsed_before = float(resume_from.get("elapsed_s", 0.0)) if resume_from else 0.0
    if start_step >= config.max_steps:
        raise CaloforgeError(
            f"{rundir} is already at step {start_step} >= max_steps {config.max_steps}; "
            "pass a larger --max-steps to continue training"
        )
    sampler = StepBatchSampler(len(dataset), config.batch_size, config.seed, config.max_steps,
                               start_step, rank, world_size)
    check_precision(config.precision, device, model)
    # the loader gets its own generator so that creating it never draws from (and shifts)
    # the global random state the model trains with
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_batch,
                        num_workers=config.num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(config.seed))
    wrap_distributed(model, device, compile=config.compile)
    model.scaler = make_grad_scaler(config.precision, device)
    _restore_random_states(model, resume_from, config.seed, start_step)
    model.train()
    distributed = {"world_size": world_size, "batch_size_per_process": config.batch_size,
                   "effective_batch_size": config.batch_size * world_size,
                   "lr_scaling": config.lr_scaling, "learning_rates": learning_rates(model),
                   "precision": config.precision, "compile": config.compile}

    logger = _Logger(rundir, start_step, config.tensorboard, main)
    from tqdm.auto import tqdm

    bar = tqdm(total=config.max_steps, initial=start_step, unit="step",
               desc=f"train {model.family}", disable=not (config.progress and main),
               dynamic_ncols=True)
    window = _MetricWindow(config.batch_size * world_size, len(dataset))
    metrics, step = {}, start_step
    t_start = time.perf_counter()
    try:
        for step, batch in enumerate(loader, start=start_step + 1):
            with autocast_context(config.precision, device):
                metrics = model.training_step(_to_device(batch, device), step)
            _check_finite(metrics, step, rundir)
            window.add(metrics)
            if step % config.log_every == 0 or step == config.max_steps:
                record = window.flush(step, elapsed_before - t_start, device)
                means = record.pop("metrics")
                # the rates now (a family's schedule may change them every step)
                lrs = {f"lr_{name}": v[0] for name, v in learning_rates(model).items()}
                logger.log({**record, **lrs, **means})
                bar.set_postfix({k: f"{v:.3g}" for k, v in means.items()
                                if k in model.progress_metrics}, refresh=False)
            bar.update(1)
            if step % config.checkpoint_every == 0 or step == config.max_steps:
                _checkpoint(model, config, rundir, step, particle=particle, data=data,
                            distributed=distributed,
                            elapsed_s=elapsed_before + time.perf_counter() - t_start)
            if on_step is not None:
                on_step(step, metrics)
            maybe_inject_fault(step)
        maybe_dump_state(model)
    finally:
        bar.close()
        logger.close()
    return {"step": step, "elapsed_s": elapsed_before + time.perf_counter() - t_start,
            "metrics": metrics}


class _MetricWindow:
    """Metrics summed over the steps since the last log line."""

    def __init__(self, effective_batch_size: int, n_showers: int):
        self.batch, self.n_showers = effective_batch_size, n_showers
        self.sums: dict[str, float] = defaultdict(float)
        self.count, self.t_last = 0, time.perf_counter()

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] += v
        self.count += 1

    def flush(self, step: int, time_offset: float, device: torch.device) -> dict:
        """The log record of ``step`` (means over the ranks in ``metrics``); resets."""
        means = average_metrics({k: v / self.count for k, v in self.sums.items()}, device)
        now = time.perf_counter()
        record = {"step": step, "epoch": step * self.batch / self.n_showers,
                  "time_s": round(time_offset + now, 3),
                  "showers_per_s": round(self.count * self.batch
                                         / max(now - self.t_last, 1e-9), 2),
                  "effective_batch_size": self.batch, "metrics": means}
        self.sums.clear()
        self.count, self.t_last = 0, now
        return record


def _restore_random_states(model: GenerativeModel, resume_from: dict | None, seed: int,
                           start_step: int) -> None:
    """Random states (and the gradient scaler's) for this rank: the checkpoint's when
    resuming, else a per-rank seed on ranks > 0 (rank 0 keeps the seed it built with)."""
    rank, world_size = distributed_info()
    if resume_from is not None:
        rank_states = resume_from.get("rng_ranks")
        if rank_states is not None and len(rank_states) == world_size:
            set_rng_state(rank_states[rank])
        else:  # a different number of processes: rank 0 continues, the others re-seed
            set_rng_state(resume_from["rng"])
            if rank > 0:
                seed_everything(seed + rank + 7919 * start_step)
        if model.scaler is not None and resume_from.get("scaler_state"):
            model.scaler.load_state_dict(resume_from["scaler_state"])
    elif rank > 0:
        # identical initial weights (seeded alike before this), different noise per rank
        seed_everything(seed + rank)


def _check_finite(metrics: dict[str, float], step: int, rundir: Path) -> None:
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise CaloforgeError(
            f"training diverged at step {step}: {', '.join(bad)} not finite; lower "
            f"the learning rate or check the data (last checkpoint: "
            f"{rundir / CHECKPOINT_NAME})"
        )


def _checkpoint(model: GenerativeModel, config: TrainConfig, rundir: Path, step: int, *,
                particle: str, data: dict | None, distributed: dict, elapsed_s: float) -> None:
    """Write the checkpoint of ``step``: every rank takes part (collectives), rank 0
    writes."""
    if step == config.max_steps:
        broadcast_buffers(model)
    rank_states = gather_rng_states(rng_state())
    if distributed_info()[0] != 0:
        return
    extra = {"distributed": distributed}
    if rank_states is not None:
        extra["rng_ranks"] = rank_states
    if model.scaler is not None:
        extra["scaler_state"] = model.scaler.state_dict()
    save_checkpoint(rundir, model, config, step, particle=particle, data=data, extra=extra,
                    elapsed_s=elapsed_s)


def _read_training_showers(path: str | Path, max_showers: int | None) -> ShowerSet:
    showers = read_showers(path, n=max_showers)
    showers.check_finite(str(path))
    return showers


def train(family: str, data_path: str | Path, rundir: str | Path, *,
          train_config: TrainConfig | dict | None = None,
          model_config: dict | None = None, resume: bool = False,
          on_step: Callable[[int, dict[str, float]], None] | None = None,
          log: Callable[[str], None] | None = print) -> dict:
    """Train model ``family`` on a shower file into ``rundir`` (or resume it).

    Args:
        family: registered model name (``"calogan"``, ...).
        data_path: training showers (any format :func:`read_showers` reads).
        rundir: run directory; must not hold a checkpoint unless ``resume``.
        train_config: loop settings (a :class:`TrainConfig` or a dict of overrides).
            When resuming, the checkpoint's settings are used and only ``max_steps``,
            ``checkpoint_every``, ``log_every``, ``device``, ``num_workers``,
            ``num_threads``, ``tensorboard``, ``progress``, ``precision`` and ``compile``
            may be overridden.
        model_config: model settings (dict); ignored when resuming.
        resume: continue the run in ``rundir`` from its checkpoint. Implied when torchrun
            has restarted the worker group (``TORCHELASTIC_RESTART_COUNT > 0``) and
            ``rundir`` holds a checkpoint.
        on_step: see :func:`fit`.
        log: where to print one-line messages (``None``: silent).

    Returns:
        The summary of :func:`fit` plus ``rundir``.

    Raises:
        CaloforgeError: a bad setting, an unknown family, a run directory that already
            holds a run (or none when resuming), data that do not match the run, or a divergence.
    """
    rundir = Path(rundir)
    # only rank 0 talks (RANK is torchrun's; the process group does not exist yet)
    quiet = log is None or int(os.environ.get("RANK", "0") or 0) != 0
    say = (lambda _msg: None) if quiet else log
    overrides = (train_config.to_dict() if isinstance(train_config, TrainConfig)
                 else dict(train_config or {}))
    if not resume and restart_count() > 0 and (rundir / CHECKPOINT_NAME).exists():
        # torchrun restarted the group after a worker failed: continue from the checkpoint
        resume = True
        say(f"torchrun restart {restart_count()}: resuming from {rundir / CHECKPOINT_NAME}")
    resume_from = None
    if resume:
        resume_from = load_checkpoint(rundir)
        if resume_from["family"] != family:
            raise CaloforgeError(
                f"{rundir} holds a {resume_from['family']!r} run, not {family!r}"
            )
        mutable = {"max_steps", "checkpoint_every", "log_every", "device", "num_workers",
                   "num_threads", "tensorboard", "progress", "precision", "compile"}
        base = TrainConfig.from_dict(resume_from["train_config"])
        changed = {k: v for k, v in overrides.items()
                   if k in mutable or v == base.to_dict().get(k)}
        refused = sorted(set(overrides) - set(changed))
        if refused:
            raise CaloforgeError(
                f"cannot change {', '.join(refused)} when resuming; the run was trained "
                f"with {', '.join(f'{k}={base.to_dict()[k]}' for k in refused)}"
            )
        config = base.replace(**changed)
        data_path = data_path or resume_from["data"].get("path")
    else:
        if (rundir / CHECKPOINT_NAME).exists():
            raise CaloforgeError(
                f"{rundir} already holds a run; pass --resume to continue it or choose "
                "another --out"
            )
        config = TrainConfig.from_dict(overrides)
        # an unknown family or a bad model setting fails before the data are read
        get_model_class(family).Config.from_dict(model_config, where="model")
    if data_path is None:
        raise CaloforgeError("no training data given (--data FILE.h5)")

    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    device, started = init_distributed(config.device)
    ok = False
    try:
        summary = _build_and_fit(family, data_path, rundir, config, model_config,
                                 resume_from, device, on_step, say)
        ok = True
    finally:
        shutdown_distributed(started, ok)
    return summary


def _build_and_fit(family, data_path, rundir, config, model_config, resume_from, device,
                   on_step, say) -> dict:
    """Read the showers, build (or restore) the model on ``device`` and run :func:`fit`."""
    rank, world_size = distributed_info()
    showers = _read_training_showers(data_path, config.max_showers)
    particle = showers.particle
    data = {"path": str(Path(data_path).resolve()), "n": len(showers),
            "generator": showers.meta.get("generator", "unknown")}
    # which simulator version the model learns, and the readout threshold of its data (which
    # `generate` then applies to what the model makes)
    data.update({k: showers.meta[k] for k in ("generator_version", "threshold_MeV")
                 if k in showers.meta})
    seed_everything(config.seed)
    if resume_from is not None:
        if showers.geometry.to_dict() != resume_from["geometry"]:
            raise CaloforgeError(f"{data_path} is not in the geometry the run was trained on")
        model = model_from_checkpoint(resume_from, device)
        particle = resume_from["particle"]
        model.configure_optimizers()
        model.load_optimizer_state_dict(resume_from["optimizer_state"])
        say(f"resuming {family} in {rundir} from step {resume_from['step']}")
        before = (resume_from.get("distributed") or {}).get("world_size", 1)
        if before != world_size:
            say(f"note: the run was trained on {before} process(es), now {world_size}: the "
                "batch order and training noise differ from an uninterrupted run, and the "
                "learning rates keep their original scaling")
    else:
        conditioning = Conditioning.from_showers(showers)
        model = build_model(family, showers.geometry, model_config, conditioning)
        model.prepare(showers)
        model.to(device)
        model.configure_optimizers()
        factor = scale_learning_rates(model, config.lr_scaling, world_size)
        rundir.mkdir(parents=True, exist_ok=True)
        n_params = sum(p.numel() for p in model.parameters())
        say(f"training {family} ({n_params / 1e6:.2f}M parameters) on {len(showers)} "
            f"{particle} showers from {data_path}, {config.max_steps} steps of "
            f"{config.batch_size} on {device} ({torch.get_num_threads()} threads) -> {rundir}")
        if world_size > 1 or config.lr_scaling != "none":
            lrs = ", ".join(f"{name} {'/'.join(f'{x:.3g}' for x in v)}"
                            for name, v in learning_rates(model).items())
            say(f"{world_size} process(es) x {config.batch_size} showers = effective batch "
                f"{world_size * config.batch_size}; lr_scaling {config.lr_scaling} "
                f"(x{factor:.3g}): {lrs}")
    summary = fit(model, ShowerDataset(showers), config, rundir, particle=particle, data=data,
                  resume_from=resume_from, on_step=on_step)
    say(f"done: step {summary['step']}, {summary['elapsed_s']:.0f} s of training; "
        f"checkpoint {rundir / CHECKPOINT_NAME}")
    summary["rundir"] = rundir
    return summary
