"""Training: the one loop, its config, its data order and its checkpoint format.

``train(family, data, rundir)`` reads showers, builds the model, runs :func:`fit` and
writes ``rundir/checkpoint.pt`` and ``rundir/log.jsonl``; :func:`load_run` brings a run
back for generation.
"""

from caloforge.train.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    load_run,
    model_from_checkpoint,
    save_checkpoint,
)
from caloforge.train.config import TrainConfig, load_run_config
from caloforge.train.data import ShowerDataset, StepBatchSampler
from caloforge.train.device import resolve_device, seed_everything
from caloforge.train.loop import fit, train
from caloforge.train.stages import stage_max_steps

__all__ = [
    "TrainConfig",
    "load_run_config",
    "ShowerDataset",
    "StepBatchSampler",
    "train",
    "fit",
    "resolve_device",
    "seed_everything",
    "CHECKPOINT_NAME",
    "save_checkpoint",
    "load_checkpoint",
    "model_from_checkpoint",
    "load_run",
    "stage_max_steps",
]
