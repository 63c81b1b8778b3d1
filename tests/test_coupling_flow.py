"""The coupling-block flow: splines, coupling blocks, every geometry, resume and the CLI.

Build, sampling shape, checkpoint round trip and ONNX parity are also checked for this
family by the contract tests that walk over every registered model
(``test_models_contract.py``, ``test_export_bench.py``).
"""

import json
import math
import warnings

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import run_cli

from caloforge.data import ShowerSet, read_showers, write_showers
from caloforge.errors import CaloforgeError
from caloforge.geometry import get_geometry
from caloforge.models import Conditioning, build_model, get_model_class
from caloforge.models._coupling import (
    CouplingBlock,
    CouplingStack,
    coupling_macs,
    spline_forward,
    spline_inverse,
)
from caloforge.models._flowprep import compress_tails, expand_tails
from caloforge.models.caloflow import CaloFlowConfig
from caloforge.models.coupling_flow import CouplingFlow, CouplingFlowConfig
from caloforge.train.checkpoint import load_checkpoint

torch.set_num_threads(1)
TINY = CouplingFlow.tiny_config()


# ---- splines and blocks ----------------------------------------------------------------


def random_params(batch: int, bins: int, features: int, scale: float = 2.0,
                  seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch, 3 * bins - 1, features, generator=g, dtype=torch.float64)


def test_spline_inverse_and_log_det_match_autograd():
    bins, bound = 6, 3.0
    params = random_params(40, bins, 5)
    x = torch.linspace(-4.0, 4.0, 200, dtype=torch.float64).reshape(40, 5).requires_grad_()
    y, ladj = spline_forward(x, params, bins, bound)
    # elementwise map: the derivative of sum(y) with respect to x is dy/dx
    (grad,) = torch.autograd.grad(y.sum(), x)
    np.testing.assert_allclose(ladj.detach().numpy(), torch.log(grad).numpy(), atol=1e-8)
    back = spline_inverse(y.detach(), params, bins, bound)
    np.testing.assert_allclose(back.numpy(), x.detach().numpy(), atol=1e-9)
    # identity outside [-bound, bound]; monotonic and onto [-bound, bound] inside
    outside = x.detach().abs() >= bound
    assert torch.equal(y.detach()[outside], x.detach()[outside])
    assert (ladj.detach()[outside] == 0).all()
    inside = y.detach()[~outside]
    assert inside.abs().max() < bound


def test_spline_inverse_hits_every_bin_including_the_end_bins():
    # y spread over the whole interval, so every bin (the first and last ones, whose
    # outer derivative is the fixed 1 of the identity tails, included) is inverted
    bins, bound = 8, 6.0
    params = random_params(400, bins, 7, scale=3.0, seed=1)
    g = torch.Generator().manual_seed(2)
    y = (2 * torch.rand(400, 7, generator=g, dtype=torch.float64) - 1) * bound
    x = spline_inverse(y, params, bins, bound)
    np.testing.assert_allclose(spline_forward(x, params, bins, bound)[0].numpy(), y.numpy(),
                               atol=1e-9)
    knots = torch.cumsum(torch.exp(params[:, bins:2 * bins].clamp(-5, 5)), dim=1)
    k = ((y + bound) / (2 * bound) * knots[:, -1] >= knots[:, :bins - 1].transpose(0, 1)
         ).sum(0)
    assert set(k.flatten().tolist()) == set(range(bins))


def test_zero_spline_parameters_are_the_identity():
    x = torch.linspace(-5.0, 5.0, 60).reshape(6, 10)
    y, ladj = spline_forward(x, torch.zeros(6, 3 * 4 - 1, 10), 4, 4.0)
    np.testing.assert_allclose(y.numpy(), x.numpy(), atol=1e-6)
    np.testing.assert_allclose(ladj.numpy(), 0.0, atol=1e-6)


