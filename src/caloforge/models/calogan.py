"""CaloGAN: a conditional GAN with one locally connected stream per calorimeter layer.

Faithful to the original Keras model (github.com/hep-lbdl/CaloGAN, ``models/train.py``,
``architectures.py``, ``ops.py``), written anew in PyTorch and driven by any geometry:

- Generator: the latent vector is multiplied by the incident energy (``E / 100 GeV``).
  Each layer has its own stream: dense -> ``(rows+2, cols+2, 36)`` -> 2x2 convolution (16)
  -> LeakyReLU -> batch norm -> 2x2 locally connected (6) -> LeakyReLU -> 2x2 locally
  connected (1, no bias). Layer-to-layer attention ("in-painting"): the previous layer's
  image, resized to the next layer's grid by average pooling, is mixed into it with
  per-cell softmax weights from a 3x3 locally connected layer whose bias starts at -10 for
  the copied channel. ReLU outputs give sparse, non-negative deposits.
- Discriminator: per layer 2x2 convolution (64), then three locally connected layers
  (16, 8, 8) with LeakyReLU and batch norm, minibatch discrimination on the features,
  the layer's sparsity and minibatch discrimination on it; then the layer energies,
  the total energy, ``|E_tot - E_requested|`` and an indicator of it exceeding 5 GeV,
  minibatch discrimination on the layer energies. Two heads: real/fake, and an auxiliary
  regression of the incident energy.
- Training (per step): one discriminator update on a real batch, one on a generated
  batch (kept apart because of batch norm and minibatch discrimination), two generator
  updates. Adam, learning rates 2e-5 (discriminator) and 2e-4 (generator), beta1 = 0.5.
  Generator loss: binary cross-entropy + ``lambda_E |E_tot - E_target|`` (GeV, 0.05) +
  the auxiliary regression error.

Differences from the original, each a config setting (``CaloGANConfig``):

- ``latent_size`` defaults to 128 (paper 1024): the dense input layers hold 30M weights at
  1024, too slow to train on a CPU in an hour and to generate below 0.5 ms per shower.
- Preprocessing: the network works on ``u = (E_voxel / voxel_scale_mev) ** voxel_power``,
  by default ``sqrt(E / GeV)``; the paper is ``voxel_scale_mev = 1000`` (GeV),
  ``voxel_power = 1``. The square root compresses the dynamic range, which a short CPU
  training needs to see the low-energy cells; zeros stay zeros and the map is inverted
  exactly after the ReLU, so the output is still sparse and non-negative MeV. Energies fed to the
  discriminator and the energy constraint are always physical (GeV).
- ``energy_target = "data"`` compares the generated total with the requested energy times
  the mean deposited fraction of the training showers (learnt in :meth:`prepare`); the
  paper (``"incident"``) compares with the requested energy itself, which is right for
  e+ (~99% deposited) but biases pi+.
- Generated batches reuse the real batch's conditions in a random order instead of a
  uniform 1-100 GeV draw, so any training spectrum is followed.
- Overflow (energy outside the grid) is not generated; files get zeros.
- Optional (``configs/calogan.yaml`` turns them on): voxels in units of the incident
  energy (``voxel_relative``) so that what the ReLU outputs leave in empty cells cannot
  swamp low-energy showers; a relative or per-energy-group mean energy constraint
  (``energy_loss``, ``energy_target: fit``); a log-energy latent scaling and energy input
  (``latent_scaling``, ``energy_input``) instead of the Hadamard product with ``E``.

References:
    Paganini, de Oliveira, Nachman, "CaloGAN: Simulating 3D High Energy Particle Showers
    in Multi-Layer Electromagnetic Calorimeters with Generative Adversarial Networks",
    Phys. Rev. D 97, 014021 (2018), arXiv:1712.10321.

    Paganini, de Oliveira, Nachman, "Accelerating Science with Generative Adversarial
    Networks: An Application to 3D Particle Showers in Multi-Layer Calorimeters",
    Phys. Rev. Lett. 120, 042003 (2018), arXiv:1705.02355.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caloforge.config import check_choice
from caloforge.data.showers import ShowerSet
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.models import register_model
from caloforge.models._transforms import power_scale, power_unscale, scale_angle
from caloforge.models.base import Conditioning, GenerativeModel, ModelConfig
from caloforge.models.layers import (
    LocallyConnected2d,
    MinibatchDiscrimination,
    batch_norm_2d,
)
from caloforge.units import gev_to_mev, mev_to_gev

__all__ = ["CaloGANConfig", "CaloGAN", "CaloGANGenerator", "CaloGANDiscriminator"]

_CPU_CHUNK = 256  # showers per generator pass in CPU inference
_FIT_BINS = 16  # log-energy bins of the deposited-fraction table (energy_target "fit")


@dataclass(frozen=True)
class CaloGANConfig(ModelConfig):
    """CaloGAN settings; defaults are the paper's except where the module docstring says.

    Attributes:
        latent_size: dimension of the latent vector (paper 1024).
        gen_dense_channels: channels of the dense layer's image (paper 36).
        gen_conv_channels: channels of the generator's 2x2 convolution (paper 16).
        gen_lc_channels: channels of the generator's first locally connected layer (6).
        disc_conv_channels: channels of the discriminator's 2x2 convolution (64).
        disc_lc_channels: channels of its three locally connected layers (16, 8, 8).
        attention: layer-to-layer in-painting attention.
        minibatch_kernels, minibatch_kernel_dim: minibatch discrimination size (10, 10).
        leaky_slope: LeakyReLU negative slope (Keras default 0.3).
        bn_momentum: batch-norm running-statistics momentum (PyTorch convention).
        gen_lr, disc_lr, adam_beta1, adam_beta2: Adam settings (2e-4, 2e-5, 0.5, 0.999).
        generator_steps: generator updates per step (2).
        energy_loss_weight: lambda_E of the energy constraint in GeV (0.05).
        aux_loss_weight: weight of the auxiliary energy regression (0.05).
        energy_target: ``"incident"`` (paper), ``"data"`` (requested energy times the
            training showers' mean deposited fraction) or ``"fit"`` (times the mean
            deposited fraction of the training showers in 16 bins of log energy,
            interpolated linearly between bin centres, for a response that changes with
            energy: pi+).
        energy_scale_gev: the latent vector is multiplied by ``E / energy_scale_gev``.
        well_threshold_gev: ``|E_tot - E|`` above which the indicator feature fires (5).
        voxel_scale_mev, voxel_power: preprocessing ``u = (E / scale) ** power``
            (default 1000 MeV and 0.5; paper 1000 MeV and 1).
        voxel_relative: the scale is the mean share of one cell in a shower of the
            requested energy, ``u = (E / (E_inc f / n_voxels)) ** power`` with ``f`` the
            mean deposited fraction of the training showers (``voxel_scale_mev`` is then
            unused): whatever the generator emits in an empty cell is a fraction of the
            incident energy rather than a fixed number of MeV that swamps low-energy
            showers, and the untrained generator's total is of the order of ``E_inc``.
        energy_loss: the energy constraint ``lambda_E * mean |E_tot - E_target|`` in GeV
            (``"absolute"``, the paper's) or divided by the incident energy
            (``"relative"``), which weighs a 1 GeV shower like a 100 GeV one; or
            ``"binned_mean"``: the batch sorted by energy into ``energy_loss_bins``
            groups, ``mean_groups |mean_group (E_tot - E_target) / E_inc|``, which fixes
            the mean response per energy without pulling every shower to the target
            (a per-shower L1 pulls to the median and narrows a broad response: pi+).
        energy_loss_bins: groups of ``"binned_mean"``.
        energy_loss_sampling: where the energy constraint is evaluated: on the generated
            batch at the training batch's energies (``"batch"``), or on one more generated
            batch of the same size at energies drawn uniformly in log energy over the
            trained range, generated as at inference (batch norm on its running
            statistics) and used for the constraint alone (``"log_uniform"``). A 1-100 GeV
            spectrum flat in energy puts 0.6% of the showers below 1.6 GeV, fewer than
            one per batch of 64, so ``"batch"`` leaves the low-energy response
            unconstrained; log-uniform energies give each decade the same weight.
        latent_scaling: the latent vector is multiplied by ``E / energy_scale_gev``
            (``"linear"``, the paper's Hadamard product: at 1 GeV the latent is 100 times
            smaller than at 100 GeV, and low-energy showers lose their fluctuations) or
            by ``0.5 + 0.5 * l`` with ``l`` the log energy scaled to [0, 1] over the
            trained range (``"log"``).
        energy_input: also give the generator the log energy scaled to [-1, 1] over the
            trained range, beside the latent vector.
    """

    latent_size: int = 128
    gen_dense_channels: int = 36
    gen_conv_channels: int = 16
    gen_lc_channels: int = 6
    disc_conv_channels: int = 64
    disc_lc_channels: tuple[int, int, int] = (16, 8, 8)
    attention: bool = True
    minibatch_kernels: int = 10
    minibatch_kernel_dim: int = 10
    leaky_slope: float = 0.3
    bn_momentum: float = 0.1
    gen_lr: float = 2e-4
    disc_lr: float = 2e-5
    adam_beta1: float = 0.5
    adam_beta2: float = 0.999
    generator_steps: int = 2
    energy_loss_weight: float = 0.05
    aux_loss_weight: float = 0.05
    energy_target: str = "data"
    energy_scale_gev: float = 100.0
    well_threshold_gev: float = 5.0
    voxel_scale_mev: float = 1000.0
    voxel_power: float = 0.5
    voxel_relative: bool = False
    energy_loss: str = "absolute"
    energy_loss_bins: int = 4
    energy_loss_sampling: str = "batch"
    latent_scaling: str = "linear"
    energy_input: bool = False

    def __post_init__(self) -> None:
        check_choice("calogan", "energy_target", self.energy_target, ("data", "incident", "fit"))
        if self.voxel_power <= 0 or self.voxel_scale_mev <= 0:
            raise CaloforgeError("calogan voxel_power and voxel_scale_mev must be positive")
        check_choice("calogan", "energy_loss", self.energy_loss,
                     ("absolute", "relative", "binned_mean"))
        if self.energy_loss_bins < 1:
            raise CaloforgeError("calogan energy_loss_bins must be at least 1")
        check_choice("calogan", "energy_loss_sampling", self.energy_loss_sampling,
                     ("batch", "log_uniform"))
        check_choice("calogan", "latent_scaling", self.latent_scaling, ("linear", "log"))
        for name in ("latent_size", "generator_steps"):
            if getattr(self, name) < 1:
                raise CaloforgeError(f"calogan {name} must be at least 1")


class _GeneratorStream(nn.Module):
    """Latent -> one layer's pre-activation image ``(B, 1, rows, cols)`` (LAGAN-style).

    The dense layer and the 2x2 convolution after it are both linear, so they are applied
    as one matrix whose columns are the convolution of the dense layer's weight images:
    the same function as dense-then-convolution, with fewer operations per shower. In
    inference the product is cached until the parameters change.
    """

    def __init__(self, in_features: int, shape: tuple[int, int], cfg: CaloGANConfig):
        super().__init__()
        rows, cols = shape
        self.grid = (cfg.gen_dense_channels, rows + 2, cols + 2)
        self.dense = nn.Linear(in_features, int(np.prod(self.grid)))
        nn.init.xavier_uniform_(self.dense.weight)
        nn.init.zeros_(self.dense.bias)
        # Keras padding="same" with an even kernel pads one cell at the bottom/right only
        self.conv = nn.Conv2d(cfg.gen_dense_channels, cfg.gen_conv_channels, 2)
        nn.init.kaiming_uniform_(self.conv.weight, nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)
        self.norm = nn.BatchNorm2d(cfg.gen_conv_channels, momentum=cfg.bn_momentum)
        self.lc1 = LocallyConnected2d(cfg.gen_conv_channels, cfg.gen_lc_channels,
                                      (rows + 2, cols + 2), 2)
        self.lc2 = LocallyConnected2d(cfg.gen_lc_channels, 1, (rows + 1, cols + 1), 2,
                                      bias=False, init="glorot_normal")
        self.slope = cfg.leaky_slope
        self._cache: tuple | None = None

    def dense_conv(self, h: Tensor) -> Tensor:
        """The plain dense-then-convolution path (reference for the fused one)."""
        x = self.dense(h).reshape(-1, *self.grid)
        return self.conv(F.pad(x, (0, 1, 0, 1)))

    def _fused(self) -> tuple[Tensor, Tensor]:
        # the inference cache is keyed on storage; a traced graph (export) must recompute
        cache = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        params = (self.dense.weight, self.dense.bias, self.conv.weight, self.conv.bias)
        key = tuple((p.data_ptr(), p._version) for p in params) if cache else None
        if cache and self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        c, h, w = self.grid
        images = torch.cat([self.dense.weight.t(), self.dense.bias.unsqueeze(0)])
        out = F.conv2d(F.pad(images.reshape(-1, c, h, w), (0, 1, 0, 1)), self.conv.weight)
        out = out.permute(2, 3, 1, 0).reshape(-1, images.shape[0])  # rows (h, w, channel)
        weight, bias = out[:, :-1], out[:, -1] + self.conv.bias.repeat(h * w)
        if cache:
            self._cache = (key, weight, bias)
        return weight, bias

    def forward(self, h: Tensor) -> Tensor:
        weight, bias = self._fused()
        _, rows, cols = self.grid
        x = torch.addmm(bias.unsqueeze(1), weight, h.t())  # batch-last (h*w*c, B)
        x = x.reshape(rows, cols, -1, h.shape[0]).permute(3, 2, 0, 1)
        x = batch_norm_2d(self.norm, F.leaky_relu(x, self.slope))
        x = F.leaky_relu(self.lc1(x), self.slope)
        return self.lc2(x)


class _InpaintingAttention(nn.Module):
    """Mix a layer's image with a copy of the previous layer, per cell (CaloGAN ``ops.py``
    ``inpainting_attention``): softmax weights over the two channels from a 3x3 locally
    connected layer, the copied channel's bias starting at -10 so it starts switched off."""

    def __init__(self, shape: tuple[int, int], bias_start: float = -10.0):
        super().__init__()
        self.shape = tuple(shape)
        self.lc = LocallyConnected2d(2, 2, shape, 3, padding=1)
        with torch.no_grad():
            self.lc.bias[:, 1].fill_(bias_start)  # (positions, channels, 1)

    def forward(self, primary: Tensor, previous: Tensor) -> Tensor:
        carry = F.adaptive_avg_pool2d(previous, self.shape)
        x = torch.cat([primary, carry], dim=1)
        weights = torch.softmax(self.lc(x), dim=1)
        return (x * weights).sum(dim=1, keepdim=True)


