"""The interface every generative model implements, and the pieces it is built from.

A model family is an :class:`torch.nn.Module` subclass of :class:`GenerativeModel`,
registered under a name with :func:`caloforge.models.register_model`. It is built from
``(geometry, config, conditioning)`` and knows the calorimeter only through the geometry.
The training loop (:mod:`caloforge.train`) owns data order, devices, logging, checkpoints
and random states; the model owns its networks, its preprocessing, its optimisers and what
one training step means (a GAN with several critic updates, a flow trained in stages).

Units at the interface are physical: conditions ``(N, n_conditions)`` are the incident
energy in MeV and, where the geometry has one, the polar angle in degrees; voxels are MeV.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from caloforge.config import Config
from caloforge.data.showers import ShowerSet
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.units import mev_to_gev

__all__ = ["ModelConfig", "Conditioning", "GenerativeModel"]


@dataclass(frozen=True)
class ModelConfig(Config):
    """Base of model configurations (each family subclasses it)."""


@dataclass(frozen=True)
class Conditioning:
    """The range of conditions a model was trained on.

    Attributes:
        names: condition names in the geometry's order (``"energy"``, ``"angle"``).
        energy: ``(min, max)`` incident energy in MeV seen in training.
        angle: ``(min, max)`` polar angle in degrees, or ``None``.
        tolerance: fraction by which a request may exceed a trained range (sampling noise
            means a uniform 1-100 GeV training set spans 1.0004-99.998): of each edge for
            the energy, which spans decades (1-100 GeV: 0.99-101 GeV), of the range's
            width for the angle.
    """

    names: tuple[str, ...] = ("energy",)
    energy: tuple[float, float] = (1e3, 1e5)
    angle: tuple[float, float] | None = None
    tolerance: float = 0.01

    @classmethod
    def from_showers(cls, showers: ShowerSet) -> Conditioning:
        names = tuple(showers.geometry.conditions)
        e = showers.incident_energy
        angle = None
        if "angle" in names and showers.angle is not None:
            angle = (float(showers.angle.min()), float(showers.angle.max()))
        return cls(names=names, energy=(float(e.min()), float(e.max())), angle=angle)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "energy": list(self.energy),
                "angle": None if self.angle is None else list(self.angle),
                "tolerance": self.tolerance}

    @classmethod
    def from_dict(cls, d: Mapping) -> Conditioning:
        return cls(names=tuple(d["names"]), energy=tuple(float(x) for x in d["energy"]),
                   angle=None if d.get("angle") is None else tuple(float(x) for x in d["angle"]),
                   tolerance=float(d.get("tolerance", 0.01)))

    def _bounds(self, lo: float, hi: float) -> tuple[float, float]:
        slack = self.tolerance * (hi - lo)
        return lo - slack, hi + slack

    def _energy_bounds(self) -> tuple[float, float]:
        lo, hi = self.energy
        return lo * (1.0 - self.tolerance), hi * (1.0 + self.tolerance)

    def check_energy(self, lo_mev: float, hi_mev: float) -> None:
        """Raise a :class:`CaloforgeError` if ``[lo, hi]`` MeV leaves the trained range.

        Raises:
            CaloforgeError: the range leaves the trained one (beyond the tolerance).
        """
        a, b = self._energy_bounds()
        if lo_mev < a or hi_mev > b:
            raise CaloforgeError(
                f"energy {mev_to_gev(lo_mev):g}:{mev_to_gev(hi_mev):g} GeV is outside the trained "
                f"range {mev_to_gev(self.energy[0]):.4g}:{mev_to_gev(self.energy[1]):.4g} GeV; "
                "the model cannot "
                "extrapolate reliably, ask for energies inside it"
            )

    def check_angle(self, lo_deg: float, hi_deg: float) -> None:
        """Check that ``[lo, hi]`` degrees lies in the trained angle range.

        Raises:
            CaloforgeError: the model has no angle condition, or the range leaves the
                trained one (beyond the tolerance).
        """
        if self.angle is None:
            raise CaloforgeError("this model was trained without an angle condition")
        a, b = self._bounds(*self.angle)
        if lo_deg < a or hi_deg > b:
            raise CaloforgeError(
                f"angle {lo_deg:g}:{hi_deg:g} deg is outside the trained range "
                f"{self.angle[0]:.4g}:{self.angle[1]:.4g} deg"
            )

    def check(self, conditions: np.ndarray | Tensor) -> None:
        """Check a ``(N, n_conditions)`` array of conditions (MeV, degrees).

        Raises:
            CaloforgeError: a wrong shape, non-finite values, or values outside the trained
                range.
        """
        c = conditions.detach().cpu().numpy() if isinstance(conditions, Tensor) else conditions
        c = np.asarray(c)
        if c.ndim != 2 or c.shape[1] != len(self.names):
            raise CaloforgeError(
                f"conditions must have shape (N, {len(self.names)}) for {self.names}, "
                f"got {c.shape}"
            )
        if not np.all(np.isfinite(c)):
            raise CaloforgeError("conditions contain NaN or infinite values")
        for i, name in enumerate(self.names):
            if name == "energy":
                self.check_energy(float(c[:, i].min()), float(c[:, i].max()))
            elif name == "angle":
                self.check_angle(float(c[:, i].min()), float(c[:, i].max()))


class GenerativeModel(nn.Module):
    """Base class of every model family.

    Subclasses set ``Config`` (a frozen :class:`ModelConfig` subclass) and implement
    :meth:`configure_optimizers`, :meth:`training_step` and either :meth:`sample` or the
    pair :meth:`latent_shape` / :meth:`decode`.

    Args:
        geometry: the calorimeter readout.
        config: the family's config (``Config`` instance).
        conditioning: the conditioning range of the training data.

    Attributes:
        family: registry name, set by :func:`caloforge.models.register_model`.
        optimizers: name -> optimiser, filled by :meth:`configure_optimizers`; the loop
            saves and restores them by name.
        train_modules: name -> module used for gradient steps. The loop may replace the
            values by wrapped modules (``DistributedDataParallel``) through
            :meth:`wrap_modules`; training code calls ``self.train_modules[name]`` and
            everything else uses the plain submodules.

    Raises:
        CaloforgeError: the geometry's conditions are not among ``condition_sets``, or
            ``config`` is not the family's ``Config``.
    """

    family: ClassVar[str] = ""
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    #: submodules that take gradient steps (wrapped for DDP by the loop)
    wrapped_names: ClassVar[tuple[str, ...]] = ()
    #: wrapped submodules that ``--compile`` leaves uncompiled (e.g. a critic whose
    #: gradient penalty needs a double backward, which compiled graphs do not support)
    uncompiled_names: ClassVar[tuple[str, ...]] = ()
    #: the condition sets (geometry.conditions) the family can be built for
    condition_sets: ClassVar[tuple[tuple[str, ...], ...]] = (("energy",),)
    # ---- capabilities: what generic code (generate, bench, export, train, the CLI) asks

    #: autocast precisions the family trains in; add ``"fp16"`` only when training_step
    #: routes every backward/step through ``self.scaler`` (a :class:`torch.amp.GradScaler`
    #: the loop sets for ``--precision fp16``, else None):
    #: ``self.scaler.scale(loss).backward(); self.scaler.step(opt); self.scaler.update()``
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "bf16")
    #: names of the family's samplers, the default first (empty: one unnamed sampler);
    #: :meth:`use_sampler` selects one, :attr:`sampler` is the one in use
    samplers: ClassVar[tuple[str, ...]] = ()
    #: sub-modules a pretrained copy may leave out to fit the size limit (a distilled
    #: flow's teacher): :func:`caloforge.pretrained.save_pretrained` drops them on request,
    #: the loader accepts their absence and records it in :attr:`dropped_modules`
    optional_modules: ClassVar[tuple[str, ...]] = ()
    dropped_modules: tuple[str, ...] = ()
    #: training stages in order (empty: one stage); :meth:`stage_end` maps a stage to
    #: the ``max_steps`` that trains a run to its end
    stages: ClassVar[tuple[str, ...]] = ()
    #: training metrics the progress bar shows (the log keeps every metric)
    progress_metrics: ClassVar[tuple[str, ...]] = ("loss",)
    scaler: Any = None

    @classmethod
    def tiny_config(cls) -> ModelConfig:
        """A config small enough for the contract tests (a few ms per step); override it."""
        return cls.Config()

    def __init__(self, geometry: Geometry, config: ModelConfig, conditioning: Conditioning):
        super().__init__()
        if tuple(geometry.conditions) not in self.condition_sets:
            raise CaloforgeError(
                f"model {self.family!r} cannot condition on {geometry.conditions}; it "
                f"supports {self.condition_sets}"
            )
        if not isinstance(config, self.Config):
            raise CaloforgeError(
                f"{type(self).__name__} needs a {self.Config.__name__}, "
                f"got {type(config).__name__}"
            )
        self.geometry = geometry
        self.config = config
        self.conditioning = conditioning
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.train_modules: dict[str, nn.Module] = {}
        self.run_info: dict[str, Any] = {}
        self.sampler: str | None = self.samplers[0] if self.samplers else None

    # ---- capabilities ------------------------------------------------------------------

    def use_sampler(self, name: str | None = None) -> None:
        """Make :meth:`decode` use sampler ``name`` (``None``: the default, the first of
        :attr:`samplers`), after checking it can be used (:meth:`check_sampler`).

        Raises:
            CaloforgeError: a name the family does not have (the message lists the valid
                ones), a name given to a family with a single sampler, or a sampler that
                cannot be used yet (e.g. not trained).
        """
        if not self.samplers:
            if name is not None:
                raise CaloforgeError(
                    f"model {self.family!r} has a single sampler; --sampler {name} does not "
                    "apply to it")
            return
        name = self.samplers[0] if name is None else name
        if name not in self.samplers:
            raise CaloforgeError(f"model {self.family!r} has no sampler {name!r}; choose "
                                 f"{', '.join(self.samplers)}")
        self.check_sampler(name)
        self.sampler = name

    def check_sampler(self, name: str) -> None:
        """Raise a :class:`CaloforgeError` saying what to do if sampler ``name`` cannot be
        used yet (for example because its network has not been trained). Default: any.

        Raises:
            CaloforgeError: the sampler cannot be used.
        """

    def export_problem(self) -> str | None:
        """Why the model, with the sampler in use, cannot be exported to ONNX as a decoder
        (one sentence saying what to do instead), or ``None`` if it can."""
        if self.latent_shape() is None:
            return (f"model {self.family!r} has no explicit latent input and cannot be "
                    "exported as a decoder")
        return None

    @classmethod
    def stage_end(cls, config: ModelConfig, stage: str, current_step: int) -> int:
        """The ``max_steps`` that trains a run now at ``current_step`` to the end of
        ``stage`` (one of :attr:`stages`, or ``"all"``); families trained in stages
        override it.

        Raises:
            CaloforgeError: the family trains in one stage, the stage is unknown, its
                predecessors are not trained, or it is already trained.
        """
        raise CaloforgeError(f"--stage applies to models trained in stages, not "
                             f"{cls.family!r}")

    # ---- building and training -------------------------------------------------------

    @property
    def n_conditions(self) -> int:
        return len(self.geometry.conditions)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def prepare(self, showers: ShowerSet) -> None:
        """Learn data statistics (normalisations) from the training showers, once, before
        the first step; store them in buffers so checkpoints carry them. Default: nothing."""

    def configure_optimizers(self) -> None:
        """Create the optimisers into ``self.optimizers`` (called after ``.to(device)``).

        Raises:
            NotImplementedError: in the base class; every family implements it.
        """
        raise NotImplementedError

    def wrap_modules(self, wrap: Callable[[nn.Module, bool], nn.Module]) -> None:
        """Let the loop wrap the gradient-taking submodules (e.g. in DDP), in one place;
        ``wrap(module, compilable)``."""
        self.train_modules = {name: wrap(getattr(self, name), name not in self.uncompiled_names)
                              for name in self.wrapped_names}

    def module(self, name: str) -> nn.Module:
        """The submodule ``name`` as training should call it (wrapped if the loop wrapped)."""
        if name in self.train_modules:
            return self.train_modules[name]
        return getattr(self, name)

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, float]:
        """One training step, optimiser updates included.

        Args:
            batch: ``voxels`` ``(B, n_voxels)`` MeV and ``conditions`` ``(B, n_conditions)``
                (energy MeV, angle degrees), on the model's device.
            step: 1-based step number.

        Returns:
            Scalar metrics (losses) for logging.

        Raises:
            NotImplementedError: in the base class; every family implements it.
        """
        raise NotImplementedError

    def optimizer_state_dict(self) -> dict[str, dict]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_optimizer_state_dict(self, state: Mapping[str, dict]) -> None:
        """Restore the optimisers from :meth:`optimizer_state_dict`'s output.

        Raises:
            CaloforgeError: the checkpoint's optimisers are not the model's.
        """
        missing = set(self.optimizers) ^ set(state)
        if missing:
            raise CaloforgeError(f"checkpoint optimisers {sorted(state)} do not match the "
                                 f"model's {sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])

    # ---- sampling --------------------------------------------------------------------

    def latent_shape(self) -> tuple[int, ...] | None:
        """Shape of one latent vector, or ``None`` if the model has no explicit latent."""
        return None

    def draw_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(n, *latent_shape)`` standard normal latent vectors on the model's device.

        Raises:
            CaloforgeError: the model has no latent space.
        """
        shape = self.latent_shape()
        if shape is None:
            raise CaloforgeError(f"model {self.family!r} has no latent space")
        return torch.randn((n, *shape), generator=generator, device=self.device)

    def decode(self, latent: Tensor, conditions: Tensor) -> Tensor:
        """Showers ``(N, n_voxels)`` in MeV from latent vectors and conditions.

        Raises:
            NotImplementedError: in the base class, for families that override :meth:`sample`.
        """
        raise NotImplementedError

    def decode_in_pieces(self, latent: Tensor, conditions: Tensor, piece: int,
                         decode: Callable[[Tensor, Tensor], Tensor] | None = None
                         ) -> Tensor | None:
        """:meth:`decode` (or ``decode``, any function of two tensors whose rows belong to
        one shower each) in pieces of ``piece`` showers, for CPU inference on large
        batches, where pieces that fit in the cache run faster and bound the memory of the
        activations. ``None`` when one pass is
        wanted: training, other devices, batches of at most ``piece`` showers, and while
        exporting (an ONNX graph has a symbolic batch size). Showers are independent in
        inference (batch norm on running statistics)."""
        n = latent.shape[0]  # not len(): that fixes the batch size in an exported graph
        if (self.training or latent.device.type != "cpu" or torch.compiler.is_exporting()
                or n <= piece):
            return None
        decode = decode or self.decode
        return torch.cat([decode(latent[i:i + piece], conditions[i:i + piece])
                          for i in range(0, n, piece)])

    def decode_sample(self, latent: Tensor, conditions: Tensor,
                      generator: torch.Generator | None) -> Tensor:
        """What :meth:`sample` makes of its drawn latent: :meth:`decode` here; a family
        whose sampling draws more noise than the latent (``generator``) overrides this."""
        return self.decode(latent, conditions)

    @torch.no_grad()
    def sample(self, conditions: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw one shower per row of ``conditions``, in inference mode (batch norm on
        running statistics) whatever mode the model is in; a family that overrides this
        must do the same.

        Args:
            conditions: ``(N, n_conditions)`` energy in MeV (and angle in degrees).
            generator: a :class:`torch.Generator` on the model's device for reproducible
                samples, or ``None`` for the global random state.

        Returns:
            ``(N, n_voxels)`` non-negative deposits in MeV.
        """
        was_training = self.training
        self.eval()
        try:
            latent = self.draw_latent(len(conditions), generator)
            return self.decode_sample(latent, conditions.to(latent.device, torch.float32),
                                      generator)
        finally:
            self.train(was_training)

    def export_notes(self) -> list[str]:
        """How the exported graph (:meth:`decode`) differs from :meth:`sample`, one sentence
        each; the ONNX contract lists them (none by default)."""
        return []

    def extra_repr(self) -> str:
        return f"family={self.family!r}, geometry={self.geometry.name!r}"