def test_coupling_block_computes_parameters_for_the_transformed_half_only():
    block = CouplingBlock(features=10, context=3, hidden=16, layers=2, bins=5,
                          bound=4.0).double()
    assert block.net[-1].out_features == (3 * 5 - 1) * 5  # n_b = 5 features, 14 params
    for p in block.parameters():
        p.data.normal_(0.0, 0.3)
    x = torch.randn(7, 10, dtype=torch.float64, requires_grad=True)
    c = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    y, ladj = block(x, c)
    assert torch.equal(y[:, :5], x[:, :5])  # the conditioning half passes unchanged
    # the transformed half depends on the conditioning half and the context
    gx, gc = torch.autograd.grad(y[:, 5:].sum(), (x, c))
    assert gx[:, :5].abs().sum() > 0 and gc.abs().sum() > 0
    back = block.inverse(y.detach(), c.detach())
    np.testing.assert_allclose(back.detach().numpy(), x.detach().numpy(), atol=1e-9)


def test_coupling_stack_round_trips_and_its_density_normalises():
    torch.manual_seed(0)
    flow = CouplingStack(features=2, context=1, hidden=16, layers=2, bins=6, bound=3.0,
                         blocks=3, seed=1).double()
    for p in flow.parameters():
        p.data.normal_(0.0, 0.2)  # a smooth density the grid below resolves
    x = torch.randn(50, 2, dtype=torch.float64) * 2
    c = torch.rand(50, 1, dtype=torch.float64)
    z, _ = flow.transform(x, c)
    np.testing.assert_allclose(flow.inverse(z, c).detach().numpy(), x.numpy(), atol=1e-8)
    # integrate p(x | c) over a grid: one for every context
    side = torch.linspace(-9.0, 9.0, 481, dtype=torch.float64)
    grid = torch.cartesian_prod(side, side)
    step = float(side[1] - side[0])
    with torch.no_grad():
        for value in (0.1, 0.9):
            density = flow(grid, torch.full((len(grid), 1), value, dtype=torch.float64)).exp()
            assert abs(float(density.sum()) * step * step - 1.0) < 1e-3
            # the context matters (inside the splines' interval)
            centre = slice(len(grid) // 2, len(grid) // 2 + 5)
            other = flow(grid[centre], torch.full((5, 1), 1 - value, dtype=torch.float64))
            assert not torch.allclose(other, density[centre].log())


def test_permutations_are_a_checkpointed_bijection():
    flow = CouplingStack(features=9, context=1, hidden=4, layers=1, bins=3, bound=3.0,
                         blocks=3, seed=5)
    state = flow.state_dict()
    for k in range(3):
        gather, scatter = state[f"gather{k}"], state[f"scatter{k}"]
        assert torch.equal(torch.sort(gather).values, torch.arange(9))
        assert torch.equal(gather[scatter], torch.arange(9))
    other = CouplingStack(features=9, context=1, hidden=4, layers=1, bins=3, bound=3.0,
                          blocks=3, seed=6)
    assert not torch.equal(other.gather0, flow.gather0)


def test_alternating_splits_transform_every_feature_in_half_the_blocks():
    """Independent random splits leave features untransformed (the shipped 6-block calogan
    flows: 12 of 504 voxels kept their base distribution); alternating splits give every
    feature one transform per pair of blocks (one feature two when the count is odd), and
    stay a bijection."""
    def stack(features, blocks, alternating, seed=0):
        return CouplingStack(features=features, context=1, hidden=4, layers=1, bins=3,
                             bound=3.0, blocks=blocks, seed=seed, alternating=alternating)

    # random splits: as drawn before the setting existed (one randperm per block)
    old = stack(504, 6, False)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(old.gather0, torch.randperm(504, generator=gen))
    assert (old.coverage() == 0).sum() == 12
    for features, blocks in ((504, 6), (504, 8), (89, 8), (9, 3)):
        count = stack(features, blocks, True).coverage()
        assert count.min() >= blocks // 2, (features, blocks)
        if features % 2 == 0 and blocks % 2 == 0:
            assert (count == blocks // 2).all()
    # a block's conditioning half is the half the block before it transformed
    flow = stack(10, 4, True).double()
    for p in flow.parameters():
        p.data.normal_(0.0, 0.3)
    x, c = torch.randn(20, 10, dtype=torch.float64), torch.rand(20, 1, dtype=torch.float64)
    z, _ = flow.transform(x, c)
    np.testing.assert_allclose(flow.inverse(z, c).detach().numpy(), x.numpy(), atol=1e-8)
    held = torch.arange(10)
    transformed = None
    for k, block in enumerate(flow.blocks):
        held = held[flow._gather(k)]
        if k % 2 == 1:
            assert set(held[:block.n_a].tolist()) == transformed
        transformed = set(held[block.n_a:].tolist())


def test_training_warns_when_random_splits_leave_voxels_untransformed():
    geometry = get_geometry("calogan")
    showers = fake_showers(geometry, 80)
    conditioning = Conditioning.from_showers(showers)
    with pytest.warns(UserWarning, match=r"12 of the 504 voxels are transformed by none of "
                                         r"the 6 blocks' random splits"):
        build_model("coupling-flow", geometry, TINY.replace(blocks=6, permutations="random"),
                    conditioning).prepare(showers)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*transformed by none")
        build_model("coupling-flow", geometry, TINY.replace(blocks=6), conditioning
                    ).prepare(showers)


def test_mflop_count_is_the_network_weights():
    geometry = get_geometry("calogan")
    model = build_model("coupling-flow", geometry, {}, Conditioning())
    weights = sum(m.weight.numel() for m in model.flow2.modules()
                  if isinstance(m, torch.nn.Linear))
    assert coupling_macs(504, 4, 64, 2, 8, 6) == weights
    # Flow I: one pass of its MADE networks per layer energy (3 layers) when sampling
    flow1 = sum(m.weight.numel() for m in model.flow1.modules()
                if isinstance(m, torch.nn.Linear))
    assert model.mflop_by_flow() == pytest.approx({"flow1": 2 * 3 * flow1 / 1e6,
                                                   "flow2": 2 * weights / 1e6})
    assert model.mflop_per_shower() == pytest.approx(2 * (weights + 3 * flow1) / 1e6)
    assert 4.7 < model.mflop_per_shower() < 5.0  # the sizing in the docs


# ---- every geometry with an energy condition ---------------------------------------------


def fake_showers(geometry, n: int, seed: int = 0) -> ShowerSet:
    """Sparse deposits of about 90% of the incident energy, inside the geometry's ranges."""
    rng = np.random.default_rng(seed)
    lo, hi = geometry.energy_range
    energy = rng.uniform(lo, hi, n) * 1e3  # MeV
    share = rng.random((n, geometry.n_voxels)) * (rng.random((n, geometry.n_voxels)) < 0.4)
    voxels = share / np.maximum(share.sum(1, keepdims=True), 1e-9) * 0.9 * energy[:, None]
    angle = None
    if "angle" in geometry.conditions:
        angle = rng.uniform(*geometry.angle_range, n).astype(np.float32)
    return ShowerSet(geometry, voxels.astype(np.float32), energy.astype(np.float32),
                     angle=angle, meta={"particle": "test", "generator": "synthetic"})


@pytest.mark.parametrize("name", ["calogan", "atlas89", "calochallenge_ds1_photons",
                                  "calochallenge_ds1_pions", "clic51"])
def test_builds_trains_and_samples_on_every_geometry(name):
    geometry = get_geometry(name)
    showers = fake_showers(geometry, 24)
    torch.manual_seed(0)
    config = TINY if name != "clic51" else TINY.replace(hidden=4, bins=3, blocks=2)
    model = build_model("coupling-flow", geometry, config, Conditioning.from_showers(showers))
    model.prepare(showers)
    model.configure_optimizers()
    batch = {"voxels": torch.as_tensor(showers.voxels[:12]),
             "conditions": torch.as_tensor(showers.conditions()[:12])}
    for step in (1, 2):
        metrics = model.training_step(batch, step)
        assert all(math.isfinite(v) for v in metrics.values())
    log_prob = model.log_prob(batch["voxels"], batch["conditions"])
    assert log_prob.shape == (12,) and torch.isfinite(log_prob).all()
    out = model.sample(batch["conditions"][:5], generator=torch.Generator().manual_seed(0))
    assert out.shape == (5, geometry.n_voxels)
    assert torch.isfinite(out).all() and (out >= 0).all()
    # the sampling threshold: nothing left between zero and threshold_mev
    assert not ((out > 0) & (out < config.threshold_mev)).any()


@pytest.mark.parametrize("bad", [{"bins": 1}, {"bound": 0.0}, {"noise_mev": 0.0},
                                 {"threshold_mev": -1.0}, {"alpha": 0.7},
                                 {"prepare_showers": 0}, {"tail_knee": -1.0}])
def test_both_flow_families_share_the_preprocessing_checks(bad):
    key = next(iter(bad))
    for config, family in ((CouplingFlowConfig, "coupling-flow"), (CaloFlowConfig, "caloflow")):
        with pytest.raises(CaloforgeError, match=rf"^{family} .*{key}"):
            config(**bad)
        with pytest.raises(CaloforgeError, match=key):
            config.from_dict(bad)


def test_config_checks():
    with pytest.raises(CaloforgeError, match="blocks"):
        CouplingFlowConfig(blocks=0)
    with pytest.raises(CaloforgeError, match="bins"):
        CouplingFlowConfig(bins=1)
    with pytest.raises(CaloforgeError, match="alpha"):
        CouplingFlowConfig(alpha=0.7)
    with pytest.raises(CaloforgeError, match="unknown setting"):
        CouplingFlowConfig.from_dict({"hiden": 3})
    with pytest.raises(CaloforgeError, match="permutations must be 'random' or 'alternating'"):
        CouplingFlowConfig(permutations="shuffled")


def test_learning_rate_follows_a_cosine_over_lr_steps():
    model = build_model("coupling-flow", get_geometry("atlas89"),
                        TINY.replace(lr=1e-2, lr_steps=11, lr_floor=0.1), Conditioning())
    model.configure_optimizers()
    rates = []
    for step in (1, 6, 11, 30):
        model._set_lr(step)
        rates.append(model.optimizers["flow"].param_groups[0]["lr"])
    assert rates == pytest.approx([1e-2, 5.5e-3, 1e-3, 1e-3])


# ---- the CLI: train, exact resume, generate ----------------------------------------------


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("coupling_flow")
    data = root / "train.h5"
    write_showers(data, fake_showers(get_geometry("calogan"), 64))
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "train": {"batch_size": 16, "num_threads": 1, "log_every": 1, "tensorboard": False,
                  "device": "cpu", "checkpoint_every": 2},
        "model": TINY.to_dict()}))
    return root, data, config


