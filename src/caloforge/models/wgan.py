"""A conditional Wasserstein GAN with gradient penalty (WGAN-GP) of dense layers.

The model of Klein's 2017 talk (see References; a dense WGAN for the 89 cells of an
ATLAS-like photon cluster), with the two steps that talk lists as its next ones:
conditioning on the photon energy, and the improved loss with a gradient penalty
(Gulrajani et al.). It works for any geometry: the cells are a flat vector of
``geometry.n_voxels``.

- Preprocessing (learnt in :meth:`WGAN.prepare`, stored in buffers): each cell is
  divided by the incident energy and by that cell's mean deposited fraction in the
  training showers, then raised to ``voxel_power``::

      u_i = (E_i / (E_inc * s_i)) ** voxel_power,   s_i = mean_train(E_i / E_inc)

  so every cell is O(1) whatever its mean (the presampler sees ~1e-4 of the energy, the
  hottest middle cell ~0.5). The inverse is exact; zeros stay zeros.
- Response coordinate (``response_coordinate``): the cells are fractions of the shower's
  own total (``s_i`` the mean of ``E_i / E_tot``) and one more coordinate holds the
  standardised response ``r = (E_tot / E_inc - mu) / sigma``; the generator emits it
  beside the cells (its cells are renormalised to a shape), and the critic and its
  gradient penalty see it like a cell. Without it a one-sigma change of the response
  (1.3% for atlas89 photons) moves a shower by ~0.06 in cell units, too little for a
  critic of unit slope to see the response's width.
- Condition: ``c = 2 (log E - log E_lo) / (log E_hi - log E_lo) - 1`` over the trained
  energy range, concatenated to the latent vector (generator) and to the cells (critic).
- Generator: ``[z, c]`` -> dense layers with LeakyReLU -> ``n_voxels`` -> ReLU (exact
  zeros, non-negative MeV after the inverse preprocessing).
- Critic: ``[u, c]`` (plus, with ``critic_energy_features``, the layer and total
  deposited fractions computed from ``u``, standardised by the training showers) ->
  dense layers with LeakyReLU, no normalisation (the penalty is per shower) -> one score.
- Loss (Gulrajani et al., Algorithm 1)::

      L_critic = mean D(fake) - mean D(real) + lambda * mean (|grad_x D(x_hat)|_2 - 1)^2
      x_hat = eps * real + (1 - eps) * fake,   eps ~ U[0, 1] per shower
      L_gen = -mean D(G(z, c)) + energy_loss_weight * L_E

  The gradient is taken with respect to the preprocessed cells ``u`` only (the
  condition is held fixed), real and generated showers of an interpolate share the
  same incident energy. One training step is ``critic_iterations`` critic updates,
  each on its own slice of the loop's batch (the algorithm draws a fresh real batch per
  critic iteration), then one generator update on as many showers as one slice.
- Energy constraint (Klein 2017: "we enforced ... the energy of the event"), on when
  ``energy_loss_weight > 0``: the mean over the generated batch of the relative
  deviation of the generated cluster energy from its target::

      L_E = mean_b | sum_i E_i(b) - T(b) | / E_inc(b)      (dimensionless)
      T(b) = E_inc(b) * f_mean   (energy_target "data", f_mean = mean training
                                  sum_i E_i / E_inc, learnt in prepare())
      T(b) = E_inc(b)            (energy_target "incident")

  It is logged as ``g_energy_rel`` whatever the weight.

Adam with ``lr = 1e-4``, ``betas = (0, 0.9)``, ``n_critic = 5``, ``lambda = 10`` are the
paper's defaults (Algorithm 1; some of its experiments use ``betas = (0.5, 0.9)``).

Distributed training: the critic steps call the wrapped critic once on the concatenation
of real, generated and interpolated showers (one forward per backward, as DDP expects)
and take the penalty's gradient with ``torch.autograd.grad(..., inputs=x_hat,
create_graph=True)``, which touches no parameter gradient, so DDP reduces the critic's
gradients once, in the final ``backward``. The generator step calls the plain, frozen
critic, and the critic steps the plain generator without gradients.

References:
    Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville, "Improved Training of Wasserstein
    GANs", NeurIPS 2017, arXiv:1704.00028.

    Arjovsky, Chintala, Bottou, "Wasserstein GAN", arXiv:1701.07875.

    Klein, "Generative modeling - electromagnetic shower of a calorimeter" (2017), a
    dense WGAN for an 89-cell ATLAS photon cluster (a talk, April 2017).
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
from caloforge.models.base import Conditioning, GenerativeModel, ModelConfig

__all__ = ["WGANConfig", "WGAN", "WGANGenerator", "WGANCritic", "interpolate",
           "gradient_penalty", "critic_loss"]

_MIN_SCALE = 1e-12  # floor of a cell's mean fraction (a cell never hit in training)


@dataclass(frozen=True)
class WGANConfig(ModelConfig):
    """WGAN-GP settings (defaults: Gulrajani et al., Algorithm 1).

    Attributes:
        latent_size: dimension of the standard normal latent vector.
        generator_layers: widths of the generator's hidden dense layers.
        critic_layers: widths of the critic's hidden dense layers.
        leaky_slope: LeakyReLU negative slope of both networks.
        critic_iterations: critic updates per generator update (n_critic, 5).
        gp_weight: gradient-penalty weight lambda (10).
        gen_lr, critic_lr: Adam learning rates (1e-4).
        adam_betas: Adam (beta1, beta2) of both optimisers ((0, 0.9); (0.5, 0.9) is the
            paper's other choice).
        voxel_power: exponent of the preprocessing ``u = (E / (E_inc s)) ** power``.
        critic_energy_features: give the critic the layer and total deposited fractions.
        energy_loss_weight: weight of the energy constraint ``L_E`` (0: off).
        energy_target: ``"data"`` (E_inc times the mean deposited fraction of the
            training showers) or ``"incident"`` (E_inc).
        response_coordinate: represent a shower as its normalised shape ``E_i / E_tot``
            (cells scaled as above with ``s_i`` the mean shape fraction) plus one more
            coordinate, its standardised response ``r = (E_tot / E_inc - mu) / sigma``:
            the generator emits ``r`` beside the cells, the critic reads it and the
            gradient penalty bounds the critic's slope in ``r`` like in any cell. Without
            it, a 1-sigma change of the response moves a shower by ~0.06 in cell units
            (atlas89 photons), so the 1-Lipschitz critic cannot see the response's width.
    """

    latent_size: int = 64
    generator_layers: tuple[int, ...] = (256, 256, 256)
    critic_layers: tuple[int, ...] = (256, 256, 256)
    leaky_slope: float = 0.2
    critic_iterations: int = 5
    gp_weight: float = 10.0
    gen_lr: float = 1e-4
    critic_lr: float = 1e-4
    adam_betas: tuple[float, float] = (0.0, 0.9)
    voxel_power: float = 0.5
    critic_energy_features: bool = True
    energy_loss_weight: float = 0.0
    energy_target: str = "data"
    response_coordinate: bool = False

    def __post_init__(self) -> None:
        check_choice("wgan", "energy_target", self.energy_target, ("data", "incident"))
        for name in ("latent_size", "critic_iterations"):
            if getattr(self, name) < 1:
                raise CaloforgeError(f"wgan {name} must be at least 1")
        if not self.generator_layers or not self.critic_layers or min(
                (*self.generator_layers, *self.critic_layers)) < 1:
            raise CaloforgeError("wgan generator_layers and critic_layers need positive widths")
        if self.voxel_power <= 0:
            raise CaloforgeError("wgan voxel_power must be positive")
        if self.gp_weight < 0 or self.energy_loss_weight < 0:
            raise CaloforgeError("wgan gp_weight and energy_loss_weight must be >= 0")


def _mlp(n_in: int, widths: tuple[int, ...], n_out: int, slope: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(n_in, width), nn.LeakyReLU(slope)]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class WGANGenerator(nn.Module):
    """``(latent (B, latent_size), condition (B, 1))`` -> preprocessed cells ``u``
    ``(B, n_voxels)``, non-negative, followed by ``n_extra`` unbounded outputs (the
    standardised response with ``response_coordinate``)."""

    def __init__(self, n_voxels: int, cfg: WGANConfig, n_extra: int = 0):
        super().__init__()
        self.n_voxels = n_voxels
        self.net = _mlp(cfg.latent_size + 1, cfg.generator_layers, n_voxels + n_extra,
                        cfg.leaky_slope)

    def forward(self, latent: Tensor, condition: Tensor) -> Tensor:
        out = self.net(torch.cat([latent, condition], dim=1))
        if out.shape[1] == self.n_voxels:
            return F.relu(out)
        return torch.cat([F.relu(out[:, :self.n_voxels]), out[:, self.n_voxels:]], dim=1)


class WGANCritic(nn.Module):
    """``(u (B, n_voxels), condition (B, 1), features (B, n_features))`` -> score ``(B,)``.

    ``features`` are the standardised energy fractions (``n_features`` may be 0)."""

    def __init__(self, n_voxels: int, n_features: int, cfg: WGANConfig):
        super().__init__()
        self.net = _mlp(n_voxels + 1 + n_features, cfg.critic_layers, 1, cfg.leaky_slope)

    def forward(self, u: Tensor, condition: Tensor, features: Tensor) -> Tensor:
        return self.net(torch.cat([u, condition, features], dim=1)).squeeze(1)


# ---- the WGAN-GP loss, as plain functions ---------------------------------------------------


def interpolate(real: Tensor, fake: Tensor, eps: Tensor | None = None) -> Tensor:
    """Random points on the lines between paired real and generated showers.

    Args:
        real, fake: ``(B, D)``.
        eps: ``(B,)`` or ``(B, 1)`` mixing weights in [0, 1]; ``None`` draws U[0, 1].

    Returns:
        ``x_hat = eps * real + (1 - eps) * fake``, ``(B, D)``, detached from both.
    """
    if eps is None:
        eps = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype)
    eps = eps.reshape(-1, 1)
    return (eps * real.detach() + (1.0 - eps) * fake.detach())


def gradient_penalty(scores: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
    """The two-sided penalty ``mean_b (|grad_x D(x_hat_b)|_2 - 1)^2``.

    Args:
        scores: critic scores ``(B,)`` of ``x_hat``, computed with ``x_hat`` requiring grad.
        x_hat: the interpolates ``(B, D)``.

    Returns:
        ``(penalty, gradient norms (B,))``; the penalty keeps its graph (``create_graph``)
        so that its gradient reaches the critic's parameters.
    """
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return ((norms - 1.0) ** 2).mean(), norms


def critic_loss(critic: Callable[[Tensor, Tensor], Tensor], real: Tensor, fake: Tensor,
                condition: Tensor, gp_weight: float,
                eps: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """The WGAN-GP critic loss ``mean D(fake) - mean D(real) + gp_weight * GP``.

    The critic is called once, on real, generated and interpolated showers together (one
    forward per backward, which DistributedDataParallel requires).

    Args:
        critic: ``critic(x (N, D), condition (N, C)) -> scores (N,)``.
        real, fake: ``(B, D)`` showers (``fake`` is detached here).
        condition: ``(B, C)`` shared by the real and generated shower of each row.
        gp_weight: lambda.
        eps: interpolation weights (``None``: U[0, 1]).

    Returns:
        ``(loss, metrics)`` with ``wasserstein`` (mean D(real) - mean D(fake)),
        ``gradient_penalty`` and ``grad_norm`` (mean norm at the interpolates).
    """
    b = real.shape[0]
    x_hat = interpolate(real, fake, eps).requires_grad_(True)
    x = torch.cat([real.detach(), fake.detach(), x_hat])
    scores = critic(x, torch.cat([condition, condition, condition]))
    d_real, d_fake, d_hat = scores[:b], scores[b:2 * b], scores[2 * b:]
    penalty, norms = gradient_penalty(d_hat, x_hat)
    wasserstein = d_real.mean() - d_fake.mean()
    loss = -wasserstein + gp_weight * penalty
    return loss, {"wasserstein": wasserstein.item(), "gradient_penalty": penalty.item(),
                  "grad_norm": norms.mean().item()}


@register_model("wgan")
class WGAN(GenerativeModel):
    """The conditional dense WGAN-GP (see the module docstring)."""

    Config = WGANConfig
    wrapped_names = ("generator", "critic")
    # the gradient penalty differentiates the critic twice; torch.compile (aot_autograd)
    # does not support a double backward, so --compile compiles the generator only
    uncompiled_names = ("critic",)
    condition_sets = (("energy",),)
    progress_metrics = ("critic_loss", "wasserstein", "g_loss")

    @classmethod
    def tiny_config(cls) -> WGANConfig:
        return WGANConfig(latent_size=4, generator_layers=(8,), critic_layers=(8,),
                          critic_iterations=2)

    def __init__(self, geometry: Geometry, config: WGANConfig, conditioning: Conditioning):
        super().__init__(geometry, config, conditioning)
        n = geometry.n_voxels
        self.n_extra = int(config.response_coordinate)
        # the layer fractions, and the total unless it is a coordinate of its own
        n_features = geometry.n_layers + 1 - self.n_extra if config.critic_energy_features \
            else 0
        self.generator = WGANGenerator(n, config, self.n_extra)
        self.critic = WGANCritic(n + self.n_extra, n_features, config)
        # per-cell mean deposited fraction s_i; layer/total fraction mean and spread (for
        # the critic's energy features); mean total fraction f_mean (energy target)
        self.register_buffer("cell_scale", torch.ones(n))
        self.register_buffer("fraction_mean", torch.zeros(geometry.n_layers + 1))
        self.register_buffer("fraction_std", torch.ones(geometry.n_layers + 1))
        self.register_buffer("deposit_fraction", torch.tensor(1.0))
        lo, hi = conditioning.energy
        if not (0 < lo <= hi):
            raise CaloforgeError(f"wgan needs a positive energy range, got {lo}:{hi} MeV")
        self._log_lo = math.log(lo)
        self._log_span = max(math.log(hi) - math.log(lo), 1e-6)
        layer_of_cell = np.repeat(np.arange(geometry.n_layers), geometry.layer_sizes)
        self.register_buffer("layer_matrix", torch.as_tensor(
            np.eye(geometry.n_layers, dtype=np.float32)[layer_of_cell]), persistent=False)

    # ---- preprocessing -----------------------------------------------------------------

    def prepare(self, showers: ShowerSet) -> None:
        energy = showers.incident_energy.astype(np.float64)[:, None]
        fraction = showers.voxels.astype(np.float64) / energy
        total = fraction.sum(axis=1, keepdims=True)
        if self.n_extra:  # cells as fractions of the shower's own total: its shape
            fraction = fraction / np.maximum(total, 1e-12)
        self.cell_scale.copy_(torch.as_tensor(np.maximum(fraction.mean(axis=0), _MIN_SCALE)))
        per_layer = fraction @ self.layer_matrix.double().numpy()
        both = np.concatenate([per_layer, total], axis=1)
        self.fraction_mean.copy_(torch.as_tensor(both.mean(axis=0)))
        self.fraction_std.copy_(torch.as_tensor(np.maximum(both.std(axis=0), 1e-4)))
        self.deposit_fraction.fill_(float(total.mean()))

    def _condition(self, energy_mev: Tensor) -> Tensor:
        """``(B,)`` MeV -> ``(B, 1)`` log-energy scaled to [-1, 1] over the trained range."""
        return ((torch.log(energy_mev) - self._log_lo) / self._log_span * 2.0 - 1.0).unsqueeze(1)

    def _to_units(self, voxels_mev: Tensor, energy_mev: Tensor) -> Tensor:
        """MeV cells -> the representation the networks see: ``(B, n_voxels)`` cells ``u``,
        followed by the standardised response with ``response_coordinate``."""
        voxels = voxels_mev.clamp_min(0)
        if not self.n_extra:
            u = voxels / (energy_mev.unsqueeze(1) * self.cell_scale)
            return u.pow(self.config.voxel_power) if self.config.voxel_power != 1.0 else u
        total = voxels.sum(dim=1, keepdim=True)
        u = voxels / (total.clamp_min(1e-12) * self.cell_scale)
        u = u.pow(self.config.voxel_power) if self.config.voxel_power != 1.0 else u
        response = (total / energy_mev.unsqueeze(1) - self.fraction_mean[-1]) \
            / self.fraction_std[-1]
        return torch.cat([u, response], dim=1)

    def _to_fractions(self, u: Tensor) -> Tensor:
        """Preprocessed cells -> cell energy over incident energy (inverse of _to_units);
        with ``response_coordinate``, ``u`` carries the response in its last column."""
        if self.n_extra:
            response = u[:, -1:] * self.fraction_std[-1] + self.fraction_mean[-1]
            return self._shape(u[:, :-1]) * response.clamp_min(0)
        return self._shape(u)

    def _shape(self, u: Tensor) -> Tensor:
        if self.config.voxel_power != 1.0:
            u = u.pow(1.0 / self.config.voxel_power)
        return u * self.cell_scale

    def _normalise(self, x: Tensor) -> Tensor:
        """Generated cells and response -> cells of a shape summing to one (so that they
        are comparable with the real showers' shapes), response unchanged."""
        if not self.n_extra:
            return x
        u = x[:, :-1]
        norm = self._shape(u).sum(dim=1, keepdim=True) + 1e-12
        return torch.cat([u / norm.pow(self.config.voxel_power), x[:, -1:]], dim=1)

    def _score(self, critic: nn.Module, u: Tensor, condition: Tensor) -> Tensor:
        if self.config.critic_energy_features:
            cells = u[:, :-1] if self.n_extra else u
            per_layer = self._shape(cells.clamp_min(0)) @ self.layer_matrix
            both = per_layer if self.n_extra else torch.cat(
                [per_layer, per_layer.sum(dim=1, keepdim=True)], dim=1)
            n = both.shape[1]
            features = (both - self.fraction_mean[:n]) / self.fraction_std[:n]
        else:
            features = u.new_zeros(u.shape[0], 0)
        return critic(u, condition, features)

    # ---- sampling ----------------------------------------------------------------------

    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.latent_size,)

    def decode(self, latent: Tensor, conditions: Tensor) -> Tensor:
        energy = conditions[:, 0]
        u = self._normalise(self.generator(latent, self._condition(energy)))
        return self._to_fractions(u) * energy.unsqueeze(1)

    # ---- training ----------------------------------------------------------------------

    def configure_optimizers(self) -> None:
        c = self.config
        betas = tuple(c.adam_betas)
        self.optimizers = {
            "generator": torch.optim.Adam(self.generator.parameters(), lr=c.gen_lr,
                                          betas=betas),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr, betas=betas),
        }

    def energy_constraint(self, u: Tensor) -> Tensor:
        """``L_E = mean_b |sum_i E_i - T| / E_inc`` of preprocessed showers ``u`` (B, D),
        computed as ``|sum_i E_i / E_inc - T / E_inc|`` (see the module docstring)."""
        total_fraction = self._to_fractions(u).sum(dim=1)
        target = (self.deposit_fraction if self.config.energy_target == "data"
                  else torch.ones_like(total_fraction))
        return (total_fraction - target).abs().mean()

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, float]:
        c = self.config
        energy = batch["conditions"][:, 0]
        real = self._to_units(batch["voxels"], energy)
        condition = self._condition(energy)
        n = real.shape[0]
        k = c.critic_iterations
        # one disjoint slice of the batch per critic iteration; a batch smaller than
        # n_critic is reused whole by every iteration
        slices = (list(zip(real.tensor_split(k), condition.tensor_split(k), strict=True))
                  if n >= k else [(real, condition)] * k)
        critic = self.module("critic")
        opt_c, opt_g = self.optimizers["critic"], self.optimizers["generator"]

        def score(x: Tensor, cond: Tensor) -> Tensor:
            return self._score(critic, x, cond)

        sums = {"critic_loss": 0.0, "wasserstein": 0.0, "gradient_penalty": 0.0,
                "grad_norm": 0.0}
        self.critic.requires_grad_(True)
        for real_k, cond_k in slices:
            with torch.no_grad():
                fake_k = self._normalise(
                    self.generator(self.draw_latent(real_k.shape[0]), cond_k))
            opt_c.zero_grad(set_to_none=True)
            loss, metrics = critic_loss(score, real_k, fake_k, cond_k, c.gp_weight)
            loss.backward()
            opt_c.step()
            sums["critic_loss"] += loss.item() / k
            for key, value in metrics.items():
                sums[key] += value / k

        # generator: the plain critic, frozen, is only a function here
        self.critic.requires_grad_(False)
        try:
            m = slices[0][0].shape[0]
            pick = torch.randperm(n, device=real.device)[:m]
            cond_g = condition[pick]
            opt_g.zero_grad(set_to_none=True)
            fake = self._normalise(self.module("generator")(self.draw_latent(m), cond_g))
            adversarial = -self._score(self.critic, fake, cond_g).mean()
            e_loss = self.energy_constraint(fake)
            g_loss = adversarial + c.energy_loss_weight * e_loss if c.energy_loss_weight \
                else adversarial
            g_loss.backward()
            opt_g.step()
        finally:
            self.critic.requires_grad_(True)
        return {**sums, "g_loss": adversarial.item(), "g_energy_rel": e_loss.item()}
