"""Generate showers from a trained model, in chunks, into memory or a file.

Incident energies are drawn uniformly in the requested range (GeV) with a numpy
generator, latent noise with a torch generator, both seeded by ``seed``: the same seed,
range and batch size give the same file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from caloforge.data.formats import ShowerWriter
from caloforge.data.showers import ShowerSet
from caloforge.data.threshold import apply_threshold
from caloforge.errors import CaloforgeError
from caloforge.models.base import GenerativeModel
from caloforge.units import gev_to_mev, mev_to_gev

__all__ = ["generate", "generate_to_file", "sample_conditions", "scan", "plot_scan"]


def sample_conditions(model: GenerativeModel, n: int, energy_range: tuple[float, float] | None,
                      angle_range: tuple[float, float] | None,
                      rng: np.random.Generator) -> np.ndarray:
    """``(n, n_conditions)`` conditions (energy MeV, angle degrees) drawn uniformly in the
    requested ranges (GeV, degrees; ``None``: the trained range), checked against the
    trained range.

    Raises:
        CaloforgeError: a reversed range, a range outside the trained one, or an angle
            for a model trained without one.
    """
    cond = model.conditioning
    if energy_range is None:
        lo, hi = cond.energy
    else:
        lo, hi = (gev_to_mev(float(energy_range[0])),
                  gev_to_mev(float(energy_range[1])))
        if lo > hi:
            raise CaloforgeError(
                f"energy range {mev_to_gev(lo):g}:{mev_to_gev(hi):g} GeV is reversed")
    cond.check_energy(lo, hi)
    cols = [rng.uniform(lo, hi, n)]
    if "angle" in cond.names:
        a_lo, a_hi = angle_range if angle_range is not None else cond.angle
        cond.check_angle(a_lo, a_hi)
        cols.append(rng.uniform(a_lo, a_hi, n))
    elif angle_range is not None:
        raise CaloforgeError(f"model {model.family!r} was trained without an angle condition")
    return np.stack(cols, axis=1).astype(np.float32)


def generate(model: GenerativeModel, n: int, energy_range: tuple[float, float] | None = None,
             angle_range: tuple[float, float] | None = None, batch_size: int = 1024,
             seed: int = 0, threshold_mev: float | None = None) -> Iterator[ShowerSet]:
    """Generate ``n`` showers, yielded as ShowerSets of at most ``batch_size``.

    Args:
        model: a trained model (see :func:`caloforge.train.load_run`).
        n: number of showers.
        energy_range: incident energy range in GeV (``None``: the trained range).
        angle_range: polar angle range in degrees, for models conditioned on it.
        batch_size: showers per forward pass and per yielded chunk.
        seed: random seed.
        threshold_mev: readout threshold in MeV per voxel: generated deposits below it are
            set to 0 (:func:`caloforge.data.threshold.apply_threshold`). ``None``: the
            threshold recorded with the training data (``threshold_MeV``), if any, else no
            threshold.

    Yields:
        ShowerSet chunks in MeV, ``meta`` holding particle, generator (the model family),
        seed, and ``threshold_MeV`` when a threshold was applied.

    Raises:
        CaloforgeError: a non-positive count or batch size, an energy or angle range
            outside the trained one, or non-finite energies from the model.

    Examples:
        >>> from caloforge.geometry import get_geometry
        >>> from caloforge.models import Conditioning, build_model, get_model_class
        >>> model = build_model("calogan", get_geometry("calogan"),
        ...                     get_model_class("calogan").tiny_config(), Conditioning())
        >>> chunks = list(generate(model, 5, energy_range=(10, 20), batch_size=4, seed=1))
        >>> [len(c) for c in chunks], chunks[0].voxels.shape[1]
        ([4, 1], 504)
        >>> bool(all(1e4 <= e <= 2e4 for c in chunks for e in c.incident_energy))  # MeV
        True
    """
    if n < 1:
        raise CaloforgeError(f"number of showers must be positive, got {n}")
    if batch_size < 1:
        raise CaloforgeError(f"batch size must be positive, got {batch_size}")
    rng = np.random.default_rng(seed)
    conditions = sample_conditions(model, n, energy_range, angle_range, rng)
    device = model.device
    gen = torch.Generator(device=device).manual_seed(int(seed))
    meta = {"particle": model.run_info.get("particle") or "unknown",
            "generator": model.family, "seed": int(seed),
            "model_step": int(model.run_info.get("step") or 0)}
    data = model.run_info.get("data") or {}
    if data.get("generator_version"):  # the simulator version the model learned
        meta["training_generator_version"] = str(data["generator_version"])
    if threshold_mev is None:
        threshold_mev = data.get("threshold_MeV")
    if threshold_mev is not None:
        meta["threshold_MeV"] = float(threshold_mev)
    model.eval()
    for lo in range(0, n, batch_size):
        c = conditions[lo:lo + batch_size]
        voxels = model.sample(torch.from_numpy(c).to(device), generator=gen)
        voxels = voxels.detach().float().cpu().numpy()
        if threshold_mev is not None:
            voxels = apply_threshold(voxels, threshold_mev, copy=False)
        if not np.all(np.isfinite(voxels)):
            raise CaloforgeError(f"model {model.family!r} produced NaN or infinite energies")
        angle = c[:, 1] if "angle" in model.conditioning.names else None
        yield ShowerSet(model.geometry, voxels, c[:, 0], angle=angle, meta=dict(meta))


def generate_to_file(rundir: str | Path, path: str | Path, n: int,
                     energy_range: tuple[float, float] | None = None,
                     angle_range: tuple[float, float] | None = None, batch_size: int = 1024,
                     seed: int = 0, device: str = "cpu", progress: bool = True,
                     sampler: str | None = None, threshold_mev: float | None = None) -> Path:
    """Generate ``n`` showers from the run in ``rundir`` (a run directory or a pretrained
    name) into ``path`` (atomic, streamed).

    The file has the training data's layout (the geometry's format) with the attributes
    ``generator`` (model family), ``particle``, ``seed``, ``model_step`` and ``run``, and
    ``sampler`` for models with several samplers (the one used; ``sampler=None`` picks
    the model's default), ``threshold_MeV`` when a readout threshold was applied (see
    :func:`generate`) and ``training_generator_version`` when the training data named its
    simulator version (``caloforge evaluate`` warns when the reference is another one).
    Returns the path written.

    Raises:
        CaloforgeError: no such run or pretrained model, a sampler the model does not have or
            cannot use yet, a bad count or range (see :func:`generate`).
    """
    from tqdm.auto import tqdm

    from caloforge.pretrained import resolve_run
    from caloforge.train.checkpoint import load_run

    rundir = resolve_run(rundir)
    model = load_run(rundir, device)
    model.use_sampler(sampler)
    extra = {"sampler": model.sampler} if model.samplers else {}
    chunks = generate(model, n, energy_range, angle_range, batch_size, seed, threshold_mev)
    first = next(chunks)
    attrs = {**first.meta, **extra, "run": str(Path(rundir).resolve())}
    with ShowerWriter(path, model.geometry, attrs) as writer, tqdm(
        total=n, unit="shower", desc=f"generate {model.family}", disable=not progress
    ) as bar:
        writer.write(first)
        bar.update(len(first))
        for chunk in chunks:
            writer.write(chunk)
            bar.update(len(chunk))
    return Path(path)


def scan(model: GenerativeModel, vary: str = "energy", n: int = 10,
         energy_range: tuple[float, float] | None = None, direction: int = 0,
         span: float = 3.0, seed: int = 0) -> tuple[ShowerSet, np.ndarray]:
    """Showers from one fixed latent vector while one thing varies (the CaloGAN figure).

    Args:
        model: a trained model with a latent space.
        vary: ``"energy"``: the incident energy runs over ``energy_range`` (GeV) in ``n``
            even steps; ``"x"``: latent component ``direction`` runs over
            ``[-span, span]`` at the middle of ``energy_range``.
        n: number of showers.
        energy_range: GeV (``None``: the trained range).
        direction: latent component varied with ``vary="x"``.
        span: half-width of the latent scan, in standard deviations.
        seed: seed of the fixed latent vector.

    Returns:
        ``(showers, values)``: the showers and the varied values (GeV or latent units).

    Raises:
        CaloforgeError: a model without a latent space or with an angle condition, an
            energy range outside the trained one, a bad ``direction`` or ``vary``.
    """
    shape = model.latent_shape()
    if shape is None:
        raise CaloforgeError(f"model {model.family!r} has no latent space to scan")
    cond = model.conditioning
    lo, hi = (cond.energy if energy_range is None
              else (gev_to_mev(energy_range[0]), gev_to_mev(energy_range[1])))
    cond.check_energy(lo, hi)
    if "angle" in cond.names:
        raise CaloforgeError("scan supports energy-conditioned models only")
    gen = torch.Generator(device=model.device).manual_seed(int(seed))
    latent = model.draw_latent(1, gen).repeat(n, *([1] * len(shape)))
    if vary == "energy":
        energies = np.linspace(lo, hi, n, dtype=np.float32)
        values = mev_to_gev(energies)
    elif vary == "x":
        flat = int(np.prod(shape))
        if not 0 <= direction < flat:
            raise CaloforgeError(f"--direction must be in [0, {flat - 1}], got {direction}")
        values = np.linspace(-span, span, n, dtype=np.float32)
        latent.view(n, -1)[:, direction] = torch.from_numpy(values).to(latent.device)
        energies = np.full(n, 0.5 * (lo + hi), dtype=np.float32)
    else:
        raise CaloforgeError(f"cannot vary {vary!r}; choose energy or x")
    model.eval()
    with torch.no_grad():
        c = torch.from_numpy(energies).reshape(-1, 1).to(model.device)
        voxels = model.decode(latent, c).float().cpu().numpy()
    meta = {"particle": model.run_info.get("particle") or "unknown", "generator": model.family,
            "seed": int(seed)}
    return ShowerSet(model.geometry, voxels, energies, meta=meta), values


def plot_scan(showers: ShowerSet, values: np.ndarray, label: str, path: str | Path) -> Path:
    """One row per shower, one column per layer, log colour scale in MeV; saved to
    ``path`` (PNG or PDF)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    layers = showers.layers
    n, n_layers = len(showers), len(layers)
    positive = showers.voxels[showers.voxels > 0]
    vmin = max(float(np.percentile(positive, 1)) if positive.size else 1e-3, 1e-3)
    vmax = max(float(showers.voxels.max()), vmin * 10)
    fig, axes = plt.subplots(n, n_layers, figsize=(3.2 * n_layers, 1.1 * n + 0.8),
                             squeeze=False, constrained_layout=True)
    for i in range(n):
        for j in range(n_layers):
            ax = axes[i, j]
            img = np.where(layers[j][i] > 0, layers[j][i], np.nan)
            im = ax.imshow(img, aspect="auto", norm=LogNorm(vmin, vmax), cmap="viridis",
                           interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(showers.geometry.layers[j].name, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{values[i]:.3g}", fontsize=8, rotation=0, labelpad=18)
    fig.colorbar(im, ax=axes, shrink=0.6, label="deposit [MeV]")
    fig.suptitle(f"{showers.meta.get('generator', '')} {showers.particle}: {label}",
                 fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