def test_cli_resume_is_exact_and_generate_writes_showers(cli_files, capsys):
    root, data, config = cli_files
    straight, split = root / "straight", root / "split"
    code, out, err = run_cli(["train", "coupling-flow", "--data", data, "--out", straight,
                              "--config", config, "--max-steps", 4, "-q"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "coupling-flow", "--data", data, "--out", split,
                            "--config", config, "--max-steps", 2, "-q"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "coupling-flow", "--out", split, "--max-steps", 4,
                            "--resume", "-q"], capsys)
    assert code == 0, err
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert a["step"] == b["step"] == 4
    # the log records the learning rate of each step (cosine over lr_steps), not the first
    records = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    rates = [r["lr_flow"] for r in records if "lr_flow" in r]
    assert len(rates) == 4 and all(x > y for x, y in zip(rates, rates[1:], strict=False))
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    path = root / "generated.h5"
    code, _, err = run_cli(["generate", straight, "-n", 6, "--energy", "10:50", "-o", path,
                            "-q"], capsys)
    assert code == 0, err
    showers = read_showers(path)
    assert showers.voxels.shape == (6, 504)
    assert np.isfinite(showers.voxels).all() and (showers.voxels >= 0).all()
    assert showers.meta["generator"] == "coupling-flow"
    # out of the trained range: one line, no file
    bad = root / "bad.h5"
    code, _, err = run_cli(["generate", straight, "-n", 2, "--energy", "500:600", "-o", bad,
                            "-q"], capsys)
    assert code != 0 and "outside the trained range" in err and not bad.exists()


