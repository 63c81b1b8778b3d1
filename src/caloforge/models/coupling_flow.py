"""A conditional coupling-block normalizing flow: one network pass per block both ways.

Registry name ``coupling-flow``: the field calls this architecture a coupling flow
(Dinh et al.'s coupling layers with Durkan et al.'s rational-quadratic spline transforms,
a "neural spline flow" of coupling type); CaloINN (Ernst et al.) is such a flow for
calorimeter showers, and "INN" is that group's name for it. The name says what the model is
rather than which paper it copies, since the sizes here are the project's own.

CaloFlow's factorisation (Krause & Shih) of a shower into layer energies and normalised
voxels is kept, ``p(E_0..E_{L-1} | E_inc) * p(I | E_0..E_{L-1}, E_inc)``:

- Flow I, the layer energies given the incident energy (and the angle where the geometry
  has one): zuko's ``NSF`` (a masked autoregressive flow with rational-quadratic splines).
  It has ``L`` features, so its ``L`` sequential passes per block in sampling cost little
  beside Flow II (calogan: 0.2 MFLOP per shower with 4 transforms of 64, 0.9 with 6 of 128,
  against Flow II's 4.7), and zuko's spline finds its bin by counted comparisons, which exports to
  ONNX (tested): zuko serves here as it stands.
- Flow II, the per-layer-normalised voxels given the layer energies and the conditions:
  coupling blocks (:mod:`caloforge.models._coupling`). Each block splits the voxels, after
  a fixed random permutation, into a conditioning half and a transformed half; a small MLP
  of the conditioning half and the context returns rational-quadratic spline parameters
  for the transformed half only, so density evaluation (maximum-likelihood training) and
  sampling are each one network pass per block. With ``permutations: alternating`` every
  second block transforms the half the block before it read, so that no voxel is left
  untransformed (independent random splits leave one in 64 with 6 blocks). zuko's
  coupling transform (``GeneralCouplingTransform``) has the same structure, but it finds
  its split with ``nonzero`` at every call and lays the spline parameters out
  feature-major; the project's own block keeps the split in buffers and lays the
  parameters out bin-major
  (see ``_coupling``): with one exponential for all spline parameters, this took the CPU
  time of a 6-block calogan flow from 0.50 to 0.37 ms per shower on one loaded thread.

Preprocessing is CaloFlow's (:mod:`caloforge.models._flowprep`): uniform dequantisation
noise on every voxel, layer energies mapped to Flow I's shares and logit, voxels divided
by their layer energy, logit, standardised; conditions as ``log10 E_inc`` scaled to
``[0, 1]`` (the angle, where present, scaled to ``[0, 1]`` over its trained range).
Sampled voxels below ``threshold_mev`` are set to zero, as a readout threshold would.

Outliers (``resample_outliers``): a flow's tails reach values no training shower had,
and one sampled shower in a few thousand comes out with a stray far deposit that moves
its centroid out of anything in the training data. With ``resample_outliers = n``, Flow
II's noise is drawn again, up to ``n`` times, for a sampled shower whose Flow II variable
exceeds the largest value that voxel took in the training showers (stored with the model):
rejection sampling on the training range, in :meth:`CouplingFlow.sample` only; ``decode``
(and the exported graph) stays a fixed map of its noise. Only the upper side is checked:
below it a voxel ends under the readout threshold anyway.

Both flows train together, one likelihood step per batch (``loss = NLL_I + NLL_II``), one
Adam optimiser with a cosine decay over ``lr_steps``. No teacher, no distillation.

Cost: :meth:`CouplingFlow.mflop_per_shower` counts the network multiply-adds per shower;
with the default config on calogan (504 voxels, 6 blocks of 64x2 hidden units, 8 bins;
Flow I 4 transforms of 64) it is 4.9 MFLOP, 4.7 of them Flow II's. The spline arithmetic
around the networks (elementwise) costs 3-4 times the networks' time on a CPU
(docs/coupling-flow.md).

References:
    Krause, Shih, "CaloFlow: Fast and Accurate Generation of Calorimeter Showers with
    Normalizing Flows", arXiv:2106.05285.

    Ernst, Favaro, Krause, Plehn, Shih, "Normalizing Flows for High-Dimensional Detector
    Simulations", arXiv:2312.09290 (CaloINN).

    Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", arXiv:1906.04032.

    Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", arXiv:1605.08803.

    Rozet et al., zuko (github.com/probabilists/zuko).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from caloforge.config import check_choice
from caloforge.data.showers import ShowerSet
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.models import register_model
from caloforge.models._coupling import CouplingStack, coupling_macs
from caloforge.models._flowprep import FlowPreprocessing, FlowPreprocessingConfig
from caloforge.models.base import Conditioning, GenerativeModel

__all__ = ["CouplingFlowConfig", "CouplingFlow"]

_CPU_CHUNK = 256  # showers per Flow II pass in CPU inference (cache-sized activations)
#: the interval [-5, 5] of zuko's spline transform (MonotonicRQSTransform's bound), Flow I's
ZUKO_BOUND = 5.0


@dataclass(frozen=True)
class CouplingFlowConfig(FlowPreprocessingConfig):
    """Coupling-flow settings (CPU-sized defaults); ``bins`` (both flows), ``bound``,
    ``noise_mev``, ``threshold_mev``, ``alpha``, ``prepare_showers`` and ``tail_knee`` are
    the shared :class:`~caloforge.models._flowprep.FlowPreprocessingConfig`'s.

    Attributes:
        flow1_transforms, flow1_hidden: Flow I (zuko NSF) autoregressive transforms and
            hidden units (two hidden layers).
        blocks: Flow II coupling blocks.
        hidden, layers: units per hidden layer and hidden layers of each block's MLP.
        lr: Adam learning rate at the start.
        lr_steps: steps of the cosine decay to ``lr_floor * lr`` (constant after).
        lr_floor: final learning-rate fraction.
        grad_clip: gradient-norm clip per step.
        seed: seeds Flow II's permutations.
        permutations: ``"random"`` (every block's split drawn independently; what every
            model trained before this setting has) or ``"alternating"`` (every second block
            transforms the half the block before it read, so each pair of blocks transforms
            every voxel once; with random splits 6 blocks leave about one voxel in 64
            untransformed, see :meth:`CouplingStack.coverage`).
        resample_outliers: how many times a sampled shower with a Flow II variable above
            the training showers' largest value is drawn again (module docstring); 0 turns
            it off (the default, and what every model trained before it does).

    Raises:
        CaloforgeError: a setting out of range.
    """

    family: ClassVar[str] = "coupling-flow"

    flow1_transforms: int = 4
    flow1_hidden: int = 64
    blocks: int = 6
    hidden: int = 64
    layers: int = 2
    lr: float = 1e-3
    lr_steps: int = 10000
    lr_floor: float = 0.02
    grad_clip: float = 10.0
    seed: int = 0
    permutations: str = "random"
    resample_outliers: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_at_least_one("flow1_transforms", "flow1_hidden", "blocks", "hidden",
                                "layers", "lr_steps")
        check_choice("coupling-flow", "permutations", self.permutations,
                     ("random", "alternating"))
        if self.resample_outliers < 0:
            raise CaloforgeError("coupling-flow resample_outliers must not be negative (0: off)")
        if not (self.lr > 0 and self.grad_clip > 0):
            raise CaloforgeError("coupling-flow lr and grad_clip must be positive")
        if not 0 < self.lr_floor <= 1:
            raise CaloforgeError("coupling-flow lr_floor must be in (0, 1]")


class _LayerFlow(nn.Module):
    """Flow I: zuko's NSF over the ``L`` Flow I variables; ``forward`` is the log-density
    (so a DDP wrapper sees tensors), :meth:`inverse` maps base noise to samples."""

    def __init__(self, features: int, context: int, transforms: int, hidden: int, bins: int):
        super().__init__()
        import zuko

        self.flow = zuko.flows.NSF(features=features, context=context, transforms=transforms,
                                   bins=bins, hidden_features=(hidden, hidden))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        return self.flow(context).log_prob(x)

    def inverse(self, z: Tensor, context: Tensor) -> Tensor:
        return self.flow.transform(context).inv(z)


@register_model("coupling-flow")
class CouplingFlow(GenerativeModel):
    """Flow I (zuko NSF) + Flow II (coupling blocks); see the module docstring.

    Args:
        geometry: the calorimeter readout (conditions: energy, or energy and angle).
        config: a :class:`CouplingFlowConfig`.
        conditioning: the trained conditioning range.
    """

    Config = CouplingFlowConfig
    wrapped_names = ("flow1", "flow2")
    condition_sets = (("energy",), ("energy", "angle"))

    @classmethod
    def tiny_config(cls) -> CouplingFlowConfig:
        return CouplingFlowConfig(flow1_transforms=2, flow1_hidden=8, blocks=2, hidden=8,
                                  layers=1, bins=4, prepare_showers=64, lr_steps=10,
                                  permutations="alternating")

    def __init__(self, geometry: Geometry, config: CouplingFlowConfig,
                 conditioning: Conditioning):
        super().__init__(geometry, config, conditioning)
        cfg = config
        self.prep = FlowPreprocessing(geometry, cfg.noise_mev, cfg.threshold_mev, cfg.alpha,
                                      cfg.tail_knee)
        n_layers, n_voxels = self.prep.n_layers, self.prep.n_voxels
        lo, hi = conditioning.energy
        self.prep.log_energy_range.copy_(
            torch.tensor([math.log10(lo), math.log10(max(hi, lo * 1.01))]))
        angle = conditioning.angle or (0.0, 180.0)
        self.register_buffer("angle_range", torch.tensor(
            [float(angle[0]), float(max(angle[1], angle[0] + 1e-3))]))
        self.has_angle = "angle" in geometry.conditions
        n_cond = 1 + int(self.has_angle)
        self.flow1 = _LayerFlow(n_layers, n_cond, cfg.flow1_transforms, cfg.flow1_hidden,
                                cfg.bins)
        self.flow2 = CouplingStack(n_voxels, n_cond + n_layers, cfg.hidden, cfg.layers, cfg.bins,
                                cfg.bound, cfg.blocks, seed=cfg.seed,
                                alternating=cfg.permutations == "alternating")
        if cfg.resample_outliers:
            # each Flow II variable's largest value over the training showers (prepare)
            self.register_buffer("flow2_max", torch.full((n_voxels,), math.inf))

    def mflop_by_flow(self) -> dict[str, float]:
        """Network multiply-adds of one sampled shower, times two, in MFLOP, per flow:
        ``{"flow1": ..., "flow2": ...}``. Flow II: its coupling MLPs, one pass per block;
        Flow I: its MADE networks, which zuko runs ``passes`` times (once per layer energy)
        to invert an autoregressive transform."""
        cfg = self.config
        flow2 = coupling_macs(self.prep.n_voxels, 1 + int(self.has_angle) + self.prep.n_layers,
                              cfg.hidden, cfg.layers, cfg.bins, cfg.blocks)
        flow1 = sum(transform.passes * sum(m.weight.numel() for m in transform.modules()
                                           if isinstance(m, nn.Linear))
                    for transform in self.flow1.flow.transform.transforms)
        return {"flow1": 2 * flow1 / 1e6, "flow2": 2 * flow2 / 1e6}

    def mflop_per_shower(self) -> float:
        """Network multiply-adds of one sampled shower, times two, in MFLOP (both flows,
        :meth:`mflop_by_flow`)."""
        return sum(self.mflop_by_flow().values())

    # ---- training ----------------------------------------------------------------------

    def prepare(self, showers: ShowerSet) -> None:
        self.prep.fit_showers(showers, self.config, self.conditioning.energy, ZUKO_BOUND)
        untouched = int((self.flow2.coverage() == 0).sum())
        if untouched:
            warnings.warn(f"coupling-flow: {untouched} of the {self.prep.n_voxels} voxels are "
                          f"transformed by none of the {self.config.blocks} blocks' random "
                          "splits and keep Flow II's base distribution (set permutations: "
                          "alternating)", stacklevel=2)
        if self.config.resample_outliers:
            self.flow2_max.copy_(self.prep.flow2_maximum(showers))

    def configure_optimizers(self) -> None:
        params = list(self.flow1.parameters()) + list(self.flow2.parameters())
        self.optimizers = {"flow": torch.optim.Adam(params, lr=self.config.lr)}

    def _context(self, conditions: Tensor) -> Tensor:
        """``(B, 1)`` or ``(B, 2)``: scaled ``log10 E_inc`` (and angle) in ``[0, 1]``."""
        c = self.prep.energy_context(conditions[:, 0])
        if self.has_angle:
            lo, hi = self.angle_range[0], self.angle_range[1]
            c = torch.cat([c, ((conditions[:, 1] - lo) / (hi - lo)).unsqueeze(-1)], dim=-1)
        return c

    def _flow2_context(self, context: Tensor, layers: Tensor) -> Tensor:
        log_layers = (torch.log10(layers) - self.prep.layer_log_mean) / self.prep.layer_log_std
        return torch.cat([context, log_layers], dim=-1)

    def _set_lr(self, step: int) -> None:
        cfg = self.config
        frac = min(max((step - 1) / max(cfg.lr_steps - 1, 1), 0.0), 1.0)
        factor = cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * frac))
        for group in self.optimizers["flow"].param_groups:
            group["lr"] = group.setdefault("base_lr", group["lr"]) * factor

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, float]:
        with torch.no_grad():
            conditions = batch["conditions"]
            energy = conditions[:, 0]
            voxels = self.prep.add_noise(batch["voxels"])
            layers = self.prep.layer_energies(voxels)
            context = self._context(conditions)
            x1 = self.prep.layers_to_flow1(layers, energy)
            x2 = self.prep.voxels_to_flow2(voxels, layers)
            c2 = self._flow2_context(context, layers)
        self._set_lr(step)
        opt = self.optimizers["flow"]
        opt.zero_grad(set_to_none=True)
        nll1 = -self.module("flow1")(x1, context).mean()
        nll2 = -self.module("flow2")(x2, c2).mean()
        loss = nll1 + nll2
        loss.backward()
        params = [p for group in opt.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        opt.step()
        return {"loss": float(loss.detach()), "flow1_nll": float(nll1.detach()),
                "flow2_nll_per_voxel": float(nll2.detach()) / self.prep.n_voxels,
                "grad_norm": float(grad_norm)}

    @torch.no_grad()
    def log_prob(self, voxels: Tensor, conditions: Tensor) -> Tensor:
        """``log p`` of noisy showers in the flows' variables (Flow I + Flow II), ``(B,)``;
        a diagnostic, not a density of the MeV voxels (the preprocessing Jacobian is left
        out). ``voxels`` ``(B, n_voxels)`` MeV, ``conditions`` ``(B, n_conditions)``."""
        voxels = self.prep.add_noise(voxels)
        layers = self.prep.layer_energies(voxels)
        context = self._context(conditions)
        x1 = self.prep.layers_to_flow1(layers, conditions[:, 0])
        x2 = self.prep.voxels_to_flow2(voxels, layers)
        return self.flow1(x1, context) + self.flow2(
            x2, self._flow2_context(context, layers))

    # ---- sampling ----------------------------------------------------------------------

    def latent_shape(self) -> tuple[int, ...]:
        return (self.prep.n_layers + self.prep.n_voxels,)

    def decode(self, latent: Tensor, conditions: Tensor) -> Tensor:
        """Showers ``(N, n_voxels)`` MeV from ``latent`` ``(N, L + n_voxels)`` (standard
        normal: Flow I's noise, then Flow II's) and ``conditions`` ``(N, n_conditions)``
        (incident energy in MeV, angle in degrees)."""
        return self._decode(latent, conditions, 0, None)

    def decode_sample(self, latent: Tensor, conditions: Tensor,
                      generator: torch.Generator | None) -> Tensor:
        """:meth:`decode`; with ``resample_outliers`` a shower whose Flow II variable exceeds
        the training showers' largest value gets new Flow II noise from ``generator``, up
        to that many times (module docstring)."""
        return self._decode(latent, conditions, self.config.resample_outliers, generator)

    def _decode(self, latent: Tensor, conditions: Tensor, rounds: int,
                generator: torch.Generator | None) -> Tensor:
        """:meth:`decode` with up to ``rounds`` redraws of the showers out of range (all
        of the batch's in one pass per round)."""
        x2, layers, c2 = self._invert_flows(latent, conditions)
        for _ in range(rounds):
            again = (x2 > self.flow2_max).any(-1).nonzero()[:, 0]
            if len(again) == 0:
                break
            noise = torch.randn((len(again), self.prep.n_voxels), generator=generator,
                                device=x2.device)
            x2[again] = self._in_pieces(self.flow2.inverse, noise, c2[again])
        return self._in_pieces(self.prep.flow2_to_voxels, x2, layers)

    def _invert_flows(self, latent: Tensor, conditions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Flow II's variables ``(N, n_voxels)``, the layer energies ``(N, L)`` MeV and
        Flow II's context for ``latent`` and ``conditions`` (as :meth:`decode`). Flow I
        runs on the whole batch (its tensors are small; whole, they spread over the CPU
        threads), Flow II in cache-sized pieces on a CPU (as the postprocessing in
        :meth:`_decode`: a fresh full-batch temporary costs more in page faults than the
        arithmetic on it)."""
        n_layers = self.prep.n_layers
        context = self._context(conditions)
        x1 = self.flow1.inverse(latent[:, :n_layers], context)
        layers = self.prep.flow1_to_layers(x1, conditions[:, 0])
        c2 = self._flow2_context(context, layers.clamp_min(1e-6))
        return self._in_pieces(self.flow2.inverse, latent[:, n_layers:], c2), layers, c2

    def _in_pieces(self, fn, a: Tensor, b: Tensor) -> Tensor:
        """``fn(a, b)`` row-wise, in cache-sized pieces on a CPU (``decode_in_pieces``)."""
        pieces = self.decode_in_pieces(a, b, _CPU_CHUNK, fn)
        return pieces if pieces is not None else fn(a, b)

    def export_notes(self) -> list[str]:
        rounds = self.config.resample_outliers
        if not rounds:
            return []
        return [f"caloforge's sampler draws Flow II's noise again (up to {rounds} times) for a "
                "shower with a Flow II variable above the training showers' largest value; "
                "this graph does not, so its showers include those rare outliers (stray far "
                "deposits)"]

