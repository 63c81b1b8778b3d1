"""Devices and seeds: the lowest floor of :mod:`caloforge.train` (no other train import)."""

from __future__ import annotations

import random

import numpy as np
import torch

from caloforge.errors import CaloforgeError

__all__ = ["resolve_device", "seed_everything"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA if available else CPU.

    Raises:
        CaloforgeError: an unknown device name, or CUDA requested without CUDA.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CaloforgeError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CaloforgeError(
            f"device {name!r} requested but CUDA is not available to torch "
            f"({torch.__version__}); use --device cpu"
        )
    return device


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
