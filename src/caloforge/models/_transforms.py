"""Preprocessing transforms that several families share (one home for each).

- Power-law voxel scaling, ``u = (E / scale) ** power`` and its inverse: compresses the
  dynamic range of the deposits (CaloGAN, 3DGAN; the WGAN divides by a per-cell scale
  first).
- The polar angle mapped linearly from the trained range onto ``[-1, 1]``.

Examples:
    >>> import torch
    >>> u = power_scale(torch.tensor([0.0, 250.0, 1000.0]), power=0.5, scale_mev=1000.0)
    >>> u.tolist()
    [0.0, 0.5, 1.0]
    >>> power_unscale(u, power=0.5, scale_mev=1000.0).tolist()
    [0.0, 250.0, 1000.0]
    >>> scale_angle(torch.tensor([60.0, 90.0, 120.0]), (60.0, 120.0)).tolist()
    [-1.0, 0.0, 1.0]
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["power_scale", "power_unscale", "scale_angle"]


def power_scale(mev: Tensor, power: float, scale_mev: float) -> Tensor:
    """Deposits in MeV -> ``(E / scale_mev) ** power`` (negatives -> 0)."""
    u = mev.clamp_min(0) / scale_mev
    return u.pow(power) if power != 1.0 else u


def power_unscale(units: Tensor, power: float, scale_mev: float) -> Tensor:
    """Inverse of :func:`power_scale` for ``units >= 0``: ``units ** (1 / power) * scale``
    in MeV."""
    if power != 1.0:
        units = units.pow(1.0 / power)
    return units * scale_mev


def scale_angle(angle_deg: Tensor, angle_range: tuple[float, float] | None) -> Tensor:
    """Polar angles in degrees -> ``[-1, 1]`` over ``angle_range`` (``None``: 0-180)."""
    lo, hi = angle_range or (0.0, 180.0)
    return 2.0 * (angle_deg - lo) / max(hi - lo, 1e-6) - 1.0
