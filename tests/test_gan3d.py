"""3DGAN (Carminati et al., CHEP 2019): loss terms, preprocessing, training schedule,
layout, the 3DGAN file reader and the CLI on a tiny CLIC-like geometry."""

import h5py
import numpy as np
import pytest
import torch
import yaml

from caloforge.cli.main import main
from caloforge.data import ShowerSet, read_showers, write_showers
from caloforge.errors import CaloforgeError
from caloforge.geometry import CLIC51, Geometry, Layer
from caloforge.models import Conditioning, build_model
from caloforge.models.gan3d import (
    Gan3D,
    Gan3DConfig,
    batch_statistics,
    flip_labels,
    mae,
    mape,
    pixel_spectrum,
    shower_moments,
    to_mev,
    to_units,
)

torch.set_num_threads(1)

def clic_like(size: int, n_layers: int) -> Geometry:
    """A CLIC-like test grid of ``size x size`` cells of 5.1 mm and ``n_layers`` layers."""
    name = f"{size}x{size}x{n_layers}"
    return Geometry(
        name=f"tiny-clic-{name}",
        layers=tuple(Layer(f"layer_{i:02d}", (size, size), (5.1, 5.1),
                           (5.1 * i, 5.1 * (i + 1))) for i in range(n_layers)),
        conditions=("energy", "angle"),
        particles=("eminus",),
        energy_range=(100.0, 200.0),
        angle_range=(60.0, 120.0),
        file_format="3dgan",
        description=f"{name} CLIC-like test grid",
    )


TINY_CLIC = clic_like(6, 4)

RAGGED = Geometry(
    name="tiny-ragged",
    layers=(Layer("a", (2, 6), (1.0, 1.0), (0.0, 1.0)), Layer("b", (3, 3), (1.0, 1.0), (1.0, 2.0)),
            Layer("c", (3, 2), (1.0, 1.0), (2.0, 3.0))),
    conditions=("energy", "angle"),
)


def showers(geometry: Geometry, n: int, seed: int = 0) -> ShowerSet:
    rng = np.random.default_rng(seed)
    energy = rng.uniform(100e3, 200e3, n).astype(np.float32)
    angle = rng.uniform(60.0, 120.0, n).astype(np.float32)
    mask = rng.random((n, geometry.n_voxels)) < 0.4
    voxels = rng.exponential(1.0, (n, geometry.n_voxels)) * mask
    voxels = voxels / voxels.sum(axis=1, keepdims=True) * energy[:, None] * 0.97
    return ShowerSet(geometry, voxels.astype(np.float32), energy, angle=angle,
                     meta={"particle": "eminus", "generator": "synthetic"})


def tiny_model(geometry: Geometry = TINY_CLIC, **changes) -> Gan3D:
    torch.manual_seed(0)
    config = Gan3D.tiny_config().replace(**changes)
    cond = Conditioning(names=("energy", "angle"), energy=(100e3, 200e3), angle=(60.0, 120.0))
    model = build_model("3dgan", geometry, config, cond)
    model.configure_optimizers()
    return model


def batch_of(s: ShowerSet) -> dict[str, torch.Tensor]:
    return {"voxels": torch.from_numpy(s.voxels), "conditions": torch.from_numpy(s.conditions())}


# ---- loss terms ------------------------------------------------------------------------------


def test_mape_is_percent_and_floors_the_denominator():
    pred, target = torch.tensor([110.0, 90.0, 50.0]), torch.tensor([100.0, 100.0, 100.0])
    assert mape(pred, target).item() == pytest.approx((10 + 10 + 50) / 3)
    assert mape(torch.tensor([0.5]), torch.tensor([0.0]), floor=1.0).item() == pytest.approx(50)
    assert mape(target, target).item() == 0.0


def test_mae():
    assert mae(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([2.0, 2.0, 1.0])).item() == (
        pytest.approx(4.0 / 3))


