"""The contract every registered model family keeps, checked on a tiny geometry.

New families are picked up automatically: the parameters come from
``caloforge.models.available_models()`` and each family's ``tiny_config()`` and
``condition_sets``.
"""

import math

import numpy as np
import pytest
import torch

from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry, Layer
from caloforge.models import (
    Conditioning,
    GenerativeModel,
    available_models,
    build_model,
    get_model_class,
    register_model,
)
from caloforge.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from caloforge.train.config import TrainConfig

torch.set_num_threads(1)


def tiny_geometry(conditions: tuple[str, ...]) -> Geometry:
    return Geometry(
        name="tiny-" + "-".join(conditions),
        layers=(Layer("front", (2, 6), (10.0, 5.0), (0.0, 10.0)),
                Layer("middle", (3, 3), (10.0, 10.0), (10.0, 40.0)),
                Layer("back", (3, 2), (10.0, 15.0), (40.0, 50.0))),
        conditions=conditions,
        angle_range=(60.0, 120.0) if "angle" in conditions else None,
    )


def conditioning_for(geometry: Geometry) -> Conditioning:
    angle = (60.0, 120.0) if "angle" in geometry.conditions else None
    return Conditioning(names=geometry.conditions, energy=(1e3, 1e5), angle=angle)


def fake_batch(geometry: Geometry, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    energy = 1e3 + 99e3 * torch.rand(n, 1, generator=g)
    mask = torch.rand(n, geometry.n_voxels, generator=g) < 0.5
    voxels = torch.rand(n, geometry.n_voxels, generator=g) * mask * energy / 20
    cols = [energy]
    if "angle" in geometry.conditions:
        cols.append(60 + 60 * torch.rand(n, 1, generator=g))
    return {"voxels": voxels, "conditions": torch.cat(cols, dim=1)}


CASES = [pytest.param(name, conds, id=f"{name}-{'+'.join(conds)}")
         for name in available_models()
         for conds in get_model_class(name).condition_sets]


def build(name: str, conditions: tuple[str, ...]) -> GenerativeModel:
    torch.manual_seed(0)
    geometry = tiny_geometry(conditions)
    cls = get_model_class(name)
    model = build_model(name, geometry, cls.tiny_config(), conditioning_for(geometry))
    model.configure_optimizers()
    return model


def test_calogan_is_registered():
    assert "calogan" in available_models()


@pytest.mark.parametrize(("name", "conditions"), CASES)
def test_build_and_sample(name, conditions):
    model = build(name, conditions)
    assert model.family == name
    assert sum(p.numel() for p in model.parameters()) > 0
    batch = fake_batch(model.geometry, 6)
    out = model.sample(batch["conditions"], generator=torch.Generator().manual_seed(1))
    assert out.shape == (6, model.geometry.n_voxels)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert (out >= 0).all()


@pytest.mark.parametrize(("name", "conditions"), CASES)
def test_training_step_is_finite_and_updates(name, conditions):
    model = build(name, conditions)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = model.training_step(fake_batch(model.geometry, 8), step=1)
    assert metrics and all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "a training step must change some weights"
    assert model.optimizers, "configure_optimizers must fill model.optimizers"


@pytest.mark.parametrize(("name", "conditions"), CASES)
def test_checkpoint_round_trip_gives_identical_samples(name, conditions, tmp_path):
    model = build(name, conditions)
    model.training_step(fake_batch(model.geometry, 8), step=1)
    save_checkpoint(tmp_path, model, TrainConfig(), 1, particle="test")
    loaded = model_from_checkpoint(load_checkpoint(tmp_path))
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    assert loaded.conditioning == model.conditioning
    assert loaded.geometry.to_dict() == model.geometry.to_dict()
    cond = fake_batch(model.geometry, 5, seed=3)["conditions"]
    a = model.sample(cond, generator=torch.Generator().manual_seed(7))
    b = loaded.sample(cond, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    c = loaded.sample(cond, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(a, c), "different seeds must give different showers"
    # optimiser states survive too
    loaded.configure_optimizers()
    loaded.load_optimizer_state_dict(load_checkpoint(tmp_path)["optimizer_state"])
    for key, opt in model.optimizers.items():
        sa, sb = opt.state_dict()["state"], loaded.optimizers[key].state_dict()["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            for k, v in sa[i].items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[i][k]))


@pytest.mark.parametrize(("name", "conditions"), CASES)
def test_config_round_trips_through_dict(name, conditions):
    cls = get_model_class(name)
    config = cls.tiny_config()
    assert cls.Config.from_dict(config.to_dict()) == config


def test_unknown_model_lists_available():
    with pytest.raises(CaloforgeError, match="available models: .*calogan"):
        get_model_class("nope")


def test_register_model_refuses_duplicates_and_non_models():
    with pytest.raises(ValueError, match="already registered"):
        @register_model("calogan")
        class Other(GenerativeModel):
            pass
    with pytest.raises(TypeError):
        register_model("thing")(object)


def test_model_refuses_unsupported_conditions():
    geometry = tiny_geometry(("energy", "charge"))
    with pytest.raises(CaloforgeError, match="cannot condition"):
        build_model("calogan", geometry, get_model_class("calogan").tiny_config(),
                    Conditioning(names=("energy", "charge")))


def test_conditioning_range_check():
    c = Conditioning(energy=(1e3, 1e5))
    c.check(np.array([[1e3], [1e5]]))
    c.check(np.array([[0.995e3], [1.005e5]]))  # within 1% of each edge
    # energies span decades: 1% of the width (1 GeV) would let 0.5 GeV through a 1-100 GeV
    # model; the tolerance is relative to each edge
    for outside in (0.5e3, 0.98e3, 1.02e5, 2e5):
        with pytest.raises(CaloforgeError, match="outside the trained range"):
            c.check(np.array([[outside]]))
    # angles keep the tolerance of the range's width (60-120 degrees: 59.4-120.6)
    a = Conditioning(names=("energy", "angle"), energy=(1e5, 2e5), angle=(60.9, 119.7))
    a.check(np.array([[1.5e5, 60.5], [1.5e5, 120.2]]))
    with pytest.raises(CaloforgeError, match="outside the trained range"):
        a.check(np.array([[1.5e5, 59.0]]))
    with pytest.raises(CaloforgeError, match="shape"):
        c.check(np.ones((3, 2)))
    assert Conditioning.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(("name", "conditions"), CASES)
def test_capabilities_are_declared_and_kept(name, conditions):
    """What generic code asks a family: samplers, stages, progress metrics, precisions."""
    from caloforge.train.distributed import PRECISIONS

    model = build(name, conditions)
    cls = type(model)
    assert "fp32" in cls.precisions and set(cls.precisions) <= set(PRECISIONS)
    # the progress bar shows metrics the family's training step really returns
    steps = max(1, len(cls.stages)) * 2
    seen: set[str] = set()
    for step in range(1, steps + 1):
        seen |= set(model.training_step(fake_batch(model.geometry, 6, seed=step), step))
    assert set(model.progress_metrics) <= seen, (model.progress_metrics, seen)
    # samplers: the default is the first; an unknown name lists the valid ones
    assert model.sampler == (cls.samplers[0] if cls.samplers else None)
    with pytest.raises(CaloforgeError, match="apprentice"):
        model.use_sampler("apprentice")
    model.use_sampler(None)
    # stages: a family with stages maps each to a step; one without refuses --stage
    config = cls.tiny_config()
    if cls.stages:
        first_end = cls.stage_end(config, cls.stages[0], 0)
        assert 1 <= first_end <= cls.stage_end(config, "all", 0)
        with pytest.raises(CaloforgeError, match="unknown stage"):
            cls.stage_end(config, "nonsense", 0)
    else:
        with pytest.raises(CaloforgeError, match="--stage applies to models trained in"):
            cls.stage_end(config, "all", 0)
    assert model.export_problem() is None or isinstance(model.export_problem(), str)
