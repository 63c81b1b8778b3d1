"""CaloGAN pieces against plain reference computations, and its physics conditioning."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from caloforge.data import ShowerSet
from caloforge.errors import CaloforgeError
from caloforge.geometry import CALOGAN
from caloforge.models import Conditioning, build_model
from caloforge.models.calogan import CaloGAN, CaloGANConfig
from caloforge.models.layers import (
    LocallyConnected2d,
    MinibatchDiscrimination,
    batch_norm_2d,
    minibatch_features,
)

torch.set_num_threads(1)


def reference_local(x, weight, bias, k, stride, pad):
    """Locally connected layer by F.unfold: weight (L, O, kh*kw*C) in (dy, dx, c) order."""
    b, c = x.shape[:2]
    xp = F.pad(x, (pad[2], pad[3], pad[0], pad[1]))
    patches = F.unfold(xp, k, stride=stride)  # (B, C*kh*kw, L), (c, dy, dx) order
    o = weight.shape[-2]
    w = weight.reshape(-1, o, k, k, c).permute(0, 1, 4, 2, 3).reshape(-1, o, c * k * k)
    out = torch.einsum("bkl,lok->bol", patches, w)
    if bias is not None:
        out = out + bias.squeeze(-1).t().unsqueeze(0)
    return out


@pytest.mark.parametrize(("shape", "k", "stride", "pad"), [
    ((3, 96), 3, (1, 2), 1), ((12, 6), 2, 1, (0, 1, 0, 1)), ((5, 7), 2, (1, 2), 1),
    ((4, 4), 2, 1, 0), ((1, 1), 3, 1, 1)])
def test_locally_connected_matches_unfold(shape, k, stride, pad):
    torch.manual_seed(0)
    x = torch.randn(5, 3, *shape)
    pads = (pad,) * 4 if isinstance(pad, int) else pad
    local = LocallyConnected2d(3, 4, shape, k, stride=stride, padding=pad)
    with torch.no_grad():
        local.bias.normal_()
    out = local(x)
    ref = reference_local(x, local.weight, local.bias, k, stride, pads)
    assert out.shape == (5, 4, *local.output_size)
    torch.testing.assert_close(out.reshape(5, 4, -1), ref, rtol=1e-5, atol=1e-5)
    # unshared: changing one position's filter changes only that position
    with torch.no_grad():
        local.weight[0].add_(1.0)
    changed = (local(x) - out).abs().reshape(5, 4, -1).amax(dim=(0, 1)) > 0
    assert changed[0] and not changed[1:].any()
    # shared: an ordinary convolution
    conv = LocallyConnected2d(3, 4, shape, k, stride=stride, padding=pad, shared=True)
    w = conv.weight.reshape(4, k, k, 3).permute(0, 3, 1, 2)
    xp = F.pad(x, (pads[2], pads[3], pads[0], pads[1]))
    torch.testing.assert_close(conv(x), F.conv2d(xp, w, conv.bias.reshape(4), stride=stride),
                               rtol=1e-5, atol=1e-5)


def test_locally_connected_gradients_match_unfold():
    torch.manual_seed(1)
    x = torch.randn(4, 2, 5, 7, requires_grad=True)
    local = LocallyConnected2d(2, 3, (5, 7), 3, stride=(1, 2), padding=1)
    local(x).square().sum().backward()
    gx, gw = x.grad.clone(), local.weight.grad.clone()
    x.grad = None
    local.weight.grad = None
    ref = reference_local(x, local.weight, local.bias, 3, (1, 2), (1, 1, 1, 1))
    ref.square().sum().backward()
    torch.testing.assert_close(gx, x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw, local.weight.grad, rtol=1e-4, atol=1e-5)


def test_batch_norm_on_batch_last_views_matches_batchnorm():
    torch.manual_seed(2)
    norm = torch.nn.BatchNorm2d(4)
    x = torch.randn(6, 4, 3, 5)
    view = x.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1)  # batch-last storage
    ref_norm = torch.nn.BatchNorm2d(4)
    torch.testing.assert_close(batch_norm_2d(norm, view), ref_norm(x))
    torch.testing.assert_close(norm.running_var, ref_norm.running_var)
    norm.eval()
    ref_norm.eval()
    torch.testing.assert_close(batch_norm_2d(norm, view), ref_norm(x))


def test_minibatch_features_match_the_definition():
    torch.manual_seed(3)
    m = torch.randn(5, 3, 4)
    expected = torch.zeros(5, 3)
    for i in range(5):
        for j in range(5):
            expected[i] += torch.exp(-(m[i] - m[j]).abs().sum(dim=1))
    torch.testing.assert_close(minibatch_features(m), expected)
    # identical samples (mode collapse) give the largest values
    mbd = MinibatchDiscrimination(6, 3, 4)
    same, varied = torch.ones(8, 6), torch.randn(8, 6) * 5
    assert (mbd(same) > mbd(varied)).all()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("calogan", CALOGAN, CaloGAN.tiny_config(),
                       Conditioning(energy=(1e3, 1e5)))


def test_fused_dense_convolution_equals_the_plain_path(model):
    stream = model.generator.streams[0]
    h = torch.randn(7, model.config.latent_size)
    weight, bias = stream._fused()
    c, rows, cols = stream.grid
    fused = (h @ weight.t() + bias).reshape(7, rows, cols, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(fused, stream.dense_conv(h), rtol=1e-5, atol=1e-5)
    # the inference cache follows parameter updates
    with torch.no_grad():
        a = stream._fused()[0].clone()
        stream.conv.weight.mul_(2.0)
        b = stream._fused()[0].clone()
        stream.conv.weight.div_(2.0)
    torch.testing.assert_close(b, 2 * a)


def test_generator_output_is_sparse_nonnegative_mev_per_layer(model):
    cond = torch.full((16, 1), 5e4)
    out = model.sample(cond, generator=torch.Generator().manual_seed(0))
    assert out.shape == (16, CALOGAN.n_voxels)
    assert (out >= 0).all()
    assert (out == 0).any(), "ReLU outputs should give exact zeros"


def test_attention_starts_by_ignoring_the_previous_layer(model):
    attention = model.generator.attention[0]
    # images of order 0.1 (a fresh generator's scale): the -10 bias of the copied
    # channel dominates its logits, so the layer keeps its own image
    primary = torch.rand(4, 1, 12, 12) * 0.1
    previous = torch.rand(4, 1, 3, 96) * 0.1
    out = attention(primary, previous)
    torch.testing.assert_close(out, primary, rtol=1e-3, atol=1e-4)
    no_attention = build_model("calogan", CALOGAN, CaloGANConfig(attention=False,
                               latent_size=8), Conditioning())
    assert no_attention.generator.attention is None


def test_latent_is_multiplied_by_the_incident_energy(model):
    """E = 0 gives the same image whatever the latent vector (as in the paper)."""
    gen = model.generator.eval()
    z1, z2 = torch.randn(2, 8), torch.randn(2, 8)
    zero = torch.zeros(2)
    a, b = gen(z1, zero), gen(z2, zero)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)
    c = gen(z1, torch.full((2,), 50.0))
    assert any(not torch.allclose(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize(("power", "relative"), [(1.0, False), (0.5, False), (0.5, True)])
def test_preprocessing_is_invertible(power, relative):
    torch.manual_seed(0)
    config = CaloGANConfig(latent_size=8, voxel_power=power, voxel_relative=relative)
    m = build_model("calogan", CALOGAN, config, Conditioning())
    x = torch.rand(3, CALOGAN.n_voxels) * 1e4 * (torch.rand(3, CALOGAN.n_voxels) < 0.4)
    energy_gev = torch.tensor([2.0, 30.0, 90.0])
    units = m._to_units(x, energy_gev)
    back = torch.cat([u.flatten(1) for u in m._to_mev(units, energy_gev)], dim=1)
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-3)
    if relative:  # units are fractions of the incident energy: the same at any energy
        torch.testing.assert_close(m._to_units(x * 10, energy_gev * 10)[1], units[1])


def test_prepare_learns_the_deposited_fraction(model):
    rng = np.random.default_rng(0)
    e = rng.uniform(1e3, 1e5, 50).astype(np.float32)
    voxels = np.zeros((50, CALOGAN.n_voxels), np.float32)
    voxels[:, 300] = 0.8 * e
    model.prepare(ShowerSet(CALOGAN, voxels, e))
    assert model.deposit_fraction.item() == pytest.approx(0.8)


def test_discriminator_sees_the_energy_constraint(model):
    """|E_tot - E| and its >5 GeV indicator enter the discriminator (physics constraint)."""
    disc = model.discriminator.eval()
    images = [torch.zeros(2, 1, *layer.shape) for layer in CALOGAN.layers]
    energies = torch.tensor([[10.0, 40.0, 0.0], [10.0, 40.0, 0.0]])
    logit_a, _ = disc(images, energies, torch.tensor([50.0, 50.0]))
    logit_b, _ = disc(images, energies, torch.tensor([50.0, 80.0]))
    assert logit_a[0] == logit_b[0] and logit_a[1] != logit_b[1]


def test_config_validation():
    with pytest.raises(CaloforgeError, match="energy_target"):
        CaloGANConfig(energy_target="total")
    with pytest.raises(CaloforgeError, match="positive"):
        CaloGANConfig(voxel_power=0)


def test_paper_defaults_are_kept():
    c = CaloGANConfig()
    assert (c.gen_lr, c.disc_lr, c.adam_beta1) == (2e-4, 2e-5, 0.5)
    assert (c.energy_loss_weight, c.generator_steps) == (0.05, 2)
    assert (c.gen_dense_channels, c.gen_conv_channels, c.gen_lc_channels) == (36, 16, 6)
    assert (c.disc_conv_channels, c.disc_lc_channels) == (64, (16, 8, 8))
    assert (c.minibatch_kernels, c.minibatch_kernel_dim) == (10, 10)


@pytest.fixture(scope="module")
def energy_scan_after_training():
    """Train 300 steps on simple showers (70% + 20% of E in two cells); return the mean
    generated total energy / requested energy at 10, 50 and 90 GeV."""
    from caloforge.train.data import ShowerDataset

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = 4096
    e = rng.uniform(1e3, 1e5, n).astype(np.float32)
    voxels = np.zeros((n, CALOGAN.n_voxels), np.float32)
    voxels[:, 288 + 66] = 0.7 * e
    voxels[:, 288 + 67] = 0.2 * e
    showers = ShowerSet(CALOGAN, voxels, e)
    torch.manual_seed(0)
    m = build_model("calogan", CALOGAN, CaloGANConfig(latent_size=32),
                    Conditioning(energy=(1e3, 1e5)))
    m.prepare(showers)
    m.configure_optimizers()
    data = ShowerDataset(showers)
    for step in range(1, 301):
        idx = rng.integers(0, n, 64).tolist()
        m.training_step(data.__getitems__(idx), step)
    cond = torch.tensor([[1e4], [5e4], [9e4]]).repeat_interleave(200, 0)
    total = m.sample(cond).sum(dim=1).reshape(3, 200).mean(dim=1)
    return total / cond[::200, 0]


@pytest.mark.slow
def test_calogan_learns_the_energy_scale(energy_scan_after_training):
    """The generated total energy grows with the requested energy and matches it (0.9 E)
    within 30% at 50 and 90 GeV (the conditioning and the energy constraint at work)."""
    response = energy_scan_after_training
    assert (response * torch.tensor([10.0, 50.0, 90.0])).diff().gt(0).all()
    torch.testing.assert_close(response[1:], torch.full((2,), 0.9), rtol=0.3, atol=0)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="known limitation: with the latent vector multiplied "
                   "by E / 100 GeV and the energy constraint in absolute GeV, low energies "
                   "train slowly (response 1.41 instead of 0.9 at 10 GeV after 300 steps); "
                   "remove this mark when fixed")
def test_calogan_energy_scale_at_low_energy(energy_scan_after_training):
    torch.testing.assert_close(energy_scan_after_training[:1], torch.full((1,), 0.9),
                               rtol=0.3, atol=0)


def test_large_batches_are_generated_in_independent_pieces(model):
    """CPU inference splits big batches; every shower must come out as if alone."""
    latent = torch.randn(300, model.config.latent_size)
    cond = torch.linspace(1e3, 1e5, 300).unsqueeze(1)
    model.eval()
    with torch.no_grad():
        whole = model.decode(latent, cond)
        single = torch.cat([model.decode(latent[i:i + 1], cond[i:i + 1]) for i in (0, 299)])
    torch.testing.assert_close(whole[[0, 299]], single, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("relative", [False, True])
def test_a_floor_in_the_empty_cells_scales_with_the_incident_energy(relative):
    # whatever small value the generator leaves in the empty cells (ReLU outputs just
    # above zero): in fixed units (GeV) it is a fixed number of MeV, so E_tot / E_inc of a
    # 1 GeV shower is 100 times that of a 100 GeV one (the floor of the first CaloGAN runs:
    # 7.7 at 1.3 GeV for e+); in units of the incident energy it is the same fraction
    config = CaloGAN.tiny_config().replace(voxel_relative=relative)
    model = build_model("calogan", CALOGAN, config, Conditioning(energy=(1e3, 1e5)))
    floor = [torch.full((2, 1, *layer.shape), 0.05) for layer in CALOGAN.layers]
    energy_gev = torch.tensor([1.0, 100.0])
    mev = model._to_mev(floor, energy_gev)
    response = torch.stack([x.sum(dim=(1, 2, 3)) for x in mev]).sum(dim=0) / (energy_gev * 1e3)
    ratio = (response[0] / response[1]).item()
    assert ratio == pytest.approx(1.0 if relative else 100.0, rel=1e-4)


def test_relative_energy_loss_and_log_latent_scaling():
    torch.manual_seed(0)
    config = CaloGAN.tiny_config().replace(voxel_relative=True, energy_loss="relative",
                                           latent_scaling="log", energy_input=True)
    model = build_model("calogan", CALOGAN, config, Conditioning(energy=(1e3, 1e5)))
    model.configure_optimizers()
    rng = np.random.default_rng(0)
    e = rng.uniform(1e3, 1e5, 8).astype(np.float32)
    voxels = rng.exponential(1.0, (8, CALOGAN.n_voxels)).astype(np.float32)
    voxels *= (e / voxels.sum(axis=1))[:, None]
    model.prepare(ShowerSet(CALOGAN, voxels, e))
    metrics = model.training_step({"voxels": torch.from_numpy(voxels),
                                   "conditions": torch.from_numpy(e[:, None])}, 1)
    assert "g_energy_rel" in metrics and np.isfinite(list(metrics.values())).all()
    # log scaling: the latent keeps at least half its size at the lowest energy
    log_e = model._log_energy(torch.tensor([1.0, 100.0]))
    torch.testing.assert_close(log_e, torch.tensor([0.0, 1.0]))
    with pytest.raises(CaloforgeError, match="latent_scaling"):
        CaloGANConfig(latent_scaling="sqrt")
    with pytest.raises(CaloforgeError, match="energy_loss"):
        CaloGANConfig(energy_loss="squared")


def test_binned_mean_energy_loss_fixes_means_not_single_showers():
    torch.manual_seed(0)
    config = CaloGAN.tiny_config().replace(energy_target="fit", energy_loss="binned_mean",
                                           energy_loss_bins=2)
    model = build_model("calogan", CALOGAN, config, Conditioning(energy=(1e3, 1e5)))
    rng = np.random.default_rng(0)
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), 4000)).astype(np.float32)
    # a response that falls with energy: 0.5 at 1 GeV to 0.3 at 100 GeV
    fraction = (0.5 - 0.1 * np.log10(e / 1e3)).astype(np.float32)
    voxels = np.zeros((len(e), CALOGAN.n_voxels), np.float32)
    voxels[:, 300] = fraction * e
    model.prepare(ShowerSet(CALOGAN, voxels, e))
    gev = torch.tensor([1.0, 10.0, 100.0])
    torch.testing.assert_close(model.energy_target(gev) / gev, torch.tensor([0.5, 0.4, 0.3]),
                               atol=0.01, rtol=0)
    # two showers each 50% off in opposite directions at the same energy cancel in the mean
    energy = torch.tensor([10.0, 10.0, 80.0, 80.0])
    target = model.energy_target(energy)
    assert model._energy_loss(target * torch.tensor([0.5, 1.5, 1.0, 1.0]), energy).item() == (
        pytest.approx(0.0, abs=1e-6))
    shifted = model._energy_loss(target * 1.1, energy).item()
    expected = float((0.1 * target / energy).mean())
    assert shifted == pytest.approx(expected, rel=1e-4)


def test_log_uniform_energy_constraint_is_evaluated_as_at_inference():
    torch.manual_seed(0)
    config = CaloGAN.tiny_config().replace(voxel_relative=True, energy_target="fit",
                                           energy_loss="binned_mean", latent_scaling="log",
                                           energy_input=True,
                                           energy_loss_sampling="log_uniform")
    model = build_model("calogan", CALOGAN, config, Conditioning(energy=(1e3, 1e5)))
    model.configure_optimizers()
    rng = np.random.default_rng(0)
    e = rng.uniform(1e3, 1e5, 8).astype(np.float32)
    voxels = rng.exponential(1.0, (8, CALOGAN.n_voxels)).astype(np.float32)
    voxels *= (0.3 * e / voxels.sum(axis=1))[:, None]
    model.prepare(ShowerSet(CALOGAN, voxels, e))
    gen = model.generator
    before = {k: v.clone() for k, v in gen.state_dict().items() if "running" in k}
    torch.manual_seed(1)
    loss = model._log_uniform_energy_loss(gen, 64, None, torch.device("cpu"))
    # batch norm ran on its running statistics and the generator is back in training mode
    assert gen.training
    for k, v in gen.state_dict().items():
        if "running" in k:
            torch.testing.assert_close(v, before[k])
    # the same draw, generated in eval mode by hand, gives the same loss
    torch.manual_seed(1)
    energy = 1.0 * 100.0 ** torch.rand(64)
    assert energy.min() >= 1.0 and energy.max() <= 100.0
    gen.eval()
    images = model._generate(gen, model.draw_latent(64), energy, None)
    gen.train()
    total = sum(x.sum(dim=(1, 2, 3)) for x in model._to_mev(images, energy)) / 1e3
    torch.testing.assert_close(loss, model._energy_loss(total, energy))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.parameters())
    metrics = model.training_step({"voxels": torch.from_numpy(voxels),
                                   "conditions": torch.from_numpy(e[:, None])}, 1)
    assert np.isfinite(list(metrics.values())).all()
    with pytest.raises(CaloforgeError, match="energy_loss_sampling"):
        CaloGANConfig(energy_loss_sampling="uniform")
