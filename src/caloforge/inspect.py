"""A shower file at a glance: counts, energy ranges, layer fractions and average images.

The library behind ``caloforge inspect``: :func:`summarize_file` streams a file once,
:func:`summary_text` formats the one-screen summary and :func:`plot_average_layers` draws
the average shower image of each layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from caloforge.data import file_info, iter_showers
from caloforge.errors import CaloforgeError
from caloforge.units import mev_to_gev

__all__ = ["summarize_file", "summary_text", "plot_average_layers"]


def summarize_file(path: str | Path, max_showers: int | None = None) -> dict:
    """Read a shower file once, in chunks, into the figures :func:`summary_text` prints.

    Args:
        path: a shower file in any format caloforge reads.
        max_showers: read only the first this many showers (``None``: all).

    Returns:
        ``info`` (:func:`caloforge.data.file_info`), ``geometry``, ``n``, ``energy``
        (min, max incident energy, GeV), ``angle`` (min, max degrees, or ``None``),
        ``fractions`` (mean deposit fraction per layer), ``response`` (mean
        E_dep / E_inc), ``overflow`` (mean overflow per layer, MeV, or ``None`` when the
        file has none), ``mean_image`` (mean deposit per voxel, MeV) and ``nonzero``
        (mean fraction of non-zero cells per layer).

    Raises:
        CaloforgeError: an unreadable file, non-finite values, or no showers.
    """

    info = file_info(path)
    geometry = info.geometry
    n = 0
    e_min, e_max = np.inf, -np.inf
    a_min, a_max = np.inf, -np.inf
    frac_sum = np.zeros(geometry.n_layers)
    resp_sum = 0.0
    overflow_sum = np.zeros(geometry.n_layers)
    has_overflow = False
    voxel_sum = np.zeros(geometry.n_voxels)
    nonzero_sum = np.zeros(geometry.n_layers)
    for chunk in iter_showers(path, stop=max_showers):
        chunk.check_finite(str(path))
        n += len(chunk)
        e = chunk.incident_energy.astype(np.float64)
        e_min, e_max = min(e_min, e.min()), max(e_max, e.max())
        if chunk.angle is not None:
            a_min, a_max = min(a_min, chunk.angle.min()), max(a_max, chunk.angle.max())
        layers = chunk.layer_energies().astype(np.float64)
        total = layers.sum(axis=1)
        frac_sum += (layers / np.where(total > 0, total, 1.0)[:, None]).sum(axis=0)
        resp_sum += float((total / e).sum())
        if chunk.overflow is not None:
            has_overflow = True
            overflow_sum += chunk.overflow.sum(axis=0)
        voxel_sum += chunk.voxels.sum(axis=0, dtype=np.float64)
        nonzero_sum += [(layer > 0).reshape(len(chunk), -1).mean(axis=1).sum()
                        for layer in chunk.layers]
    if n == 0:
        raise CaloforgeError(f"{path}: file holds no showers")
    return {
        "info": info, "geometry": geometry, "n": n,
        "energy": (mev_to_gev(e_min), mev_to_gev(e_max)),
        "angle": None if not np.isfinite(a_min) else (a_min, a_max),
        "fractions": frac_sum / n, "response": resp_sum / n,
        "overflow": overflow_sum / n if has_overflow else None,
        "mean_image": voxel_sum / n, "nonzero": nonzero_sum / n,
    }


def summary_text(path: str | Path, s: dict) -> str:
    """The one-screen summary of :func:`summarize_file`'s figures (energies in GeV)."""
    info, g = s["info"], s["geometry"]
    meta = info["meta"]
    lines = [
        f"file       {path}",
        f"geometry   {g.name} ({info['format']} format, {g.n_layers} layers, "
        f"{g.n_voxels} voxels)",
        f"particle   {meta.get('particle', 'unknown')}    generator "
        f"{meta.get('generator', 'unknown')}"
        + (f" ({meta['generator_version']})" if meta.get("generator_version") else "")
        + f"    seed {meta.get('seed', '-')}",
        f"showers    {s['n']}",
        f"energy     {s['energy'][0]:.4g} to {s['energy'][1]:.4g} GeV (incident)",
    ]
    if s["angle"] is not None:
        lines.append(f"angle      {s['angle'][0]:.4g} to {s['angle'][1]:.4g} deg")
    lines.append(f"deposit    mean E_dep / E_inc = {s['response']:.4f}")
    if s["overflow"] is not None:
        lines.append("overflow   " + "  ".join(f"{x:.4g}" for x in s["overflow"]) +
                     "  MeV (mean per layer)")
    lines.append("layer          energy fraction   occupancy (fraction of cells non-zero)")
    shown = range(g.n_layers)
    if g.n_layers > 12:  # keep one screen: every other layer of deep calorimeters
        shown = range(0, g.n_layers, 2)
    for i in shown:
        lines.append(f"  {g.layers[i].name:<12} {s['fractions'][i]:15.4f}   "
                     f"{s['nonzero'][i]:9.3f}")
    if g.n_layers > 12:
        lines.append("  (every other layer shown)")
    return "\n".join(lines)


def plot_average_layers(s: dict, folder: str | Path) -> list[Path]:
    """One PNG per layer (average image of :func:`summarize_file`, MeV, log colour scale)
    plus an overview of all layers, written into ``folder``.

    Returns:
        The paths written.

    Raises:
        CaloforgeError: the folder cannot be created.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    g = s["geometry"]
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CaloforgeError(f"cannot create plot folder {folder}: {err}") from None
    images = g.split_layers(s["mean_image"][None, :])
    positive = s["mean_image"][s["mean_image"] > 0]
    vmax = float(positive.max()) if len(positive) else 1.0
    vmin = max(vmax * 1e-6, float(positive.min()) if len(positive) else 1e-6)
    norm = LogNorm(vmin=vmin, vmax=vmax)
    paths = []

    def draw(ax, i):
        layer = g.layers[i]
        img = np.where(images[i][0] > 0, images[i][0], np.nan)
        artist = ax.imshow(img, norm=norm, cmap="viridis", aspect="auto",
                           interpolation="nearest")
        ax.set_title(f"{layer.name}: {s['fractions'][i]:.3f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        return artist

    particle = s["info"]["meta"].get("particle", "")
    for i, layer in enumerate(g.layers):
        fig, ax = plt.subplots(figsize=(4, 3.2))
        artist = draw(ax, i)
        fig.colorbar(artist, ax=ax, label="mean deposit [MeV]")
        fig.suptitle(f"{g.name} {particle}, N = {s['n']}", fontsize=9)
        path = folder / f"average_{i:02d}_{layer.name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    cols = min(g.n_layers, 5)
    rows = int(np.ceil(g.n_layers / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.6 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < g.n_layers:
            artist = draw(ax, i)
        else:
            ax.axis("off")
    fig.colorbar(artist, ax=axes, label="mean deposit [MeV]")
    path = folder / "average_layers.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
    return paths