def test_pixel_spectrum_counts_per_bin_and_has_a_gradient():
    # 0.5 MeV is below the first edge and not counted; the last bin is open
    pixels = torch.tensor([[0.5, 5.0, 50.0, 55.0, 500.0, 5e4], [0.0, 0.0, 2.0, 3.0, 4.0, 0.0]])
    hard = pixel_spectrum(pixels, (1.0, 10.0, 100.0, 1000.0), softness=1e-3)
    torch.testing.assert_close(hard, torch.tensor([[1.0, 2.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0]]))
    x = torch.tensor([[9.0, 11.0]], requires_grad=True)
    soft = pixel_spectrum(x, (1.0, 10.0), softness=0.05)
    assert soft.sum().item() == pytest.approx(2.0, abs=1e-3)  # pixels are conserved
    soft[0, 1].backward()
    assert (x.grad > 0).all()  # moving up increases the upper bin's count


def test_label_switching_flips_the_stated_fraction():
    labels = torch.ones(20_000)
    flipped = flip_labels(labels, 0.05, torch.Generator().manual_seed(0))
    assert set(flipped.unique().tolist()) == {0.0, 1.0}
    assert 0.04 < (flipped == 0).float().mean().item() < 0.06
    zeros = flip_labels(torch.zeros(20_000), 0.05, torch.Generator().manual_seed(1))
    assert 0.04 < zeros.mean().item() < 0.06
    assert torch.equal(flip_labels(labels, 0.0), labels)
    with pytest.raises(CaloforgeError, match="label_flip_prob"):
        Gan3DConfig(label_flip_prob=0.7)


def test_power_transform_round_trip():
    mev = torch.tensor([0.0, 1e-3, 1.0, 1000.0, 8000.0])
    units = to_units(mev, 0.85, 1000.0)
    assert units[3].item() == pytest.approx(1.0)
    assert units[4].item() == pytest.approx(8.0**0.85, rel=1e-6)
    torch.testing.assert_close(to_mev(units, 0.85, 1000.0), mev, rtol=1e-5, atol=1e-9)
    assert to_units(torch.tensor([-3.0])).item() == 0.0


def test_loss_weights_default_to_the_seed():
    assert Gan3DConfig().loss_weights == (3.0, 0.1, 25.0, 0.1, 0.1)
    assert Gan3DConfig().voxel_power == 0.85 and Gan3DConfig().latent_size == 256


# ---- training schedule ---------------------------------------------------------------------


