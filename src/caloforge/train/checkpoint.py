"""The one checkpoint format: ``RUNDIR/checkpoint.pt``.

A checkpoint holds everything needed to generate from a run or to resume it exactly:
model family and config, training config, geometry, conditioning range, particle,
package version, step, model and optimiser states and the random states (torch CPU and
CUDA, numpy, python). A multi-process run adds ``distributed`` (world size, effective
batch size, learning-rate scaling and the scaled rates, precision) and ``rng_ranks``
(every rank's random states, so that each rank resumes its own training noise).

It is written atomically (a temporary file in the same directory, flushed to disk, then
renamed), so a run killed mid-write leaves the previous checkpoint intact.
It loads with ``torch.load(weights_only=True)``: plain containers and tensors.
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caloforge._version import __version__
from caloforge.data.atomic import atomic_output, record_input
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.models import Conditioning, GenerativeModel, get_model_class
from caloforge.train.config import TrainConfig
from caloforge.train.device import resolve_device

__all__ = [
    "CHECKPOINT_NAME",
    "checkpoint_path",
    "save_checkpoint",
    "load_checkpoint",
    "model_from_checkpoint",
    "load_run",
    "rng_state",
    "set_rng_state",
]

CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = "caloforge-run"
_FORMAT_VERSION = 1


def checkpoint_path(rundir: str | Path) -> Path:
    """``RUNDIR/checkpoint.pt`` (a path to a ``.pt`` file passes through)."""
    p = Path(rundir)
    return p if p.suffix == ".pt" else p / CHECKPOINT_NAME


def rng_state() -> dict[str, Any]:
    """All random states that training draws from, as plain data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                  float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(rundir: str | Path, model: GenerativeModel, train_config: TrainConfig,
                    step: int, *, particle: str, data: dict | None = None,
                    elapsed_s: float = 0.0, extra: dict | None = None) -> Path:
    """Write ``RUNDIR/checkpoint.pt`` atomically and return its path.

    Args:
        rundir: the run directory (created if missing).
        model: the model, with its optimisers.
        train_config: the loop's settings.
        step: number of completed steps.
        particle: the particle the model was trained on.
        data: where the training showers came from (``path``, ``n``).
        elapsed_s: training wall time so far, in seconds.
        extra: further plain entries (``distributed``, ``rng_ranks``) for the payload.
    """
    rundir = Path(rundir)
    rundir.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "family": model.family,
        "model_config": model.config.to_dict(),
        "train_config": train_config.to_dict(),
        "geometry": model.geometry.to_dict(),
        "conditioning": model.conditioning.to_dict(),
        "particle": particle,
        "caloforge_version": __version__,
        "torch_version": str(torch.__version__),
        "step": int(step),
        "elapsed_s": float(elapsed_s),
        "data": dict(data or {}),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": model.optimizer_state_dict(),
        "rng": rng_state(),
        **(extra or {}),
    }
    final = rundir / CHECKPOINT_NAME
    # atomic, no temporary left on SIGTERM; a killed writer's is removed by the next save
    with atomic_output(final, check=False, replace_checkpoint=True) as tmp, \
            open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    return final


def load_checkpoint(rundir: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and check a checkpoint (``RUNDIR`` or the ``.pt`` file itself).

    Raises:
        CaloforgeError: no checkpoint, an unreadable or foreign file, or one written by
            a newer caloforge.
    """
    path = checkpoint_path(rundir)
    record_input(path)  # no output of the running command may replace it
    if not path.exists():
        raise CaloforgeError(
            f"no checkpoint at {path}; train a model first (caloforge train MODEL --data "
            "FILE.h5 --out RUNDIR)"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CaloforgeError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise CaloforgeError(f"{path} is not a caloforge checkpoint")
    if ckpt.get("format_version", 0) > _FORMAT_VERSION:
        raise CaloforgeError(
            f"{path} was written by a newer caloforge ({ckpt.get('caloforge_version')}); "
            "upgrade caloforge to read it"
        )
    if ckpt.get("caloforge_version") != __version__:
        warnings.warn(
            f"{path} was written by caloforge {ckpt.get('caloforge_version')}, this is "
            f"{__version__}", stacklevel=2,
        )
    return ckpt


def model_from_checkpoint(ckpt: dict, device: str | torch.device = "cpu") -> GenerativeModel:
    """Rebuild the model of a checkpoint dict (weights loaded, optimisers not created).

    Raises:
        CaloforgeError: the stored weights do not fit the family's model of this caloforge
            (for example a checkpoint written before a buffer was added to it).
    """
    cls = get_model_class(ckpt["family"])
    config = cls.Config.from_dict(ckpt["model_config"], where=f"{ckpt['family']} config")
    model = cls(Geometry.from_dict(ckpt["geometry"]), config,
                Conditioning.from_dict(ckpt["conditioning"]))
    state = ckpt["model_state"]
    if ckpt.get("quantized_state"):  # a pretrained copy with int8 weights (save_pretrained)
        from caloforge.pretrained import dequantize_int8

        state = {**state, **dequantize_int8(ckpt["quantized_state"])}
    missing, unexpected = model.load_state_dict(state, strict=False)
    dropped = tuple(ckpt.get("dropped_modules") or ())
    if dropped:  # a pretrained copy without some optional sub-modules (see save_pretrained)
        missing = [k for k in missing if k.split(".")[0] not in dropped]
        model.dropped_modules = dropped
    if missing or unexpected:
        raise CaloforgeError(
            f"this {ckpt['family']} checkpoint (caloforge {ckpt.get('caloforge_version')}) "
            f"does not fit this caloforge's {ckpt['family']} model: "
            + "; ".join(f"{what}: {', '.join(keys[:5])}" for what, keys in
                        (("missing", missing), ("unexpected", unexpected)) if keys)
            + "; retrain it, or use the caloforge that wrote it")
    model.run_info = {k: ckpt.get(k) for k in ("particle", "step", "caloforge_version",
                                                "train_config", "data", "elapsed_s")}
    return model.to(device)


def load_run(rundir: str | Path, device: str | torch.device = "cpu") -> GenerativeModel:
    """The trained model of a run directory, in eval mode on ``device``; its
    ``run_info`` holds particle, step, version, training config and data source."""
    device = resolve_device(str(device))
    model = model_from_checkpoint(load_checkpoint(rundir, map_location=device), device)
    return model.eval()