class CaloGANGenerator(nn.Module):
    """Latent vectors and conditions -> per-layer images ``u`` (preprocessed units, >= 0).

    Args:
        geometry: the calorimeter readout (one stream per layer).
        cfg: the CaloGAN config.
    """

    def __init__(self, geometry: Geometry, cfg: CaloGANConfig):
        super().__init__()
        self.cfg = cfg
        self.has_angle = "angle" in geometry.conditions
        in_features = cfg.latent_size + int(self.has_angle) + int(cfg.energy_input)
        self.streams = nn.ModuleList(
            _GeneratorStream(in_features, layer.shape, cfg) for layer in geometry.layers
        )
        self.attention = nn.ModuleList(
            _InpaintingAttention(layer.shape) for layer in geometry.layers[1:]
        ) if cfg.attention else None

    def forward(self, latent: Tensor, energy_gev: Tensor,
                angle_scaled: Tensor | None = None,
                log_energy: Tensor | None = None) -> list[Tensor]:
        """``log_energy``: ``(B,)`` log energy scaled to [0, 1] over the trained range,
        needed with ``latent_scaling: log`` or ``energy_input``."""
        if self.cfg.latent_scaling == "log":
            h = latent * (0.5 + 0.5 * log_energy).unsqueeze(1)
        else:
            h = latent * (energy_gev / self.cfg.energy_scale_gev).unsqueeze(1)
        if self.has_angle:
            h = torch.cat([h, angle_scaled.unsqueeze(1)], dim=1)
        if self.cfg.energy_input:
            h = torch.cat([h, 2.0 * log_energy.unsqueeze(1) - 1.0], dim=1)
        images = []
        for i, stream in enumerate(self.streams):
            x = stream(h)
            if self.attention is not None and i > 0:
                x = self.attention[i - 1](x, images[-1])
            images.append(x)
        return [F.relu(x) for x in images]


