"""``--stage``: the ``max_steps`` that trains a run to the end of one of its model's stages.

The stages themselves (names, where each ends) belong to the family
(:attr:`~caloforge.models.base.GenerativeModel.stages`,
:meth:`~caloforge.models.base.GenerativeModel.stage_end`); this module only finds the run's
config and step.
"""

from __future__ import annotations

from pathlib import Path

from caloforge.models import get_model_class
from caloforge.train.checkpoint import load_checkpoint

__all__ = ["stage_max_steps"]


def stage_max_steps(family: str, stage: str, rundir: str | Path, model_section: dict | None,
                    resume: bool) -> int:
    """The ``max_steps`` that trains a run up to the end of ``stage``.

    Args:
        family: the model family.
        stage: one of the family's stages, or ``"all"``.
        rundir: the run directory (read when resuming).
        model_section: the run config's model settings (fresh runs).
        resume: whether the run is resumed.

    Raises:
        CaloforgeError: for a family without stages, an unknown stage, a stage whose
            predecessors are not trained, or a stage that is already trained.
    """
    cls = get_model_class(family)
    if resume:
        ckpt = load_checkpoint(rundir)
        config = cls.Config.from_dict(ckpt["model_config"])
        current = int(ckpt["step"])
    else:
        config = cls.Config.from_dict(model_section or {}, where="model")
        current = 0
    return cls.stage_end(config, stage, current)
