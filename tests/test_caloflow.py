"""CaloFlow: preprocessing, splines, flows, distillation, staged training and the CLI."""

import math

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import run_cli

from caloforge.data import ShowerSet, read_showers, write_showers
from caloforge.errors import CaloforgeError
from caloforge.geometry import CALOGAN, Geometry, Layer, get_geometry
from caloforge.models import Conditioning, build_model
from caloforge.models._flowprep import FlowPreprocessing
from caloforge.models._maf import IAF, MAF, rqs_forward, rqs_inverse, rqs_knots
from caloforge.models.caloflow import CaloFlow, CaloFlowConfig
from caloforge.train import stage_max_steps

torch.set_num_threads(1)

TINY = Geometry(
    name="tiny-caloflow",
    layers=(Layer("front", (2, 3), (10.0, 5.0), (0.0, 10.0)),
            Layer("middle", (2, 2), (10.0, 10.0), (10.0, 40.0)),
            Layer("back", (1, 2), (10.0, 15.0), (40.0, 50.0))),
    conditions=("energy",),
)


def fake_showers(geometry: Geometry, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(voxels (n, n_voxels) MeV, energy (n,) MeV)``: sparse deposits, ~90% of E_inc."""
    g = torch.Generator().manual_seed(seed)
    energy = 1e3 + 99e3 * torch.rand(n, generator=g)
    mask = torch.rand(n, geometry.n_voxels, generator=g) < 0.6
    voxels = torch.rand(n, geometry.n_voxels, generator=g) * mask
    voxels = voxels / voxels.sum(1, keepdim=True).clamp_min(1e-6) * 0.9 * energy[:, None]
    return voxels, energy


def prep_for(geometry: Geometry, n: int = 200, tail_knee: float = 0.0
             ) -> tuple[FlowPreprocessing, torch.Tensor, torch.Tensor]:
    prep = FlowPreprocessing(geometry, noise_mev=1e-3, threshold_mev=1e-3, alpha=1e-6,
                             tail_knee=tail_knee)
    voxels, energy = fake_showers(geometry, n)
    prep.fit(voxels, energy, (1e3, 1e5), torch.Generator().manual_seed(0))
    return prep, prep.add_noise(voxels, torch.Generator().manual_seed(1)), energy


# ---- preprocessing -------------------------------------------------------------------


def test_flow1_variables_round_trip_to_layer_energies():
    prep, voxels, energy = prep_for(TINY)
    layers = prep.layer_energies(voxels)
    # shares within alpha = 1e-6 of 0 or 1 are floored by the logit, by design
    keep = (layers / layers.sum(1, keepdim=True) > 1e-4).all(1)
    layers, energy = layers[keep], energy[keep]
    assert len(layers) > 100
    x = prep.layers_to_flow1(layers, energy)
    assert x.shape == (len(energy), 3) and torch.isfinite(x).all()
    back = prep.flow1_to_layers(x, energy)
    np.testing.assert_allclose(back.numpy(), layers.numpy(), rtol=1e-4)


@pytest.mark.parametrize("tail_knee", [0.0, 1.0])
def test_flow2_variables_round_trip_to_voxels(tail_knee):
    prep, voxels, energy = prep_for(TINY, tail_knee=tail_knee)
    layers = prep.layer_energies(voxels)
    x = prep.voxels_to_flow2(voxels, layers)
    assert torch.isfinite(x).all()
    exact = prep.flow2_to_voxels(x, layers, renormalise=False, threshold=False)
    np.testing.assert_allclose(exact.numpy(), voxels.numpy(), rtol=1e-3, atol=2e-3)
    # renormalising an exact inverse changes nothing; the threshold removes only the noise
    full = prep.flow2_to_voxels(x, layers)
    np.testing.assert_allclose(full.numpy(), np.where(exact.numpy() < 1e-3, 0, exact.numpy()),
                               rtol=1e-3, atol=2e-3)
    assert (full >= 0).all()


def test_noise_is_bounded_and_layer_sums_are_per_layer():
    prep, _, _ = prep_for(TINY)
    zeros = torch.zeros(50, TINY.n_voxels)
    noisy = prep.add_noise(zeros, torch.Generator().manual_seed(0))
    assert (noisy >= 0).all() and (noisy < 1e-3).all() and (noisy > 0).any()
    layers = prep.layer_energies(torch.ones(1, TINY.n_voxels))
    assert layers.tolist() == [[6.0, 4.0, 2.0]]


# ---- splines and flows -----------------------------------------------------------------


def random_knots(shape, bins=5, bound=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = 2 * torch.randn(*shape, 3 * bins - 1, generator=g, dtype=torch.float64)
    return rqs_knots(params, bins, bound)


def test_rqs_inverse_and_log_det_match_autograd():
    knots = random_knots((400,))
    x = torch.linspace(-4.0, 4.0, 400, dtype=torch.float64, requires_grad=True)  # tails too
    y, ladj = rqs_forward(x, knots)
    (dydx,) = torch.autograd.grad(y.sum(), x)
    np.testing.assert_allclose(ladj.detach().numpy(), dydx.log().numpy(), atol=1e-8)
    assert (dydx > 0).all()
    back = rqs_inverse(y.detach(), knots)
    np.testing.assert_allclose(back.numpy(), x.detach().numpy(), atol=1e-8)
    outside = x.detach().abs() > 3.0
    assert torch.equal(y.detach()[outside], x.detach()[outside])


def test_maf_density_normalises_on_two_dimensions():
    torch.manual_seed(0)
    flow = MAF(2, 1, 16, 1, bins=6, bound=4.0, blocks=2).double()
    with torch.no_grad():  # make it far from the identity
        for block in flow.blocks:
            block.made.linears[-1].weight.normal_(0, 0.5)
            block.made.linears[-1].bias.normal_(0, 1.0)
        flow.apply_masks()
    grid = torch.linspace(-9, 9, 361, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    x = torch.stack([xx.flatten(), yy.flatten()], dim=1)
    context = torch.full((len(x), 1), 0.3, dtype=torch.float64)
    with torch.no_grad():
        density = flow.log_prob(x, context).exp()
    step = float(grid[1] - grid[0])
    assert math.isclose(float(density.sum()) * step**2, 1.0, abs_tol=5e-3)
    # sampling inverts the density direction
    with torch.no_grad():
        z, _, _, _ = flow.trace(x[:50], context[:50])
        np.testing.assert_allclose(flow.inverse(z, context[:50]).numpy(), x[:50].numpy(),
                                   atol=1e-6)


def test_made_is_autoregressive_and_sees_the_context():
    torch.manual_seed(0)
    flow = MAF(5, 2, 12, 2, bins=4, bound=3.0, blocks=1)
    made = flow.blocks[0].made
    with torch.no_grad():
        made.linears[-1].weight.normal_(0, 0.3)
        made.apply_masks()
    x = torch.randn(1, 5, requires_grad=True)
    c = torch.randn(1, 2, requires_grad=True)
    out = made(x, c)  # (1, 5, P)
    for i in range(5):
        gx, gc = torch.autograd.grad(out[0, i].sum(), (x, c), retain_graph=True)
        assert (gx[0, i:] == 0).all(), f"output {i} sees inputs >= {i}"
        assert gc.abs().sum() > 0, f"output {i} ignores the context"


def test_student_and_teacher_traces_line_up():
    """The student's intermediate results and spline parameters come back in the teacher's
    block numbering; fresh flows are near the identity, so everything nearly matches."""
    teacher = MAF(4, 1, 8, 1, bins=4, bound=3.0, blocks=2)
    student = IAF(4, 1, 8, 1, bins=4, bound=3.0, blocks=2)
    x, c = torch.randn(10, 4), torch.rand(10, 1)
    with torch.no_grad():
        z, _, inter_t, par_t = teacher.trace(x, c)
        out, inter_s, par_s = student(z, c)
    assert torch.allclose(out, x, atol=1e-2) and torch.allclose(z, x, atol=1e-2)
    assert len(inter_t) == len(inter_s) == 1 and len(par_t) == len(par_s) == 2
    assert par_t[0].shape == par_s[0].shape == (10, 4, 11)


# ---- the model -----------------------------------------------------------------------


def tiny_model(geometry: Geometry = TINY, **changes) -> CaloFlow:
    torch.manual_seed(0)
    config = CaloFlow.tiny_config().replace(**changes)
    model = build_model("caloflow", geometry, config, Conditioning(energy=(1e3, 1e5)))
    voxels, energy = fake_showers(geometry, 300)
    model.prepare(ShowerSet(geometry, voxels.numpy(), energy.numpy()))
    model.configure_optimizers()
    return model


def test_stages_follow_the_step_number_and_count_steps():
    model = tiny_model(flow1_steps=2, teacher_steps=3, student_steps=2)
    assert [model.stage_at(s) for s in range(1, 8)] == (
        ["flow1"] * 2 + ["teacher"] * 3 + ["student"] * 2)
    voxels, energy = fake_showers(TINY, 16, seed=4)
    batch = {"voxels": voxels, "conditions": energy[:, None]}
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    metrics = model.training_step(batch, 1)
    assert "flow1_nll" in metrics
    assert all(torch.equal(v, model.teacher.state_dict()[k]) for k, v in before.items())
    model.training_step(batch, 3)
    assert model.trained_steps("flow1") == 1 and model.trained_steps("teacher") == 1
    with pytest.raises(CaloforgeError, match="student flow of this run has not been trained"):
        model.use_sampler("student")
    with pytest.raises(CaloforgeError, match="student flow of this run has not been trained"):
        model.use_sampler()  # the default, the student
    model.use_sampler("teacher")
    assert model.sampler == "teacher"
    with pytest.raises(CaloforgeError, match="no sampler 'apprentice'; choose student, teacher"):
        model.use_sampler("apprentice")


def test_distillation_reduces_the_distillation_loss():
    model = tiny_model(flow1_steps=1, teacher_steps=20, student_steps=60, student_lr=3e-3)
    voxels, energy = fake_showers(TINY, 64, seed=5)
    batch = {"voxels": voxels, "conditions": energy[:, None]}
    for step in range(1, 22):  # flow I and the teacher
        model.training_step(batch, step)
    torch.manual_seed(1)
    inputs = model._inputs(batch)
    noise = torch.randn_like(inputs["x2"])

    def loss() -> float:
        with torch.no_grad():
            return float(model.distillation_loss(inputs["x2"], inputs["c2"], noise=noise)["loss"])

    teacher_state = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    start = loss()
    for step in range(22, 82):
        metrics = model.training_step(batch, step)
    assert {"mse_z", "mse_x", "mse_z_i", "mse_x_i", "mse_p_z", "mse_p_x"} <= set(metrics)
    end = loss()
    assert end < 0.7 * start, (start, end)
    # the teacher is frozen while the student learns
    assert all(torch.equal(v, model.teacher.state_dict()[k]) for k, v in teacher_state.items())


@pytest.mark.parametrize("flow", ["teacher", "student"])
def test_atlas89_builds_trains_and_samples(flow):
    geometry = get_geometry("atlas89")
    model = tiny_model(geometry)
    assert model.latent_shape() == (4 + 89,)
    voxels, energy = fake_showers(geometry, 8)
    for step in (1, 2, 3):
        model.training_step({"voxels": voxels, "conditions": energy[:, None]}, step)
    model.use_sampler(flow)
    showers = model.sample(energy[:5, None], generator=torch.Generator().manual_seed(0))
    assert showers.shape == (5, 89)
    assert torch.isfinite(showers).all() and (showers >= 0).all()
    # CPU inference in pieces gives the showers of one pass
    model.eval()
    latent = model.draw_latent(7, torch.Generator().manual_seed(1))
    conditions = torch.linspace(2e3, 9e4, 7)[:, None]
    with torch.no_grad():
        whole = model.decode(latent, conditions)
        pieces = model.decode_in_pieces(latent, conditions, 3)
    assert pieces is not None and torch.allclose(pieces, whole, atol=1e-5)


def test_config_checks():
    with pytest.raises(CaloforgeError, match="alpha"):
        CaloFlowConfig(alpha=0.7)
    with pytest.raises(CaloforgeError, match="teacher_steps"):
        CaloFlowConfig(teacher_steps=0)
    assert CaloFlowConfig(flow1_steps=2, teacher_steps=3, student_steps=4).stage_ends() == (
        2, 5, 9)


# ---- command line --------------------------------------------------------------------


def tiny_calogan_showers(n: int = 48) -> ShowerSet:
    voxels, energy = fake_showers(CALOGAN, n)
    return ShowerSet(CALOGAN, voxels.numpy(), energy.numpy(),
                     meta={"particle": "eplus", "generator": "synthetic"})


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("caloflow")
    data = root / "train.h5"
    write_showers(data, tiny_calogan_showers())
    model = CaloFlow.tiny_config().replace(flow1_steps=2, teacher_steps=2, student_steps=2,
                                           flow2_blocks=1, flow2_hidden=8)
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "train": {"batch_size": 16, "num_threads": 1, "log_every": 1, "tensorboard": False,
                  "device": "cpu"},
        "model": model.to_dict()}))
    return root, data, config


def check_generated(path, n):
    showers = read_showers(path)
    assert showers.voxels.shape == (n, CALOGAN.n_voxels)
    assert np.isfinite(showers.voxels).all() and (showers.voxels >= 0).all()
    assert showers.voxels.sum() > 0


def test_cli_stage_all_then_generate_with_both_flows(cli_files, capsys):
    root, data, config = cli_files
    run = root / "all"
    code, out, err = run_cli(["train", "caloflow", "--data", data, "--out", run, "--config",
                              config, "--stage", "all", "-q"], capsys)
    assert code == 0, err
    assert "step 6" in out
    for flow in ("teacher", "student"):
        path = root / f"{flow}.h5"
        code, _, err = run_cli(["generate", run, "-n", 3, "--sampler", flow, "-o", path,
                                "-q"], capsys)
        assert code == 0, err
        check_generated(path, 3)
    # student by default
    code, _, err = run_cli(["generate", run, "-n", 2, "-o", root / "default.h5", "-q"], capsys)
    assert code == 0, err


def test_cli_stage_by_stage_with_resume(cli_files, capsys):
    root, data, config = cli_files
    run = root / "staged"
    code, _, err = run_cli(["train", "caloflow", "--data", data, "--out", run, "--config",
                            config, "--stage", "teacher", "-q"], capsys)
    assert code != 0 and "train --stage flow1 first" in err
    code, _, err = run_cli(["train", "caloflow", "--data", data, "--out", run, "--config",
                            config, "--stage", "flow1", "-q"], capsys)
    assert code == 0, err
    assert stage_max_steps("caloflow", "teacher", run, None, resume=True) == 4
    code, _, err = run_cli(["generate", run, "-n", 2, "-o", root / "x.h5", "-q"], capsys)
    assert code != 0 and "student flow of this run has not been trained" in err
    assert "Traceback" not in err
    code, _, err = run_cli(["train", "caloflow", "--out", run, "--stage", "teacher",
                            "--resume", "-q"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["generate", run, "-n", 2, "--flow", "teacher", "-o",
                            root / "t.h5", "-q"], capsys)
    assert code == 0, err
    check_generated(root / "t.h5", 2)
    code, _, err = run_cli(["generate", run, "-n", 2, "--flow", "student", "-o",
                            root / "s.h5", "-q"], capsys)
    assert code != 0 and "--stage student --resume" in err
    code, _, err = run_cli(["train", "caloflow", "--out", run, "--stage", "teacher",
                            "--resume", "-q"], capsys)
    assert code != 0 and "already trained" in err
    code, _, err = run_cli(["train", "caloflow", "--out", run, "--stage", "student",
                            "--resume", "-q"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["generate", run, "-n", 2, "--flow", "student", "-o",
                            root / "s.h5", "-q"], capsys)
    assert code == 0, err
    check_generated(root / "s.h5", 2)


def test_cli_stage_refuses_other_families_and_flow_on_gans(cli_files, capsys):
    root, data, _ = cli_files
    code, _, err = run_cli(["train", "calogan", "--data", data, "--out", root / "gan",
                            "--stage", "all", "-q"], capsys)
    assert code != 0 and "--stage applies to models trained in stages" in err


def test_bench_times_teacher_and_student_side_by_side(cli_files, capsys):
    from caloforge.bench import bench_runs

    root, data, config = cli_files
    run = root / "bench"
    code, _, err = run_cli(["train", "caloflow", "--data", data, "--out", run, "--config",
                            config, "--stage", "all", "-q"], capsys)
    assert code == 0, err
    result = bench_runs([f"{run}:teacher", f"{run}:student"], [1, 2], repeats=1,
                        backends=("torch", "onnxruntime"), simulator=False,
                        log=lambda m: None)
    # the teacher is not exported: timed with torch only, and the table says why
    assert any("teacher" in n and "not timed with onnxruntime" in n for n in result["notes"])
    assert {t["backend"] for t in result["timings"] if "teacher" in t["name"]} == {"torch"}
    assert {t["backend"] for t in result["timings"] if "student" in t["name"]} == {
        "torch", "onnxruntime"}
    names = {t["name"] for t in result["timings"]}
    assert any("caloflow teacher" in n for n in names)
    assert any("caloflow student" in n for n in names)
    assert all(t["ms_per_shower"] > 0 for t in result["timings"])