class _DiscriminatorStream(nn.Module):
    """One layer's image -> features (LAGAN layers, minibatch discrimination, sparsity)."""

    def __init__(self, shape: tuple[int, int], cfg: CaloGANConfig):
        super().__init__()
        c0 = cfg.disc_conv_channels
        c1, c2, c3 = cfg.disc_lc_channels
        # 2x2 convolution with Keras "same" padding (one cell bottom/right)
        self.conv = LocallyConnected2d(1, c0, shape, 2, padding=(0, 1, 0, 1), shared=True)
        self.lc1 = LocallyConnected2d(c0, c1, shape, 3, stride=(1, 2), padding=1)
        self.bn1 = nn.BatchNorm2d(c1, momentum=cfg.bn_momentum)
        self.lc2 = LocallyConnected2d(c1, c2, self.lc1.output_size, 2, padding=1)
        self.bn2 = nn.BatchNorm2d(c2, momentum=cfg.bn_momentum)
        self.lc3 = LocallyConnected2d(c2, c3, self.lc2.output_size, 2, stride=(1, 2),
                                      padding=1)
        self.bn3 = nn.BatchNorm2d(c3, momentum=cfg.bn_momentum)
        n_features = c3 * self.lc3.output_size[0] * self.lc3.output_size[1]
        k, d = cfg.minibatch_kernels, cfg.minibatch_kernel_dim
        self.mbd = MinibatchDiscrimination(n_features, k, d)
        self.sparsity_mbd = MinibatchDiscrimination(1, k, d)
        self.n_out = n_features + 2 * k + 1
        self.slope = cfg.leaky_slope

    def forward(self, image: Tensor) -> Tensor:
        s = self.slope
        x = F.leaky_relu(self.conv(image), s)
        x = batch_norm_2d(self.bn1, F.leaky_relu(self.lc1(x), s))
        x = batch_norm_2d(self.bn2, F.leaky_relu(self.lc2(x), s))
        x = batch_norm_2d(self.bn3, F.leaky_relu(self.lc3(x), s))
        x = x.permute(0, 2, 3, 1).reshape(len(image), -1)
        sparsity = (image > 0).flatten(1).float().mean(dim=1, keepdim=True)
        return torch.cat([x, self.mbd(x), sparsity, self.sparsity_mbd(sparsity)], dim=1)