@pytest.mark.parametrize("name", ["atlas89", "calochallenge_ds1_photons",
                                  "calochallenge_ds1_pions"])
def test_cli_trains_and_generates_from_small_files(name, tmp_path, capsys):
    geometry = get_geometry(name)
    data, run, out = tmp_path / "train.h5", tmp_path / "run", tmp_path / "gen.h5"
    write_showers(data, fake_showers(geometry, 40, seed=1))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "train": {"batch_size": 16, "num_threads": 1, "tensorboard": False, "device": "cpu"},
        "model": TINY.to_dict()}))
    code, _, err = run_cli(["train", "coupling-flow", "--data", data, "--out", run,
                            "--config", config, "--max-steps", 2, "-q"], capsys)
    assert code == 0, err
    middle = sum(geometry.energy_range) / 2  # GeV, inside the trained range
    code, _, err = run_cli(["generate", run, "-n", 3, "--energy", f"{middle:g}", "-o", out,
                            "-q"], capsys)
    assert code == 0, err
    showers = read_showers(out)
    assert showers.geometry.name == name
    assert showers.voxels.shape == (3, geometry.n_voxels) and (showers.voxels >= 0).all()


@pytest.mark.parametrize("family", ["coupling-flow", "caloflow"])
def test_preparation_warns_when_the_splines_cannot_reach_training_showers(family):
    """A standardised Flow II variable outside [-bound, bound] passes the identity tails,
    and a base sample inside the bound stays inside through every block: such training
    showers cannot be generated. Parametric pi+ have rare large far deposits that a bound
    of 6 misses in a fifth to a third of the showers; 14 covers them, and so does a bound
    of 6 with the tails compressed from 3 standard deviations on."""
    from caloforge.simulate import simulate_showers

    showers = simulate_showers("calogan", "piplus", 300, energy_range=(1.0, 100.0), seed=3,
                               version="parametric-2")
    config = get_model_class(family).tiny_config()
    conditioning = Conditioning.from_showers(showers)
    with pytest.warns(UserWarning, match=r"% of the training showers have a Flow II variable "
                                         r"outside the spline's \[-6, 6\]"):
        build_model(family, showers.geometry, config.replace(bound=6.0),
                    conditioning).prepare(showers)
    for reaching in (config.replace(bound=14.0), config.replace(bound=6.0, tail_knee=3.0)):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*Flow II variable outside")
            build_model(family, showers.geometry, reaching, conditioning).prepare(showers)


