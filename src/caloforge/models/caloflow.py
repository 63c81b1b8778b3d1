"""CaloFlow: Flow I for the layer energies, a MAF teacher and an IAF student for the voxels.

CaloFlow (Krause & Shih) factorises a shower as ``p(E_0..E_{L-1} | E_inc) *
p(I | E_0..E_{L-1}, E_inc)``, where ``I`` are the voxels normalised per layer:

- Flow I: a masked autoregressive flow (MAF) with rational-quadratic spline (RQS)
  transforms for the ``L`` layer-energy variables given ``log10 E_inc``, trained by
  likelihood. ``L`` comes from the geometry (3 for calogan, 4 for atlas89).
- Flow II teacher (CaloFlow v1): a MAF with RQS transforms for the normalised voxels given
  the layer energies and ``E_inc``, trained by likelihood. Density evaluation is one pass;
  sampling needs ``n_voxels`` sequential passes per block (slow by design).
- Flow II student (CaloFlow v2): an inverse autoregressive flow (IAF) with the teacher's
  block structure, sampling in one pass per block, trained by probability density
  distillation from the frozen teacher with the loss of CaloFlow II (arXiv:2110.11377)::

      MSE(z, z') + MSE(x, x') + MSE(z_i, z'_i) + MSE(x_i, x'_i) + MSE(p_z, p'_z) + MSE(p_x, p'_x)

  Data side: a training shower ``x`` goes through the teacher to ``z`` (intermediate block
  outputs ``x_i``, spline parameters ``p_x``); the student maps ``z`` back to ``x'`` (its
  ``x'_i``, ``p'_x``). Latent side: fresh noise ``z`` goes through the student to a sample,
  which the teacher maps back to ``z'`` (``z_i``, ``z'_i``, ``p_z``, ``p'_z`` likewise).
  The student's block ``k`` parametrises the same spline as the teacher's block ``k``, so
  the parameters are compared one to one. Both halves go through the student in one
  forward call (one batch), as DDP wants.

Preprocessing (noise, per-layer normalisation, logit with ``alpha = 1e-6``, conditions) is in
:mod:`caloforge.models._flowprep`; the flows in :mod:`caloforge.models._maf`, whose spline
maths is zuko's ``MonotonicRQSTransform`` rewritten to expose the spline parameters (the
distillation needs them) and to export to ONNX (bin search by comparisons). zuko's classes
are not used directly because the student loss needs per-block parameters and
intermediate results that zuko's transforms do not return.

Training in stages, one run directory: steps ``1..flow1_steps`` train Flow I,
the next ``teacher_steps`` the teacher, the next ``student_steps`` the student
(:meth:`CaloFlow.stage_at`). Each stage has its own optimiser and trains one module
(``flow1``, ``teacher``, ``student``, the names in ``wrapped_names``); the others are frozen.
``caloforge train caloflow --stage flow1|teacher|student|all`` sets ``max_steps`` to the end
of that stage (:meth:`CaloFlow.stage_end`), so stages can be trained one call at a time with
``--resume``. The buffer ``stage_steps`` counts the steps each stage has been trained, so a
checkpoint says which flows are usable.

Sampling: ``decode(latent, conditions)`` with ``latent = (Flow I noise (L), Flow II noise
(n_voxels))`` runs Flow I (``L`` passes per block) and then the flow named by
``self.sampler`` (``"student"`` by default; ``use_sampler("teacher")`` selects and checks it,
``caloforge generate --sampler teacher`` calls it).

Differences from the papers (config settings): CPU-sized networks (the papers: 8 MADE blocks
of one 504-unit hidden layer); a per-voxel standardisation after the logit; Adam with a
cosine decay per stage and gradient clipping; a 30 keV sampling threshold (1 keV in the
paper; see ``CaloFlowConfig.threshold_mev``). The student is trained from a random start.

References:
    Krause, Shih, "CaloFlow: Fast and Accurate Generation of Calorimeter Showers with
    Normalizing Flows", arXiv:2106.05285.

    Krause, Shih, "CaloFlow II: Even Faster and Still Accurate Generation of Calorimeter
    Showers with Normalizing Flows", arXiv:2110.11377.

    van den Oord et al., "Parallel WaveNet: Fast High-Fidelity Speech Synthesis",
    arXiv:1711.10433 (probability density distillation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caloforge.data.showers import ShowerSet
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.models import register_model
from caloforge.models._flowprep import FlowPreprocessing, FlowPreprocessingConfig
from caloforge.models._maf import IAF, MAF
from caloforge.models.base import Conditioning, GenerativeModel

__all__ = ["CaloFlowConfig", "CaloFlow", "STAGES"]

_CPU_CHUNK = 256  # showers per flow pass in CPU inference
#: training stages, in order
STAGES = ("flow1", "teacher", "student")


@dataclass(frozen=True)
class CaloFlowConfig(FlowPreprocessingConfig):
    """CaloFlow settings (CPU-sized defaults; the papers' values in brackets); ``bins``
    (8), ``bound``, ``noise_mev`` (1 keV), ``threshold_mev``, ``alpha`` (1e-6),
    ``prepare_showers`` and ``tail_knee`` are the shared
    :class:`~caloforge.models._flowprep.FlowPreprocessingConfig`'s.

    Attributes:
        flow1_steps, teacher_steps, student_steps: training steps of each stage.
        flow1_blocks, flow1_hidden: Flow I MADE blocks and hidden units (6, 64).
        flow2_blocks, flow2_hidden, flow2_layers: Flow II MADE blocks, hidden units per
            layer and hidden layers, shared by teacher and student (8, 504, 1 for the
            teacher).
        flow1_lr, teacher_lr, student_lr: Adam learning rates (cosine decay to
            ``lr_floor`` times that over each stage).
        lr_floor: final learning-rate fraction.
        grad_clip: gradient norm clip per step.

    Raises:
        CaloforgeError: a setting out of range.
    """

    family: ClassVar[str] = "caloflow"

    flow1_steps: int = 1000
    teacher_steps: int = 3000
    student_steps: int = 2000
    flow1_blocks: int = 4
    flow1_hidden: int = 64
    flow2_blocks: int = 3
    flow2_hidden: int = 128
    flow2_layers: int = 1
    flow1_lr: float = 1e-3
    teacher_lr: float = 1e-3
    student_lr: float = 1e-3
    lr_floor: float = 0.05
    grad_clip: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_at_least_one("flow1_steps", "teacher_steps", "student_steps",
                                "flow1_blocks", "flow1_hidden", "flow2_blocks",
                                "flow2_hidden", "flow2_layers")

    def stage_ends(self) -> tuple[int, int, int]:
        """Last step of each stage (cumulative)."""
        a = self.flow1_steps
        return a, a + self.teacher_steps, a + self.teacher_steps + self.student_steps


@register_model("caloflow")
class CaloFlow(GenerativeModel):
    """Flow I + Flow II teacher (MAF) + Flow II student (IAF); see the module docstring.

    Args:
        geometry: the calorimeter readout.
        config: a :class:`CaloFlowConfig`.
        conditioning: the trained conditioning range.

    Attributes:
        sampler: ``"student"`` or ``"teacher"``, the Flow II that :meth:`decode` uses.
    """

    Config = CaloFlowConfig
    wrapped_names = STAGES
    samplers = ("student", "teacher")
    optional_modules = ("teacher",)
    stages = STAGES
    progress_metrics = ("flow1_nll", "teacher_nll_per_voxel", "distill_loss")

    @classmethod
    def tiny_config(cls) -> CaloFlowConfig:
        return CaloFlowConfig(flow1_steps=1, teacher_steps=1, student_steps=1, flow1_blocks=2,
                              flow1_hidden=8, flow2_blocks=2, flow2_hidden=16, bins=4,
                              prepare_showers=64)

    def __init__(self, geometry: Geometry, config: CaloFlowConfig, conditioning: Conditioning):
        super().__init__(geometry, config, conditioning)
        cfg = config
        self.prep = FlowPreprocessing(geometry, cfg.noise_mev, cfg.threshold_mev, cfg.alpha,
                                      cfg.tail_knee)
        n_layers, n_voxels = self.prep.n_layers, self.prep.n_voxels
        lo, hi = conditioning.energy
        self.prep.log_energy_range.copy_(
            torch.tensor([math.log10(lo), math.log10(max(hi, lo * 1.01))]))
        self.flow1 = MAF(n_layers, 1, cfg.flow1_hidden, 1, cfg.bins, cfg.bound,
                         cfg.flow1_blocks)
        flow2 = (n_voxels, 1 + n_layers, cfg.flow2_hidden, cfg.flow2_layers, cfg.bins,
                 cfg.bound, cfg.flow2_blocks)
        self.teacher = MAF(*flow2)
        self.student = IAF(*flow2)
        self.register_buffer("stage_steps", torch.zeros(len(STAGES), dtype=torch.long))

    # ---- stages ------------------------------------------------------------------------

    def stage_at(self, step: int) -> str:
        """The stage that 1-based ``step`` trains (steps past the end train the student)."""
        ends = self.config.stage_ends()
        for name, end in zip(STAGES, ends, strict=True):
            if step <= end:
                return name
        return STAGES[-1]

    def trained_steps(self, stage: str) -> int:
        """Steps ``stage`` has been trained in this run."""
        return int(self.stage_steps[STAGES.index(stage)])

    def check_sampler(self, name: str) -> None:
        """Refuse a Flow II (or a Flow I) that has not been trained yet.

        Raises:
            CaloforgeError: the flow has not been trained; the message gives the command
                that trains it.
        """
        if name in self.dropped_modules:
            raise CaloforgeError(
                f"this pretrained CaloFlow ships without its {name} (to stay within the size "
                f"of a shipped model); train the run yourself to sample with --sampler {name}")
        for stage in ("flow1", name):
            if self.trained_steps(stage) == 0:
                raise CaloforgeError(
                    f"the caloflow {stage} flow of this run has not been trained yet; train it "
                    f"with: caloforge train caloflow --out RUN --stage {stage} --resume")

    def export_problem(self) -> str | None:
        if self.sampler == "teacher":
            return ("the CaloFlow teacher samples in one network pass per voxel and is not "
                    "exported; export the student (the default)")
        return super().export_problem()

    @classmethod
    def stage_end(cls, config: CaloFlowConfig, stage: str, current_step: int) -> int:
        """The last step of ``stage`` (``flow1``, ``teacher``, ``student``; ``all``: the
        student's), for a run now at ``current_step``.

        Raises:
            CaloforgeError: an unknown stage, a stage whose predecessor is not trained,
                or one already trained.
        """
        ends = config.stage_ends()
        if stage == "all":
            return ends[-1]
        if stage not in STAGES:
            raise CaloforgeError(f"unknown stage {stage!r}; choose {', '.join(STAGES)} or all")
        index = STAGES.index(stage)
        start = ([0, *ends])[index]
        if current_step < start:
            raise CaloforgeError(
                f"stage {stage} starts at step {start} but the run is at step {current_step}: "
                f"train --stage {STAGES[index - 1]} first"
                + (" (then --resume)" if current_step == 0 else ""))
        if current_step >= ends[index]:
            raise CaloforgeError(
                f"stage {stage} is already trained (the run is at step {current_step})")
        return ends[index]

    # ---- training ----------------------------------------------------------------------

    def prepare(self, showers: ShowerSet) -> None:
        self.prep.fit_showers(showers, self.config, self.conditioning.energy, self.config.bound)

    def configure_optimizers(self) -> None:
        cfg = self.config
        lrs = {"flow1": cfg.flow1_lr, "teacher": cfg.teacher_lr, "student": cfg.student_lr}
        self.optimizers = {name: torch.optim.Adam(getattr(self, name).parameters(), lr=lrs[name])
                           for name in STAGES}

    def _inputs(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Noise, layer energies and the flows' inputs and contexts for a batch."""
        energy = batch["conditions"][:, 0]
        voxels = self.prep.add_noise(batch["voxels"])
        layers = self.prep.layer_energies(voxels)
        return {"x1": self.prep.layers_to_flow1(layers, energy),
                "c1": self.prep.energy_context(energy),
                "x2": self.prep.voxels_to_flow2(voxels, layers),
                "c2": self.prep.flow2_context(energy, layers)}

    def distillation_loss(self, x: Tensor, context: Tensor, student: nn.Module | None = None,
                          noise: Tensor | None = None) -> dict[str, Tensor]:
        """The student's six MSE terms and their sum (``"loss"``).

        Args:
            x: ``(B, n_voxels)`` Flow II inputs (preprocessed training showers).
            context: ``(B, 1 + L)`` Flow II context.
            student: the student as training calls it (default ``self.student``).
            noise: ``(B, n_voxels)`` latent-side noise (default: a fresh draw).
        """
        student = self.student if student is None else student
        n = x.shape[0]
        with torch.no_grad():
            z_data, _, inter_x, par_x = self.teacher.trace(x, context)
        z_noise = torch.randn_like(x) if noise is None else noise
        out, inter_s, par_s = student(torch.cat([z_data, z_noise]), torch.cat([context, context]))
        x_student, x_sample = out[:n], out[n:]
        # the teacher is frozen (no parameter gradients) but passes gradients to its input
        z_back, _, inter_z, par_z = self.teacher.trace(x_sample, context)
        terms = {
            "mse_z": F.mse_loss(z_back, z_noise),
            "mse_x": F.mse_loss(x_student, x),
            "mse_z_i": _mean_mse([a[n:] for a in inter_s], inter_z),
            "mse_x_i": _mean_mse([a[:n] for a in inter_s], inter_x),
            "mse_p_z": _mean_mse([p[n:] for p in par_s], par_z),
            "mse_p_x": _mean_mse([p[:n] for p in par_s], par_x),
        }
        terms["loss"] = sum(terms.values())
        return terms

    def _set_lr(self, stage: str, step: int) -> None:
        cfg = self.config
        start = ([0, *cfg.stage_ends()])[STAGES.index(stage)]
        length = getattr(cfg, f"{stage}_steps")
        frac = min(max((step - start - 1) / max(length - 1, 1), 0.0), 1.0)
        factor = cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * frac))
        for group in self.optimizers[stage].param_groups:
            group["lr"] = group.setdefault("base_lr", group["lr"]) * factor

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, float]:
        stage = self.stage_at(step)
        for name in STAGES:
            getattr(self, name).requires_grad_(name == stage)
        with torch.no_grad():
            inputs = self._inputs(batch)
        self._set_lr(stage, step)
        opt = self.optimizers[stage]
        opt.zero_grad(set_to_none=True)
        module = self.module(stage)
        if stage == "flow1":
            loss = -module(inputs["x1"], inputs["c1"]).mean()
            metrics = {"flow1_nll": loss}
        elif stage == "teacher":
            loss = -module(inputs["x2"], inputs["c2"]).mean()
            metrics = {"teacher_nll_per_voxel": loss / self.prep.n_voxels}
        else:
            metrics = self.distillation_loss(inputs["x2"], inputs["c2"], module)
            loss = metrics.pop("loss")
            metrics["distill_loss"] = loss
        loss.backward()
        params = list(getattr(self, stage).parameters())
        metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        opt.step()
        getattr(self, stage).apply_masks()
        self.stage_steps[STAGES.index(stage)] += 1
        return {k: float(v.detach()) for k, v in metrics.items()}

    # ---- sampling ----------------------------------------------------------------------

    def latent_shape(self) -> tuple[int, ...]:
        return (self.prep.n_layers + self.prep.n_voxels,)

    def decode(self, latent: Tensor, conditions: Tensor) -> Tensor:
        """Showers ``(N, n_voxels)`` MeV from ``latent`` ``(N, L + n_voxels)`` (standard
        normal) and ``conditions`` ``(N, 1)`` (incident energy, MeV), through Flow I and the
        Flow II named by ``self.sampler``."""
        # on a CPU, pieces that fit in the cache run several times faster per shower
        # (measured on 2 threads, e+ student: 0.25 ms at 256-500, 0.87 ms in one pass of
        # 10000; teacher 121 ms at 100, 160 ms at 1000)
        pieces = self.decode_in_pieces(latent, conditions, _CPU_CHUNK)
        if pieces is not None:
            return pieces
        n_layers = self.prep.n_layers
        energy = conditions[:, 0]
        x1 = self.flow1.inverse(latent[:, :n_layers], self.prep.energy_context(energy))
        layers = self.prep.flow1_to_layers(x1, energy)
        context = self.prep.flow2_context(energy, layers.clamp_min(1e-6))
        z2 = latent[:, n_layers:]
        if self.sampler == "teacher":
            x2 = self.teacher.inverse(z2, context)
        else:
            x2 = self.student.sample(z2, context)
        return self.prep.flow2_to_voxels(x2, layers)


def _mean_mse(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """Mean of the per-pair MSEs (zero for empty lists: a single-block flow has no
    intermediate results)."""
    if not a:
        return torch.zeros((), device=b[0].device if b else None)
    return sum(F.mse_loss(u, v) for u, v in zip(a, b, strict=True)) / len(a)