class CaloGANDiscriminator(nn.Module):
    """Per-layer images and conditions -> (real/fake logit, energy regression), both ``(B,)``.

    Args:
        geometry: the calorimeter readout (one stream per layer).
        cfg: the CaloGAN config.
    """

    def __init__(self, geometry: Geometry, cfg: CaloGANConfig):
        super().__init__()
        self.cfg = cfg
        self.has_angle = "angle" in geometry.conditions
        self.streams = nn.ModuleList(_DiscriminatorStream(l.shape, cfg) for l in geometry.layers)
        n_layers = geometry.n_layers
        self.energy_mbd = MinibatchDiscrimination(n_layers, cfg.minibatch_kernels,
                                                  cfg.minibatch_kernel_dim)
        n_in = (sum(s.n_out for s in self.streams) + n_layers + 3 + cfg.minibatch_kernels
                + int(self.has_angle))
        self.real_fake = nn.Linear(n_in, 1)
        self.energy_regression = nn.Linear(n_in, 1)

    def forward(self, images: list[Tensor], layer_energies_gev: Tensor, energy_gev: Tensor,
                angle_scaled: Tensor | None = None) -> tuple[Tensor, Tensor]:
        features = [stream(img) for stream, img in zip(self.streams, images, strict=True)]
        total = layer_energies_gev.sum(dim=1, keepdim=True)
        # |E_tot - E|: the model could learn it, but energy conservation matters enough to
        # hand it over directly (as the original does)
        well = (total - energy_gev.unsqueeze(1)).abs()
        too_big = 10.0 * (well > self.cfg.well_threshold_gev).float()
        parts = [*features, layer_energies_gev / 10.0, total / 100.0, well, too_big,
                 self.energy_mbd(layer_energies_gev)]
        if self.has_angle:
            parts.append(angle_scaled.unsqueeze(1))
        p = torch.cat(parts, dim=1)
        return self.real_fake(p).squeeze(1), self.energy_regression(p).squeeze(1)