def test_tail_compression_is_smooth_monotonic_and_invertible():
    knee = 3.0
    z = torch.linspace(-30.0, 30.0, 60001, dtype=torch.float64)
    y = compress_tails(z, knee)
    inside = z.abs() <= knee
    assert torch.equal(y[inside], z[inside])  # the bulk is untouched
    assert (y[1:] > y[:-1]).all()
    slope = torch.diff(y) / torch.diff(z)
    assert (slope > 0).all() and slope.max() <= 1 + 1e-9
    assert torch.diff(slope).abs().max() < 1e-3  # no kink at the knee
    # 26 standard deviations (the farthest pion deposit) lands inside [-6.2, 6.2]
    assert float(compress_tails(torch.tensor(26.0), knee)) == pytest.approx(3 + math.log(24))
    torch.testing.assert_close(expand_tails(y, knee), z, rtol=0, atol=1e-9)
    assert torch.equal(compress_tails(z, 0.0), z) and torch.equal(expand_tails(z, 0.0), z)


def test_a_sample_inside_the_bound_never_leaves_it():
    torch.manual_seed(0)
    stack = CouplingStack(8, 1, 16, 2, 4, 2.0, 3, seed=0)
    for p in stack.parameters():
        p.data.normal_(0.0, 2.0)
    z = (torch.rand(2000, 8) * 2 - 1) * 1.999
    x = stack.inverse(z, torch.rand(2000, 1))
    assert x.abs().max() < 2.0 * (1 + 1e-3)  # float32 rounding at the edges


