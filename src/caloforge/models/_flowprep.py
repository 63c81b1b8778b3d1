"""CaloFlow preprocessing: invertible maps between showers (MeV) and the flows' spaces.

Conventions follow CaloFlow (Krause & Shih, arXiv:2106.05285, section 3), for any number
``L`` of layers taken from the geometry:

- Noise: uniform ``[0, noise_mev)`` added to every voxel before anything else (the papers:
  1 keV), so that empty cells are not a delta function; generated voxels below
  ``threshold_mev`` are set to zero again.
- Flow I variables (``L`` of them), from the layer energies ``E_i`` and the incident
  energy ``E_inc``: ``u_0 = sum_i E_i / (c E_inc)`` (``c``: 1.1 x the largest deposited
  fraction of the training set, so ``u_0 < 1``), ``u_i = E_{i-1} / sum_{j >= i-1} E_j`` for
  ``i = 1..L-1``; each ``u`` in ``[0, 1]`` goes through ``logit(alpha + (1 - 2 alpha) u)``
  and is standardised with the training set's mean and standard deviation.
- Flow II variables (``n_voxels``): voxels normalised by their layer energy,
  ``I = E_voxel / E_layer``, then ``logit(alpha + (1 - 2 alpha) I)``, then standardised
  per voxel with the training set's mean and standard deviation (an addition to the paper:
  it brings the voxels towards the splines' ``[-bound, bound]``; a value outside passes the
  identity tails unchanged and cannot be sampled from the base distribution, so
  :meth:`FlowPreprocessing.fit` reports the share of showers with one). Optionally
  (``tail_knee = k > 0``) a standardised value ``z`` beyond ``k`` in magnitude is then
  compressed logarithmically, ``sign(z) (k + ln(1 + |z| - k))``, which keeps the bulk as it
  is and brings the rare large deposits of usually empty voxels (10-26 standard deviations)
  inside the splines' interval; the map is fixed, smooth and invertible.
- Conditions: ``log10 E_inc`` scaled to ``[0, 1]`` over the trained range (Flow I and II)
  and ``log10 E_i`` standardised (Flow II).

Going back, generated normalised voxels are clamped at zero, renormalised to sum to one per
layer and multiplied by the layer energies from Flow I, as in the paper.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from caloforge.data.showers import ShowerSet
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.models.base import ModelConfig

__all__ = ["FlowPreprocessing", "logit", "expit", "compress_tails", "expand_tails"]


def logit(u: Tensor, alpha: float) -> Tensor:
    """``logit(alpha + (1 - 2 alpha) u)``, for ``u`` in ``[0, 1]``."""
    p = alpha + (1 - 2 * alpha) * u
    return torch.log(p) - torch.log1p(-p)


def expit(x: Tensor, alpha: float) -> Tensor:
    """Inverse of :func:`logit`: ``(sigmoid(x) - alpha) / (1 - 2 alpha)``.

    The sigmoid is written with one exponential, ``exp(-|x|) / (1 + exp(-|x|))`` for
    ``x < 0``, because ONNX Runtime's ``Sigmoid`` is accurate only in absolute terms
    (about 2e-7): in the tail, where empty voxels and small layer shares sit, that is a
    relative error of percent or more, and an exported flow then disagrees with PyTorch.
    """
    e = torch.exp(-torch.abs(x))
    sigmoid = torch.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return (sigmoid - alpha) / (1 - 2 * alpha)


def compress_tails(z: Tensor, knee: float) -> Tensor:
    """``z`` where ``|z| <= knee``, else ``sign(z) (knee + ln(1 + |z| - knee))``: continuous
    with a continuous first derivative, monotonic; ``knee <= 0`` returns ``z``."""
    if knee <= 0:
        return z
    over = (z.abs() - knee).clamp_min(0.0)
    return z + torch.sign(z) * (torch.log1p(over) - over)


def expand_tails(y: Tensor, knee: float) -> Tensor:
    """Inverse of :func:`compress_tails` (the excess over the knee is capped at 40 before
    the exponential, beyond anything a flow trained on showers returns)."""
    if knee <= 0:
        return y
    over = (y.abs() - knee).clamp(0.0, 40.0)
    return y + torch.sign(y) * (torch.expm1(over) - over)


@dataclass(frozen=True)
class FlowPreprocessingConfig(ModelConfig):
    """The settings every flow family on this preprocessing shares, and their checks.

    Attributes:
        bins: spline bins (CaloFlow: 8).
        bound: the splines act on ``[-bound, bound]`` (standardised logits), identity
            outside.
        noise_mev: uniform dequantisation noise added to each voxel, MeV (CaloFlow: 1 keV).
        threshold_mev: sampled voxels below this are zero, MeV (CaloFlow 1 keV; 30 keV by
            default: an empty cell sits at the logit floor, ``I ~ alpha``, and a small error
            of the flow there becomes ``alpha * E_layer``, tens of keV, which a 1 keV cut
            leaves as spurious hits; 30 keV removes about 0.4% of the non-zero cells of
            parametric e+ showers). Used by sampling only.
        alpha: logit regulariser (CaloFlow: 1e-6).
        prepare_showers: training showers used to learn the preprocessing statistics.
        tail_knee: where the logarithmic compression of the standardised Flow II variables
            starts (:func:`compress_tails`); 0 turns it off (the default, and what every
            model trained before it used).

    Raises:
        CaloforgeError: a setting out of range (the message names the family and the key).
    """

    #: the family name that messages use
    family: ClassVar[str] = "flow"

    bins: int = 8
    bound: float = 6.0
    noise_mev: float = 1e-3
    threshold_mev: float = 0.03
    alpha: float = 1e-6
    prepare_showers: int = 20000
    tail_knee: float = 0.0

    def check_at_least_one(self, *names: str) -> None:
        """Raise :class:`CaloforgeError` for the first of ``names`` below 1."""
        for name in names:
            if getattr(self, name) < 1:
                raise CaloforgeError(f"{self.family} {name} must be at least 1")

    def __post_init__(self) -> None:
        self.check_at_least_one("prepare_showers")
        if self.bins < 2:
            raise CaloforgeError(f"{self.family} bins must be at least 2")
        if not (self.bound > 0 and self.noise_mev > 0 and self.threshold_mev >= 0):
            raise CaloforgeError(f"{self.family} bound and noise_mev must be positive and "
                                 "threshold_mev not negative")
        if self.tail_knee < 0:
            raise CaloforgeError(f"{self.family} tail_knee must not be negative (0: off)")
        if not 0 < self.alpha < 0.5:
            raise CaloforgeError(f"{self.family} alpha must be in (0, 0.5)")


class FlowPreprocessing(nn.Module):
    """The statistics and maps of the CaloFlow preprocessing (buffers, saved with the model).

    Args:
        geometry: the readout (layer sizes).
        noise_mev: width of the uniform noise added to every voxel, MeV.
        threshold_mev: generated voxels below this are zero, MeV.
        alpha: the logit regulariser.
        tail_knee: the Flow II variables' compression knee (:func:`compress_tails`; 0: off).
    """

    def __init__(self, geometry: Geometry, noise_mev: float, threshold_mev: float,
                 alpha: float, tail_knee: float = 0.0):
        super().__init__()
        self.noise_mev, self.threshold_mev, self.alpha = noise_mev, threshold_mev, alpha
        self.tail_knee = tail_knee
        sizes = [int(np.prod(layer.shape)) for layer in geometry.layers]
        self.n_layers, self.n_voxels = len(sizes), sum(sizes)
        membership = torch.zeros(self.n_voxels, self.n_layers)
        start = 0
        for i, size in enumerate(sizes):
            membership[start:start + size, i] = 1.0
            start += size
        self.register_buffer("membership", membership)  # (n_voxels, L)
        self.register_buffer("log_energy_range", torch.tensor([3.0, 5.0]))  # log10 MeV
        self.register_buffer("deposit_scale", torch.tensor(1.1))
        self.register_buffer("layer_log_mean", torch.zeros(self.n_layers))
        self.register_buffer("layer_log_std", torch.ones(self.n_layers))
        self.register_buffer("flow1_mean", torch.zeros(self.n_layers))
        self.register_buffer("flow1_std", torch.ones(self.n_layers))
        self.register_buffer("voxel_mean", torch.zeros(self.n_voxels))
        self.register_buffer("voxel_std", torch.ones(self.n_voxels))

    # ---- statistics ------------------------------------------------------------------

    @torch.no_grad()
    def fit(self, voxels: Tensor, incident_energy: Tensor, energy_range: tuple[float, float],
            generator: torch.Generator | None = None,
            bounds: tuple[float, float] = (math.inf, math.inf)) -> tuple[float, float]:
        """Learn the statistics from training showers.

        Args:
            voxels: ``(N, n_voxels)`` MeV.
            incident_energy: ``(N,)`` MeV.
            energy_range: ``(min, max)`` trained incident energy, MeV.
            generator: for the noise.
            bounds: the spline intervals ``[-b, b]`` of Flow I and Flow II.

        Returns:
            The shares of these showers with a standardised Flow I, and a Flow II,
            variable outside its bound: the identity tails pass such a value unchanged,
            so a flow whose base samples start inside the bound never generates it.
        """
        lo, hi = energy_range
        self.log_energy_range.copy_(torch.tensor([math.log10(lo), math.log10(max(hi, lo * 1.01))]))
        noisy = self.add_noise(voxels, generator)
        layers = self.layer_energies(noisy)
        self.deposit_scale.fill_(1.1 * float((layers.sum(-1) / incident_energy).max()))
        x1 = self.layers_to_flow1(layers, incident_energy.float(), standardise=False)
        self.flow1_mean.copy_(x1.mean(0))
        self.flow1_std.copy_(x1.std(0).clamp_min(1e-2))
        log_layers = torch.log10(layers)
        self.layer_log_mean.copy_(log_layers.mean(0))
        self.layer_log_std.copy_(log_layers.std(0).clamp_min(1e-2))
        x = logit(self.normalise(noisy, layers), self.alpha)
        self.voxel_mean.copy_(x.mean(0))
        self.voxel_std.copy_(x.std(0).clamp_min(1e-1))
        standardised = ((x1 - self.flow1_mean) / self.flow1_std,
                        compress_tails((x - self.voxel_mean) / self.voxel_std, self.tail_knee))
        return tuple(float((z.abs() > b).any(-1).float().mean())
                     for z, b in zip(standardised, bounds, strict=True))

    def fit_showers(self, showers: ShowerSet, config: FlowPreprocessingConfig,
                    energy_range: tuple[float, float], flow1_bound: float) -> None:
        """:meth:`fit` on the first ``config.prepare_showers`` showers (noise seed 0),
        warning when the flows cannot reach some of them (:meth:`warn_outside`)."""
        n = min(len(showers), config.prepare_showers)
        voxels = torch.as_tensor(showers.voxels[:n], dtype=torch.float32)
        energy = torch.as_tensor(showers.incident_energy[:n], dtype=torch.float32)
        bounds = (flow1_bound, config.bound)
        shares = self.fit(voxels, energy, energy_range, torch.Generator().manual_seed(0),
                          bounds)
        self.warn_outside(shares, bounds, config.family)

    @staticmethod
    def warn_outside(shares: tuple[float, float], bounds: tuple[float, float], family: str,
                     most: float = 1e-3) -> None:
        """Warn when more than ``most`` of the training showers have a Flow I or Flow II
        variable outside its spline's bound (see :meth:`fit`)."""
        for flow, share, bound in zip(("Flow I", "Flow II"), shares, bounds, strict=True):
            if share > most:
                hint = "raise the config's bound" if flow == "Flow II" else "its bound is fixed"
                warnings.warn(
                    f"{family}: {100 * share:.1f}% of the training showers have a {flow} "
                    f"variable outside the spline's [-{bound:g}, {bound:g}], where the flow is "
                    f"the identity: it cannot generate such showers ({hint})", stacklevel=4)

    # ---- pieces ------------------------------------------------------------------------

    def add_noise(self, voxels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.rand(voxels.shape, generator=generator, device=voxels.device)
        return voxels + self.noise_mev * noise

    def layer_energies(self, voxels: Tensor) -> Tensor:
        """``(B, n_voxels)`` MeV -> ``(B, L)`` MeV."""
        return voxels @ self.membership

    def normalise(self, voxels: Tensor, layers: Tensor) -> Tensor:
        """Voxels divided by their layer's energy."""
        return voxels / (layers @ self.membership.t())

    def energy_context(self, incident_energy: Tensor) -> Tensor:
        """``(B,)`` MeV -> ``(B, 1)``: ``log10 E_inc`` scaled to ``[0, 1]``."""
        lo, hi = self.log_energy_range[0], self.log_energy_range[1]
        return ((torch.log10(incident_energy) - lo) / (hi - lo)).unsqueeze(-1)

    def flow2_context(self, incident_energy: Tensor, layers: Tensor) -> Tensor:
        """``(B, 1 + L)``: scaled ``log10 E_inc`` and standardised ``log10 E_i``."""
        log_layers = (torch.log10(layers) - self.layer_log_mean) / self.layer_log_std
        return torch.cat([self.energy_context(incident_energy), log_layers], dim=-1)

    # ---- Flow I ------------------------------------------------------------------------

    def layers_to_flow1(self, layers: Tensor, incident_energy: Tensor,
                        standardise: bool = True) -> Tensor:
        """Layer energies ``(B, L)`` MeV -> Flow I variables ``(B, L)``."""
        total = layers.sum(-1)
        u0 = total / (self.deposit_scale * incident_energy)
        tails = torch.flip(torch.cumsum(torch.flip(layers, [-1]), -1), [-1])  # sum_{j>=i}
        u = torch.cat([u0.unsqueeze(-1), layers[:, :-1] / tails[:, :-1]], dim=-1)
        x = logit(u.clamp(0.0, 1.0), self.alpha)
        return (x - self.flow1_mean) / self.flow1_std if standardise else x

    def flow1_to_layers(self, x: Tensor, incident_energy: Tensor) -> Tensor:
        """Inverse of :meth:`layers_to_flow1` (a fixed loop over the ``L`` layers). Exact
        except where a share ``u`` lies within ``alpha`` of 0 or 1 (the logit's floor)."""
        x = x * self.flow1_std + self.flow1_mean
        u = expit(x, self.alpha).clamp(0.0, 1.0)
        keep = expit(-x, self.alpha).clamp(0.0, 1.0)  # 1 - u without cancellation
        rest = u[:, 0] * self.deposit_scale * incident_energy
        layers = []
        for i in range(1, self.n_layers):
            layers.append(u[:, i] * rest)
            rest = rest * keep[:, i]
        layers.append(rest)
        return torch.stack(layers, dim=-1)

    # ---- Flow II -----------------------------------------------------------------------

    def voxels_to_flow2(self, voxels: Tensor, layers: Tensor) -> Tensor:
        """Noisy voxels ``(B, n_voxels)`` MeV and their layer energies -> Flow II space."""
        x = logit(self.normalise(voxels, layers).clamp(0.0, 1.0), self.alpha)
        return compress_tails((x - self.voxel_mean) / self.voxel_std, self.tail_knee)

    @torch.no_grad()
    def flow2_maximum(self, showers: ShowerSet, piece: int = 20_000) -> Tensor:
        """The largest value each Flow II variable takes over ``showers`` (noise seed 1),
        ``(n_voxels,)``, taken ``piece`` showers at a time."""
        generator = torch.Generator().manual_seed(1)
        top = torch.full((self.n_voxels,), -math.inf)
        for i in range(0, len(showers), piece):
            noisy = self.add_noise(torch.as_tensor(showers.voxels[i:i + piece],
                                                   dtype=torch.float32), generator)
            top = torch.maximum(top, self.voxels_to_flow2(noisy, self.layer_energies(noisy))
                                .amax(0))
        return top

    def flow2_to_voxels(self, x: Tensor, layers: Tensor, *, renormalise: bool = True,
                        threshold: bool = True) -> Tensor:
        """Flow II space -> voxels in MeV (exact inverse of :meth:`voxels_to_flow2` with
        ``renormalise=False, threshold=False``)."""
        x = expand_tails(x, self.tail_knee)
        shares = expit(x * self.voxel_std + self.voxel_mean, self.alpha)
        if renormalise:
            shares = shares.clamp_min(0.0)
            sums = (shares @ self.membership).clamp_min(1e-20)
            shares = shares / (sums @ self.membership.t())
        voxels = shares * (layers @ self.membership.t())
        if threshold:
            voxels = torch.where(voxels < self.threshold_mev, torch.zeros_like(voxels), voxels)
        return voxels