@register_model("calogan")
class CaloGAN(GenerativeModel):
    """The CaloGAN (see the module docstring); one instance per particle type."""

    Config = CaloGANConfig
    wrapped_names = ("generator", "discriminator")
    optional_modules = ("discriminator",)  # sampling needs the generator only
    condition_sets = (("energy",), ("energy", "angle"))

    @property
    def progress_metrics(self) -> tuple[str, ...]:  # type: ignore[override]
        """The progress bar's metrics; the energy term's name follows ``energy_loss``."""
        energy = "g_energy_mae_gev" if self.config.energy_loss == "absolute" else "g_energy_rel"
        return ("d_loss_real", "d_loss_fake", "g_loss", energy)

    @classmethod
    def tiny_config(cls) -> CaloGANConfig:
        return CaloGANConfig(latent_size=8, gen_dense_channels=4, gen_conv_channels=4,
                             gen_lc_channels=2, disc_conv_channels=4, disc_lc_channels=(4, 2, 2),
                             minibatch_kernels=3, minibatch_kernel_dim=3)

    def __init__(self, geometry: Geometry, config: CaloGANConfig, conditioning: Conditioning):
        super().__init__(geometry, config, conditioning)
        self.generator = CaloGANGenerator(geometry, config)
        self.discriminator = CaloGANDiscriminator(geometry, config)
        # mean of (deposited energy / incident energy) in the training data; see prepare()
        self.register_buffer("deposit_fraction", torch.tensor(1.0))
        # mean deposited fraction in _FIT_BINS bins of the scaled log energy (target "fit")
        self.register_buffer("deposit_table", torch.ones(_FIT_BINS))

    # ---- preprocessing -----------------------------------------------------------------

    def prepare(self, showers: ShowerSet) -> None:
        fraction = showers.total_energy() / showers.incident_energy
        self.deposit_fraction.fill_(float(np.mean(fraction)))
        log_e = self._log_energy(torch.as_tensor(mev_to_gev(showers.incident_energy))).numpy()
        which = np.clip((log_e * _FIT_BINS).astype(int), 0, _FIT_BINS - 1)
        counts = np.bincount(which, minlength=_FIT_BINS)
        sums = np.bincount(which, weights=fraction, minlength=_FIT_BINS)
        table = np.where(counts > 0, sums / np.maximum(counts, 1), np.mean(fraction))
        self.deposit_table.copy_(torch.as_tensor(table, dtype=torch.float32))

    def _voxel_scale(self, energy_gev: Tensor) -> Tensor | float:
        """MeV per network unit: fixed, or (``voxel_relative``) the mean share of one cell
        in a shower of this incident energy, ``E_inc * deposit_fraction / n_voxels``."""
        if self.config.voxel_relative:
            share = self.deposit_fraction / self.geometry.n_voxels
            return (gev_to_mev(energy_gev) * share).reshape(-1, 1)
        return self.config.voxel_scale_mev

    def _to_units(self, voxels_mev: Tensor, energy_gev: Tensor) -> list[Tensor]:
        """Flat MeV voxels -> per-layer images ``u = (E / scale) ** power``."""
        u = power_scale(voxels_mev, self.config.voxel_power, self._voxel_scale(energy_gev))
        return [u[:, self.geometry.layer_slice(i)].reshape(-1, 1, *layer.shape)
                for i, layer in enumerate(self.geometry.layers)]

    def _to_mev(self, images: list[Tensor], energy_gev: Tensor) -> list[Tensor]:
        """Per-layer images ``u`` -> per-layer MeV images (inverse of :meth:`_to_units`)."""
        scale = self._voxel_scale(energy_gev)
        if isinstance(scale, Tensor):
            scale = scale.reshape(-1, 1, 1, 1)
        return [power_unscale(u, self.config.voxel_power, scale) for u in images]

    def _energy_range_gev(self) -> tuple[float, float]:
        lo, hi = (max(mev_to_gev(e), 1e-6) for e in self.conditioning.energy)
        return lo, max(hi, lo)

    def _log_energy(self, energy_gev: Tensor) -> Tensor:
        """``(B,)`` GeV -> log energy scaled to [0, 1] over the trained range."""
        lo, hi = self._energy_range_gev()
        span = max(float(np.log(hi / lo)), 1e-6)
        return torch.log(energy_gev.clamp_min(1e-6) / lo) / span

    def _log_uniform_energy_loss(self, gen: nn.Module, n: int, angle: Tensor | None,
                                 device: torch.device) -> Tensor:
        """The energy constraint on ``n`` showers generated in eval mode at energies
        drawn uniformly in log energy over the trained range (``energy_loss_sampling``)."""
        lo, hi = self._energy_range_gev()
        energy = lo * (hi / lo) ** torch.rand(n, device=device)
        gen.eval()
        try:
            images = self._generate(gen, self.draw_latent(n), energy, angle)
        finally:
            gen.train()
        return self._energy_loss(self._layer_energies_gev(images, energy).sum(dim=1), energy)

    def _generate(self, gen: nn.Module, latent: Tensor, energy_gev: Tensor,
                  angle: Tensor | None) -> list[Tensor]:
        return gen(latent, energy_gev, angle, self._log_energy(energy_gev))

    def _split_conditions(self, conditions: Tensor) -> tuple[Tensor, Tensor | None]:
        energy_gev = mev_to_gev(conditions[:, 0])
        angle = None
        if "angle" in self.geometry.conditions:
            angle = scale_angle(conditions[:, 1], self.conditioning.angle)
        return energy_gev, angle

    # ---- sampling ------------------------------------------------------------------------

    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_size,)

    def decode(self, latent: Tensor, conditions: Tensor) -> Tensor:
        # on a CPU, pieces that fit in the cache run about twice as fast per shower
        pieces = self.decode_in_pieces(latent, conditions, _CPU_CHUNK)
        if pieces is not None:
            return pieces
        energy_gev, angle = self._split_conditions(conditions)
        images = self._to_mev(self._generate(self.generator, latent, energy_gev, angle),
                              energy_gev)
        return torch.cat([x.flatten(1) for x in images], dim=1)

    # ---- training ------------------------------------------------------------------------

    def configure_optimizers(self) -> None:
        c = self.config
        betas = (c.adam_beta1, c.adam_beta2)
        self.optimizers = {
            "generator": torch.optim.Adam(self.generator.parameters(), lr=c.gen_lr, betas=betas),
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=c.disc_lr,
                                              betas=betas),
        }

    def _layer_energies_gev(self, images: list[Tensor], energy_gev: Tensor) -> Tensor:
        """``(B, n_layers)`` energies in GeV of per-layer images in network units."""
        mev = self._to_mev(images, energy_gev)
        return mev_to_gev(torch.stack([x.sum(dim=(1, 2, 3)) for x in mev], dim=1))

    def _discriminate(self, images: list[Tensor], energy_gev: Tensor,
                      angle: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        layer_energies = self._layer_energies_gev(images, energy_gev)
        logit, regression = self.module("discriminator")(images, layer_energies, energy_gev,
                                                         angle)
        return logit, regression, layer_energies.sum(dim=1)

    def energy_target(self, energy_gev: Tensor) -> Tensor:
        """Target of the generated total in GeV for incident energies in GeV."""
        if self.config.energy_target == "incident":
            return energy_gev
        if self.config.energy_target == "data":
            return energy_gev * self.deposit_fraction
        # linear interpolation between bin centres, constant beyond the outer ones
        x = (self._log_energy(energy_gev) * _FIT_BINS - 0.5).clamp(0, _FIT_BINS - 1)
        lo = x.floor().long().clamp_max(_FIT_BINS - 2)
        w = x - lo
        return energy_gev * ((1 - w) * self.deposit_table[lo] + w * self.deposit_table[lo + 1])

    def _energy_loss(self, total: Tensor, energy_gev: Tensor) -> Tensor:
        """The energy constraint (before ``energy_loss_weight``; see the config)."""
        residual = total - self.energy_target(energy_gev)
        if self.config.energy_loss == "absolute":
            return residual.abs().mean()
        relative = residual / energy_gev
        if self.config.energy_loss == "relative":
            return relative.abs().mean()
        groups = relative[torch.argsort(energy_gev)].tensor_split(
            min(self.config.energy_loss_bins, len(relative)))
        return torch.stack([g.mean().abs() for g in groups]).mean()

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, float]:
        c = self.config
        conditions = batch["conditions"]
        n = len(conditions)
        energy, angle = self._split_conditions(conditions)
        real = self._to_units(batch["voxels"], energy)
        scale = c.energy_scale_gev
        gen, disc = self.module("generator"), self.module("discriminator")
        opt_g, opt_d = self.optimizers["generator"], self.optimizers["discriminator"]
        ones = torch.ones(n, device=energy.device)
        zeros = torch.zeros(n, device=energy.device)

        def fake_conditions():
            return conditions[torch.randperm(n, device=conditions.device)]

        # discriminator: a real batch, then a generated one (never mixed: batch norm and
        # minibatch discrimination see batch statistics)
        disc.requires_grad_(True)
        opt_d.zero_grad(set_to_none=True)
        logit, reg, _ = self._discriminate(real, energy, angle)
        d_real = F.binary_cross_entropy_with_logits(logit, ones)
        d_aux_real = F.l1_loss(reg, energy / scale)
        (d_real + c.aux_loss_weight * d_aux_real).backward()
        opt_d.step()
        p_real = torch.sigmoid(logit).mean()

        fc = fake_conditions()
        f_energy, f_angle = self._split_conditions(fc)
        with torch.no_grad():
            fake = self._generate(gen, self.draw_latent(n), f_energy, f_angle)
        opt_d.zero_grad(set_to_none=True)
        logit, reg, _ = self._discriminate(fake, f_energy, f_angle)
        d_fake = F.binary_cross_entropy_with_logits(logit, zeros)
        d_aux_fake = F.l1_loss(reg, f_energy / scale)
        (d_fake + c.aux_loss_weight * d_aux_fake).backward()
        opt_d.step()
        p_fake = torch.sigmoid(logit).mean()

        # generator: fool the discriminator, respect the requested energy
        disc.requires_grad_(False)
        g_adv = g_energy = g_aux = 0.0
        for _ in range(c.generator_steps):
            fc = fake_conditions()
            f_energy, f_angle = self._split_conditions(fc)
            opt_g.zero_grad(set_to_none=True)
            fake = self._generate(gen, self.draw_latent(n), f_energy, f_angle)
            logit, reg, total = self._discriminate(fake, f_energy, f_angle)
            adv = F.binary_cross_entropy_with_logits(logit, ones)
            aux = F.l1_loss(reg, f_energy / scale)
            if c.energy_loss_sampling == "batch":
                e_loss = self._energy_loss(total, f_energy)
                (adv + c.energy_loss_weight * e_loss + c.aux_loss_weight * aux).backward()
            else:
                # two backward passes (gradients add up), so that a DDP-wrapped generator
                # never runs two forwards before one backward
                (adv + c.aux_loss_weight * aux).backward()
                e_loss = self._log_uniform_energy_loss(gen, n, f_angle, energy.device)
                (c.energy_loss_weight * e_loss).backward()
            opt_g.step()
            g_adv += adv.item() / c.generator_steps
            g_energy += e_loss.item() / c.generator_steps
            g_aux += aux.item() / c.generator_steps
        disc.requires_grad_(True)
        return {
            "d_loss_real": d_real.item(), "d_loss_fake": d_fake.item(),
            "d_aux": 0.5 * (d_aux_real.item() + d_aux_fake.item()),
            "g_loss": g_adv, "g_aux": g_aux,
            ("g_energy_mae_gev" if c.energy_loss == "absolute" else "g_energy_rel"): g_energy,
            "d_real": p_real.item(), "d_fake": p_fake.item(),
        }