@pytest.mark.parametrize("generator_steps", [2, 3])
def test_generator_updated_twice_per_discriminator_step(generator_steps):
    model = tiny_model(generator_steps=generator_steps)
    assert isinstance(model.optimizers["generator"], torch.optim.RMSprop)
    assert isinstance(model.optimizers["discriminator"], torch.optim.RMSprop)
    calls: list[str] = []
    for name, opt in model.optimizers.items():
        original = opt.step

        def counted(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        opt.step = counted
    disc_before = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    metrics = model.training_step(batch_of(showers(TINY_CLIC, 8)), step=1)
    # one discriminator update on a real batch, one on a generated batch, then the generator
    assert calls == ["discriminator", "discriminator"] + ["generator"] * generator_steps
    assert all(np.isfinite(v) for v in metrics.values())
    assert {"g_ecal_mape", "g_spectrum_mape", "g_angle_mae", "d_energy_mape"} <= set(metrics)
    changed = [k for k, v in model.discriminator.state_dict().items()
               if not torch.equal(v, disc_before[k])]
    assert changed


def test_generator_steps_leave_the_discriminator_untouched():
    model = tiny_model()
    snapshot = {}
    original = model.optimizers["generator"].step

    def step(*args, **kwargs):
        if not snapshot:
            snapshot.update({k: v.clone() for k, v in model.discriminator.named_parameters()})
        return original(*args, **kwargs)

    model.optimizers["generator"].step = step
    model.training_step(batch_of(showers(TINY_CLIC, 8)), step=1)
    for k, v in model.discriminator.named_parameters():
        assert torch.equal(v, snapshot[k]), k
        assert v.requires_grad


def test_prepare_fits_the_deposited_fraction():
    model = tiny_model()
    s = showers(TINY_CLIC, 200)
    model.prepare(s)
    c = model.deposit_coeffs.tolist()
    assert c[0] == pytest.approx(0.97, rel=1e-4)
    assert abs(c[1]) < 1e-4 and abs(c[2]) < 1e-4
    e = torch.tensor([150.0])
    assert model.expected_deposit_gev(e, torch.tensor([75.0])).item() == pytest.approx(
        0.97 * 150, rel=1e-4)


def test_response_normalisation_draws_the_ecal_sum_from_the_fitted_response():
    model = tiny_model(response_normalisation=True)
    s = showers(TINY_CLIC, 400)
    rng = np.random.default_rng(3)
    # a deposited fraction 0.97 with a 2% relative spread, independent of the angle
    s.voxels *= (1.0 + 0.02 * rng.standard_normal(len(s))).astype(np.float32)[:, None]
    model.prepare(s)
    assert model.deposit_spread.item() == pytest.approx(0.02, rel=0.15)
    assert model.latent_shape() == (model.config.latent_size + 1,)
    latent = model.draw_latent(64, torch.Generator().manual_seed(1))
    cond = torch.stack([torch.linspace(100e3, 200e3, 64), torch.linspace(60.0, 120.0, 64)],
                       dim=1)
    with torch.no_grad():
        total = model.eval().decode(latent, cond).sum(dim=1)
    expected = (gev_expected := model.expected_deposit_gev(cond[:, 0] / 1e3, cond[:, 1])) \
        * 1e3 * (1.0 + model.deposit_spread * latent[:, -1])
    assert gev_expected.min() > 0
    torch.testing.assert_close(total, expected, rtol=1e-4, atol=0.0)
    # the energy term of the paper's loss is then only the drawn spread
    metrics = model.train().training_step(batch_of(s[:8]), 1)
    assert np.isfinite(list(metrics.values())).all()
    assert metrics["g_ecal_mape"] < 10.0
    # without it a checkpoint has no spread buffer (older runs load unchanged)
    assert "deposit_spread" not in dict(tiny_model().named_buffers())


# ---- layout -----------------------------------------------------------------------------------


def test_ragged_layers_pad_and_crop_exactly():
    model = tiny_model(RAGGED)
    assert model.grid == (3, 6, 3)
    v = torch.arange(RAGGED.n_voxels, dtype=torch.float32).reshape(1, -1) + 1
    grid = model.voxels_to_grid(v)
    assert grid.shape == (1, 1, 3, 6, 3)
    assert grid.sum().item() == v.sum().item()
    torch.testing.assert_close(model.grid_to_voxels(grid), v)
    # generated cells outside a layer's grid are zero
    model.eval()
    with torch.no_grad():
        latent = model.draw_latent(4)
        cond = torch.tensor([[150e3, 90.0]]).repeat(4, 1)
        out = model.generator(latent, cond[:, 0] / 1e3, model._scaled_angle(cond[:, 1]))
    assert (out[:, :, 2:, :, 0] == 0).all() and (out[:, :, :, 3:, 1] == 0).all()


def test_uniform_layout_matches_the_3dgan_file_order():
    model = tiny_model()
    v = torch.zeros(1, TINY_CLIC.n_voxels)
    v[0, TINY_CLIC.layer_offsets[2] + 6 * 1 + 4] = 7.0  # layer 2, row 1, col 4
    grid = model.voxels_to_grid(v)
    assert grid[0, 0, 1, 4, 2].item() == 7.0 and grid.sum().item() == 7.0


def test_subpixel_generator_shape_and_sample():
    model = tiny_model(gen_subpixel=True, gen_kernels=((2, 2, 2), (2, 2, 2), (2, 2, 2),
                                                        (1, 1, 1)))
    out = model.sample(torch.tensor([[120e3, 70.0], [180e3, 110.0]]))
    assert out.shape == (2, TINY_CLIC.n_voxels) and (out >= 0).all()
    assert model.training_step(batch_of(showers(TINY_CLIC, 6)), 1)


GRID24 = clic_like(24, 2)


def period3_spike(model: Gan3D, n: int = 32) -> float:
    """Power of the generated xy projections at a period of 3 cells (along the columns)
    over the mean power at the two neighbouring frequencies: ~1 or less for a smooth
    image, far above 1 for a pattern repeating every 3 cells."""
    model.eval()
    with torch.no_grad():
        latent = torch.randn(n, model.config.latent_size,
                             generator=torch.Generator().manual_seed(0))
        out = model.generator(latent, torch.full((n,), 150.0), torch.zeros(n))
    xy = out[:, 0].sum(dim=-1).double()
    xy = xy / xy.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    power = (torch.fft.rfft(xy, dim=2).abs() ** 2).mean(dim=(0, 1))
    k = xy.shape[-1] // 3
    return (power[k] / (0.5 * (power[k - 1] + power[k + 1]))).item()


@pytest.mark.parametrize(("changes", "periodic"), [
    ({"gen_subpixel": True, "gen_icnr": False}, True),
    ({"gen_subpixel": True, "gen_icnr": True}, False),
    ({"gen_subpixel": False}, False),
    ({"gen_subpixel": False, "gen_upsample_mode": "trilinear"}, False),
])
def test_generator_at_initialisation_has_no_periodic_pattern(changes, periodic):
    # a sub-pixel convolution gives each of the 3x3 sub-cells its own random filters: the
    # untrained generator prints a pattern of period 3 over the whole grid (the defect of
    # the first clic51 run); ICNR or a resize-convolution start without one
    model = tiny_model(GRID24, gen_upsample=(3, 3, 1), gen_channels=(4, 4, 4),
                       gen_kernels=((2, 2, 2), (3, 3, 2), (2, 2, 2), (1, 1, 1)), **changes)
    spike = period3_spike(model)
    assert spike > 5.0 if periodic else spike < 2.0


def test_window_generates_zeros_outside_and_round_trips():
    model = tiny_model(GRID24, window=(12, 10))
    assert model.generator.grid == (12, 10, 2)
    out = model.sample(torch.tensor([[150e3, 90.0]]).repeat(3, 1))
    grid = model.voxels_to_grid(out)
    inside = torch.zeros(24, 24, dtype=torch.bool)
    inside[6:18, 7:17] = True
    assert (grid[:, :, ~inside] == 0).all() and (grid[:, :, inside] > 0).any()
    full = torch.rand(2, 1, 24, 24, 2)
    window = model.crop(full)
    assert window.shape == (2, 1, 12, 10, 2)
    torch.testing.assert_close(model.crop(model.uncrop(window)), window)
    assert model.training_step(batch_of(showers(GRID24, 6)), 1)
    with pytest.raises(CaloforgeError, match="window"):
        Gan3DConfig(window=(5, -1))


@pytest.mark.parametrize("target", ["batch", "shower"])
def test_spectrum_target_batch_or_the_shower_of_the_same_conditions(target):
    """The generated showers here are the real ones; "shower" compares each with the real
    shower of its conditions, "batch" only the batches' mean spectra."""
    model = tiny_model(spectrum_target=target, spectrum_edges_mev=(0.1, 1.0, 10.0, 100.0))
    s = showers(TINY_CLIC, 8)
    batch = batch_of(s)
    real = model._units(model.crop(model.voxels_to_grid(batch["voxels"])))
    key = batch["conditions"][:, 0]

    def as_conditioned(gen, latent, cond):  # the real shower of these conditions
        rows = (cond[:, :1] == key[None, :]).float().argmax(dim=1)
        return real[rows].clone().requires_grad_(True)

    def in_real_order(gen, latent, cond):  # the real showers, whatever the conditions
        return real.clone().requires_grad_(True)

    model._generate_units = as_conditioned
    assert model.training_step(batch, step=1)["g_spectrum_mape"] == pytest.approx(0, abs=1e-4)
    model._generate_units = in_real_order
    mismatched = model.training_step(batch, step=2)["g_spectrum_mape"]
    if target == "batch":
        assert mismatched == pytest.approx(0, abs=1e-4)
    else:
        assert mismatched > 1.0


def test_softplus_output_fills_every_cell_and_relu_leaves_empty_ones():
    s = showers(TINY_CLIC, 4)
    grids = {}
    for output in ("relu", "softplus"):
        model = tiny_model(gen_output=output)
        with torch.no_grad():
            grids[output] = model._generate_units(model.generator, model.draw_latent(4),
                                                  torch.from_numpy(s.conditions()))
    assert (grids["relu"] == 0).any()  # empty cells: no gradient reaches them
    assert (grids["softplus"] > 0).all()
    with pytest.raises(CaloforgeError, match="gen_output"):
        Gan3DConfig(gen_output="tanh")


def test_shower_moments_of_known_grids():
    grid = torch.zeros(2, 1, 5, 6, 9)
    grid[0, 0, 1, 4, 7] = 1000.0  # one cell, in the back third of the depth
    grid[1, 0, 0, 0, 0] = 500.0  # two cells of the front third, 2 apart along x
    grid[1, 0, 2, 0, 0] = 500.0
    m = shower_moments(grid)
    assert m.shape == (2, 11)
    torch.testing.assert_close(m[:, 0], torch.tensor([3.0, 3.0]))  # log10 ECAL sum, MeV
    torch.testing.assert_close(m[:, 1], torch.log10(torch.tensor([2.0, 3.0])), atol=1e-3,
                               rtol=0)  # log10(hit cells + 1)
    torch.testing.assert_close(m[0, 2:5], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(m[1, 2:5], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(m[0, 5:8], torch.tensor([1.0, 4.0, 7.0]))  # barycentre
    torch.testing.assert_close(m[1, 5:8], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(m[1, 8:11], torch.tensor([1.0, 0.0, 0.0]), atol=2e-3, rtol=0)
    # differentiable: the generator's gradient reaches every cell's deposit
    x = grid.clone().requires_grad_(True)
    shower_moments(x)[:, 5:].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_discriminator_sees_the_shower_moments_when_asked():
    s = showers(TINY_CLIC, 64)
    plain = tiny_model()
    assert not hasattr(plain.discriminator, "moments")  # older runs load unchanged
    model = tiny_model(disc_moments=True)
    model.prepare(s)
    disc = model.discriminator
    grid = model._units(model.crop(model.voxels_to_grid(torch.from_numpy(s.voxels))))
    feats = shower_moments(to_mev(grid))
    # standardised with the training showers' mean and spread
    torch.testing.assert_close(disc.moment_mean, feats.mean(dim=0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(disc.moment_std, feats.std(dim=0).clamp_min(1e-3), rtol=1e-4,
                               atol=1e-5)
    # the logits depend on the moment branch: the same pixels, standardised differently,
    # give another real/fake logit
    with torch.no_grad():
        logit, _, _ = disc.eval()(grid)
        disc.moment_mean += 1.0
        shifted, _, _ = disc(grid)
    assert not torch.allclose(logit, shifted)
    metrics = model.train().training_step(batch_of(s[:8]), 1)
    assert np.isfinite(list(metrics.values())).all()


def test_batch_statistics_are_the_spreads_and_pairwise_correlations():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(500, 4))
    z[:, 1] = 0.6 * z[:, 0] + 0.8 * z[:, 1]  # correlation 0.6 with feature 0
    z[:, 3] *= 3.0
    pairs = torch.triu_indices(4, 4, 1)
    stats = batch_statistics(torch.from_numpy(z), pairs)[0].numpy()
    np.testing.assert_allclose(np.exp(stats[:4]), z.std(axis=0), rtol=1e-5)
    corr = np.corrcoef(z.T)[pairs[0].numpy(), pairs[1].numpy()]
    np.testing.assert_allclose(stats[4:], corr, atol=1e-5)
    assert abs(stats[4] - 0.6) < 0.1  # the (0, 1) pair
    one = batch_statistics(torch.ones(1, 4, dtype=torch.float64), pairs)[0]
    assert torch.isfinite(one).all() and (one[4:] == 0).all()


def test_discriminator_sees_the_batch_statistics_when_asked():
    s = showers(TINY_CLIC, 64)
    model = tiny_model(disc_batch_moments=True)
    assert not hasattr(model.discriminator, "moments")  # independent of disc_moments
    model.prepare(s)
    disc = model.discriminator.eval()  # batch norm on running statistics: showers apart
    grid = model._units(model.crop(model.voxels_to_grid(torch.from_numpy(s.voxels))))
    cond = model._disc_conditions(torch.from_numpy(s.conditions()))
    # the conditions are standardised with the training showers' mean and spread
    torch.testing.assert_close(disc.condition_mean, cond.mean(dim=0))
    torch.testing.assert_close(disc.condition_std, cond.std(dim=0))
    with torch.no_grad():
        alone = torch.cat([disc(grid[i:i + 1], cond[i:i + 1])[0] for i in range(4)])
        together, _, _ = disc(grid[:4], cond[:4])
        other, _, _ = disc(torch.cat([grid[:1], grid[4:7]]), torch.cat([cond[:1], cond[4:7]]))
        # the same showers told they were made for other conditions
        swapped, _, _ = disc(grid[:4], cond[:4].flip(0))
    # a shower's logit depends on the batch it is shown in, through the statistics only,
    # and on the conditions the batch was made for
    assert not torch.allclose(together, alone)
    assert not torch.allclose(together[0], other[0])
    assert not torch.allclose(together, swapped)
    with pytest.raises(ValueError, match="conditions"):
        disc(grid[:4])
    plain = tiny_model(disc_moments=True)
    plain.prepare(s)
    with torch.no_grad():
        d = plain.discriminator.eval()
        torch.testing.assert_close(d(grid[:4])[0], torch.cat([d(grid[i:i + 1])[0]
                                                                for i in range(4)]))
    metrics = model.train().training_step(batch_of(s[:8]), 1)
    assert np.isfinite(list(metrics.values())).all()
    # the generator receives gradients through the batch statistics
    model.generator.zero_grad()
    fake = model._generate_units(model.generator, model.draw_latent(8),
                                 torch.from_numpy(s[:8].conditions()))
    z = (shower_moments(to_mev(fake)) - disc.moment_mean) / disc.moment_std
    stats = batch_statistics(torch.cat([z, cond[:8]], dim=1), disc.pairs)
    stats.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.generator.parameters())


def test_mirror_y_mirrors_on_a_latent_component_the_network_does_not_see():
    model = tiny_model(mirror_y=True, response_normalisation=True)
    model.prepare(showers(TINY_CLIC, 64))
    assert model.latent_shape() == (model.config.latent_size + 2,)
    latent = model.draw_latent(8, torch.Generator().manual_seed(2))
    latent[:, -1] = -1.0
    other = latent.clone()
    other[:, -1] = 1.0
    cond = torch.from_numpy(showers(TINY_CLIC, 8).conditions())
    with torch.no_grad():
        plain = model.eval()._generate_units(model.generator, latent, cond)
        mirrored = model._generate_units(model.generator, other, cond)
    torch.testing.assert_close(mirrored, plain.flip(3))  # (B, 1, x, y, z): y mirrored
    assert not torch.allclose(mirrored, plain)
    # the response is still drawn from its own component, the one before
    torch.testing.assert_close(model._mev(mirrored).sum(dim=(1, 2, 3, 4)),
                               model._mev(plain).sum(dim=(1, 2, 3, 4)))
    metrics = model.train().training_step(batch_of(showers(TINY_CLIC, 8)), 1)
    assert np.isfinite(list(metrics.values())).all()
    with pytest.raises(CaloforgeError, match="mirror_y"):
        tiny_model(RAGGED, mirror_y=True)


def test_bad_spectrum_target_is_refused():
    with pytest.raises(CaloforgeError, match="spectrum_target"):
        Gan3DConfig(spectrum_target="layer")


def test_bad_kernels_are_refused():
    with pytest.raises(CaloforgeError, match="four"):
        Gan3DConfig(gen_kernels=((2, 2, 2),))


# ---- the 3DGAN file layout -----------------------------------------------------------------


def _public_file(path, angle_key: str | None):
    ecal = np.zeros((2, 51, 51, 25), np.float32)
    ecal[0, 3, 5, 7] = 2.0  # GeV, (x, y, z)
    ecal[1, 25, 25, 0] = 1.5
    with h5py.File(path, "w") as f:
        f["ECAL"] = ecal
        f["energy"] = np.array([150.0, 120.0], np.float32)  # GeV
        if angle_key == "theta":
            f["theta"] = np.radians([60.0, 100.0]).astype(np.float32)
        elif angle_key == "eta":
            f["eta"] = np.array([0.0, -np.log(np.tan(np.radians(60.0) / 2))], np.float32)


@pytest.mark.parametrize(("key", "expected"), [("theta", [60.0, 100.0]), ("eta", [90.0, 60.0]),
                                                (None, [90.0, 90.0])])
def test_reader_accepts_public_3dgan_files(tmp_path, key, expected):
    path = tmp_path / f"public_{key}.h5"
    _public_file(path, key)
    s = read_showers(path)
    assert s.geometry is CLIC51
    np.testing.assert_allclose(s.incident_energy, [150e3, 120e3])
    np.testing.assert_allclose(s.angle, expected, atol=1e-3)
    layer7 = s.voxels[0, CLIC51.layer_slice(7)].reshape(51, 51)
    assert layer7[3, 5] == pytest.approx(2000.0) and s.voxels[0].sum() == pytest.approx(2000.0)
    assert s.voxels[1, CLIC51.layer_slice(0)].reshape(51, 51)[25, 25] == pytest.approx(1500.0)


# ---- CLI end to end on a tiny CLIC-like file ------------------------------------------------


def test_cli_train_and_generate_on_a_tiny_clic_like_file(tmp_path):
    data = tmp_path / "tiny_clic.h5"
    write_showers(data, showers(TINY_CLIC, 24))
    with h5py.File(data) as f:
        assert f["ECAL"].shape == (24, 6, 6, 4) and "theta" in f
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "train": {"batch_size": 8, "num_threads": 1, "log_every": 1, "tensorboard": False},
        "model": Gan3D.tiny_config().to_dict()}))
    rundir = tmp_path / "run"
    main(["train", "3dgan", "--data", str(data), "--out", str(rundir), "--config", str(config),
          "--max-steps", "2", "--device", "cpu", "--seed", "1", "-q"])
    assert (rundir / "checkpoint.pt").exists()
    out = tmp_path / "gen.h5"
    main(["generate", str(rundir), "-n", "5", "--energy", "120:180", "--angle", "70:110",
          "-o", str(out), "-q"])
    gen = read_showers(out)
    assert gen.geometry.name == TINY_CLIC.name and len(gen) == 5
    assert np.isfinite(gen.voxels).all() and (gen.voxels >= 0).all()
    assert ((gen.incident_energy >= 120e3 - 1) & (gen.incident_energy <= 180e3 + 1)).all()
    assert ((gen.angle >= 70 - 1e-3) & (gen.angle <= 110 + 1e-3)).all()


def test_train_help_lists_the_registered_models():
    from caloforge.cli.main import COMMANDS, _model_names
    from caloforge.models import available_models

    assert _model_names() == available_models()
    assert "3dgan" in COMMANDS["train"][2] and "gan3d" not in COMMANDS["train"][2]


@pytest.mark.parametrize("changes", [
    {"gen_subpixel": True, "gen_kernels": ((2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1))},
    {"window": (4, 4), "gen_upsample_mode": "trilinear"},
    {"window": (4, 4), "response_normalisation": True},
    {"response_normalisation": True, "mirror_y": True, "disc_moments": True},
    {"disc_batch_moments": True},
])
def test_model_exports_to_onnx_with_parity(tmp_path, changes):
    from caloforge.export import export_onnx

    model = tiny_model(**changes)
    model.training_step(batch_of(showers(TINY_CLIC, 8)), 1)
    contract = export_onnx(model.eval(), tmp_path / "g.onnx")
    assert contract["parity"]["passed"]
