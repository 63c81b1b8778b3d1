"""Multi-process training under ``torchrun``: process group, learning-rate scaling, mixed
precision, ``torch.compile`` and fault tolerance, kept apart from the loop itself.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment and
``WORLD_SIZE > 1``) :func:`init_distributed` starts the process group: NCCL with device
``cuda:LOCAL_RANK`` when the run uses CUDA, gloo on the CPU. Outside ``torchrun`` nothing
changes: one process, no process group.

Two environment variables exist for tests and for checking a cluster set-up:

- ``CALOFORGE_FAULT_AT_STEP=STEP[:RANK]``: the given rank (default: the last one) dies
  with ``os._exit(17)`` right after finishing step ``STEP``, only on the first attempt
  (``TORCHELASTIC_RESTART_COUNT`` 0 or unset), to exercise ``torchrun --max-restarts``.
- ``CALOFORGE_DUMP_STATE=DIR``: at the end of training every rank writes its
  ``model.state_dict()`` to ``DIR/rank{RANK}.pt``, to check that the ranks agree.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch

from caloforge.errors import CaloforgeError
from caloforge.train.device import resolve_device

__all__ = [
    "init_distributed",
    "shutdown_distributed",
    "distributed_info",
    "restart_count",
    "scale_learning_rates",
    "learning_rates",
    "autocast_context",
    "average_metrics",
    "make_grad_scaler",
    "gather_rng_states",
    "broadcast_buffers",
    "maybe_inject_fault",
    "maybe_dump_state",
    "LR_SCALINGS",
    "PRECISIONS",
]

LR_SCALINGS = ("none", "linear", "sqrt")
PRECISIONS = ("fp32", "bf16", "fp16")
FAULT_ENV = "CALOFORGE_FAULT_AT_STEP"
DUMP_ENV = "CALOFORGE_DUMP_STATE"
FAULT_EXIT_CODE = 17


def _dist():
    import torch.distributed as dist

    return dist


def distributed_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when no process group is running."""
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def restart_count() -> int:
    """How often torchrun has restarted this worker group (0 on the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def _torchrun_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init_distributed(device_name: str) -> tuple[torch.device, bool]:
    """Pick the device and, under ``torchrun`` with more than one process, start the
    process group.

    Args:
        device_name: the configured device (``"auto"``, ``"cpu"``, ``"cuda"``, ...).
            Under torchrun a CUDA run always uses ``cuda:LOCAL_RANK``.

    Returns:
        ``(device, started)``: ``started`` is true when this call created the process
        group (the caller then ends it with :func:`shutdown_distributed`).

    Raises:
        CaloforgeError: a device that does not exist, or CUDA asked for without it.
    """

    device = resolve_device(device_name)
    dist = _dist()
    if _torchrun_world_size() <= 1:
        return device, False
    if not dist.is_available():
        raise CaloforgeError("torch was built without torch.distributed; cannot run under "
                             "torchrun with more than one process")
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise CaloforgeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA "
                "device(s) on this node; lower --nproc-per-node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return device, False
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    # torchrun shares its rendezvous TCPStore with the workers; after a restart the keys
    # of the previous attempt (the dead workers' addresses) are still in it, and a plain
    # init_process_group can read them and hang (pytorch/pytorch#135712). A prefix per
    # attempt keeps every attempt's keys apart.
    store, rank, world_size = next(dist.rendezvous("env://"))
    store = dist.PrefixStore(f"caloforge/attempt_{restart_count()}", store)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size,
                            **kwargs)
    return device, True


def shutdown_distributed(started: bool, ok: bool) -> None:
    """End the process group this process started; wait for every rank first when the
    run succeeded (after a failure the other ranks may never arrive)."""
    dist = _dist()
    if not started or not dist.is_initialized():
        return
    try:
        if ok:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def learning_rates(model) -> dict[str, list[float]]:
    """Optimiser name -> learning rate of each param group."""
    return {name: [float(g["lr"]) for g in opt.param_groups]
            for name, opt in model.optimizers.items()}


def scale_learning_rates(model, mode: str, world_size: int) -> float:
    """Multiply every param group's learning rate (and ``initial_lr`` where a scheduler
    set one) of every optimiser by the factor of ``mode`` for ``world_size`` processes:
    ``none`` 1, ``linear`` ``world_size``, ``sqrt`` ``sqrt(world_size)``. Returns it.

    Called once on a fresh run after ``configure_optimizers``; a resumed run gets the
    scaled rates back from the optimiser states.

    Raises:
        CaloforgeError: an unknown scaling mode.
    """
    if mode not in LR_SCALINGS:
        raise CaloforgeError(f"lr_scaling must be one of {', '.join(LR_SCALINGS)}, got {mode!r}")
    factor = {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}[mode]
    if factor != 1.0:
        for opt in model.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = group["lr"] * factor
                if "initial_lr" in group:
                    group["initial_lr"] = group["initial_lr"] * factor
    return factor


def check_precision(precision: str, device: torch.device, model) -> None:
    """Refuse precision settings that would silently be wrong.

    Raises:
        CaloforgeError: an unknown precision, fp16 on the CPU, or a precision the
            family does not train in.
    """
    if precision not in PRECISIONS:
        raise CaloforgeError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    if precision == "fp16" and device.type != "cuda":
        raise CaloforgeError("--precision fp16 needs CUDA; on the CPU use bf16 or fp32")
    if precision not in model.precisions:
        if precision == "fp16":
            raise CaloforgeError(
                f"model {model.family!r} does not route its backward passes through the "
                "gradient scaler (model.scaler), so fp16 gradients could underflow; use "
                "--precision bf16"
            )
        raise CaloforgeError(f"model {model.family!r} trains in {', '.join(model.precisions)}, "
                             f"not {precision}")


def autocast_context(precision: str, device: torch.device):
    """The autocast context the loop enters around each ``training_step``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(precision: str, device: torch.device):
    """A :class:`torch.amp.GradScaler` for fp16, else ``None``."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def gather_rng_states(state: dict) -> list[dict] | None:
    """Every rank's random state (a collective; ``None`` on one process)."""
    rank, world_size = distributed_info()
    if world_size == 1:
        return None
    states: list = [None] * world_size
    _dist().all_gather_object(states, state)
    return states


