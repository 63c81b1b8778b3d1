"""Training-loop settings and the run config file (YAML).

A run config file has two optional sections, one for the loop and one for the model::

    train:
      batch_size: 128
      max_steps: 2000
    model:
      latent_size: 128

Values given on the command line override the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from caloforge.config import Config, load_yaml
from caloforge.errors import CaloforgeError

__all__ = ["TrainConfig", "load_run_config"]


@dataclass(frozen=True)
class TrainConfig(Config):
    """Settings of the training loop (model settings live in the model's config).

    Attributes:
        batch_size: showers per step and process. Under ``torchrun`` with ``W`` processes
            one step sees ``batch_size * W`` showers (the effective batch size, logged and
            stored in the checkpoint).
        max_steps: total number of training steps.
        checkpoint_every: write ``RUNDIR/checkpoint.pt`` every this many steps (and at
            the end).
        log_every: write a line to ``RUNDIR/log.jsonl`` every this many steps.
        seed: seeds the model's initial weights, the data order and the training noise.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``"auto"`` takes CUDA if present.
        num_workers: DataLoader worker processes (0: load in the training process).
        num_threads: torch CPU threads (``None``: torch's default).
        max_showers: use only the first this many showers of the file (``None``: all).
        tensorboard: also write TensorBoard events to ``RUNDIR/tensorboard`` when
            TensorBoard is installed.
        progress: show a progress bar.
        lr_scaling: how the families' learning rates follow the number of processes
            ``W``: ``"none"`` (unchanged), ``"linear"`` (times ``W``, Goyal et al.
            arXiv:1706.02677) or ``"sqrt"`` (times ``sqrt(W)``, usual for Adam). Applied by
            the loop to every optimiser param group on a fresh run.
        precision: ``"fp32"``, ``"bf16"`` (autocast; CUDA or CPU) or ``"fp16"`` (autocast
            plus gradient scaler; CUDA only, and only for families that use
            ``model.scaler``).
        compile: ``torch.compile`` the gradient-taking modules (after wrapping them for
            DDP); checkpoints keep the plain module names.
    """

    batch_size: int = 128
    max_steps: int = 2000
    checkpoint_every: int = 250
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    num_threads: int | None = None
    max_showers: int | None = None
    tensorboard: bool = True
    progress: bool = True
    lr_scaling: str = "none"
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise CaloforgeError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise CaloforgeError("train.num_workers must be >= 0")
        if self.lr_scaling not in ("none", "linear", "sqrt"):
            raise CaloforgeError(
                f"train.lr_scaling must be none, linear or sqrt, got {self.lr_scaling!r}"
            )
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise CaloforgeError(
                f"train.precision must be fp32, bf16 or fp16, got {self.precision!r}"
            )


def load_run_config(path: str | Path | None) -> tuple[dict, dict]:
    """Read a run config file into ``(train_section, model_section)`` dicts (both empty if
    ``path`` is ``None``); unknown top-level sections are an error.

    Raises:
        CaloforgeError: a missing or malformed file, or an unknown section.
    """
    if path is None:
        return {}, {}
    d = load_yaml(path)
    unknown = sorted(set(d) - {"train", "model"})
    if unknown:
        raise CaloforgeError(
            f"{path}: unknown section(s) {', '.join(unknown)}; a run config has 'train' "
            "and 'model'"
        )
    return dict(d.get("train") or {}), dict(d.get("model") or {})