def test_the_cli_prints_that_warning_in_one_line(tmp_path):
    import subprocess
    import sys

    from caloforge.simulate import simulate_to_file

    data = tmp_path / "piplus.h5"
    simulate_to_file(data, "calogan", "piplus", 200, energy_range=(1.0, 100.0), seed=3,
                     progress=False, version="parametric-2")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "train": {"max_steps": 1, "batch_size": 16, "device": "cpu"},
        "model": {**{k: v for k, v in TINY.to_dict().items() if k != "family"},
                  "bound": 6.0}}))
    done = subprocess.run([sys.executable, "-m", "caloforge", "train", "coupling-flow",
                           "--data", data, "--out", tmp_path / "run", "--config", config,
                           "-q", "--num-threads", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "Flow II" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: coupling-flow: ")
    assert "UserWarning" not in done.stderr and "prepare(" not in done.stderr


def test_a_flow_with_compressed_tails_exports_with_parity(tmp_path):
    """The compression's inverse (an exponential beyond the knee) is in the exported graph;
    a knee of 1 puts a good share of the sampled variables beyond it."""
    from test_models_contract import conditioning_for, fake_batch, tiny_geometry

    from caloforge.export import export_onnx

    torch.manual_seed(0)
    geometry = tiny_geometry(("energy",))
    model = build_model("coupling-flow", geometry,
                        TINY.replace(tail_knee=1.0, resample_outliers=3),
                        conditioning_for(geometry))
    model.configure_optimizers()
    model.training_step(fake_batch(geometry, 8), step=1)
    contract = export_onnx(model.eval(), tmp_path / "knee.onnx")
    assert contract["parity"]["passed"]
    # the graph is decode: the contract says that it does not resample
    assert any("does not" in note for note in contract["sampling_notes"])


# ---- resampling showers that leave the training range ------------------------------------


def test_resampled_showers_stay_inside_the_training_range():
    geometry = get_geometry("atlas89")
    showers = fake_showers(geometry, 200)
    torch.manual_seed(0)
    model = build_model("coupling-flow", geometry, TINY.replace(resample_outliers=40),
                        Conditioning.from_showers(showers)).eval()
    model.prepare(showers)
    # the stored maximum is reached by the training showers and never exceeded
    noisy = model.prep.add_noise(torch.as_tensor(showers.voxels),
                                 torch.Generator().manual_seed(1))
    x2 = model.prep.voxels_to_flow2(noisy, model.prep.layer_energies(noisy))
    assert torch.equal(x2.amax(0), model.flow2_max)
    # a range most sampled showers leave: each voxel's 98th percentile of fresh samples
    conditions = torch.as_tensor(showers.conditions()[:150])
    with torch.no_grad():
        fresh, _, _ = model._invert_flows(model.draw_latent(2000),
                                          conditions.repeat(14, 1)[:2000])
        model.flow2_max.copy_(fresh.quantile(0.98, dim=0))
        outside = (model._invert_flows(model.draw_latent(150), conditions)[0]
                   > model.flow2_max).any(-1).float().mean()
    assert outside > 0.5
    seen = []
    to_voxels = model.prep.flow2_to_voxels
    model.prep.flow2_to_voxels = lambda x, layers: seen.append(x) or to_voxels(x, layers)
    out = model.sample(conditions, generator=torch.Generator().manual_seed(3))
    assert out.shape == (150, geometry.n_voxels) and (out >= 0).all()
    assert not (torch.cat(seen) > model.flow2_max).any()
    # the stored maximum travels with the weights; without the setting there is none
    again = build_model("coupling-flow", geometry, TINY.replace(resample_outliers=40),
                        Conditioning.from_showers(showers))
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.flow2_max, model.flow2_max)
    assert "flow2_max" not in build_model("coupling-flow", geometry, TINY,
                                          Conditioning()).state_dict()
    with pytest.raises(CaloforgeError, match="resample_outliers"):
        CouplingFlowConfig(resample_outliers=-1)