def average_metrics(metrics: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each metric over the ranks (a collective; identity on one process),
    so that the log shows the whole effective batch, not rank 0's share."""
    _, world_size = distributed_info()
    if world_size == 1 or not metrics:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    _dist().all_reduce(values)
    return dict(zip(keys, (values / world_size).tolist(), strict=True))


def broadcast_buffers(model) -> None:
    """Copy rank 0's buffers (batch-norm running statistics, ...) to every rank.

    DDP broadcasts them at the start of each forward, so the ranks differ only by their
    last forward's update; this makes the final state identical everywhere.
    """
    _, world_size = distributed_info()
    if world_size == 1:
        return
    dist = _dist()
    with torch.no_grad():
        for buf in model.buffers():
            if buf.is_floating_point() or buf.dtype in (torch.int64, torch.int32):
                dist.broadcast(buf, src=0)


def maybe_inject_fault(step: int) -> None:
    """Die at the step named by ``CALOFORGE_FAULT_AT_STEP`` (first attempt only)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec or restart_count() > 0:
        return
    rank, world_size = distributed_info()
    at, _, who = spec.partition(":")
    target = int(who) if who else world_size - 1
    if step == int(at) and rank == target:
        os._exit(FAULT_EXIT_CODE)


def maybe_dump_state(model) -> None:
    """Write this rank's state dict to ``$CALOFORGE_DUMP_STATE/rank{RANK}.pt``."""
    where = os.environ.get(DUMP_ENV)
    if not where:
        return
    rank, _ = distributed_info()
    Path(where).mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()},
               Path(where) / f"rank{rank}.pt")
