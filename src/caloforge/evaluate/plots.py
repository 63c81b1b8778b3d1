"""Figures of the evaluation, written as PNG files (matplotlib, Agg backend, no LaTeX).

Every function takes already computed numbers (histogram inputs, average images,
profiles) and a path, draws one figure and closes it. The mplhep CMS-like style is used
when mplhep happens to be installed; nothing else depends on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from caloforge.geometry import Geometry

__all__ = [
    "setup_style",
    "plot_histograms",
    "plot_average_images",
    "plot_energy_response",
    "plot_cell_spectrum",
    "plot_neighbours",
    "REFERENCE_COLOUR",
    "GENERATED_COLOUR",
]

REFERENCE_COLOUR = "#7a7a7a"
GENERATED_COLOUR = "#d9480f"
_DPI = 90
_STYLED = False


def setup_style():
    """Select the Agg backend (and mplhep's style if installed); return ``pyplot``."""
    global _STYLED
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not _STYLED:
        plt.rcParams.update({"text.usetex": False, "font.size": 9, "axes.titlesize": 9,
                             "legend.fontsize": 8, "figure.dpi": _DPI})
        try:  # optional: a common HEP look
            import mplhep

            plt.style.use(mplhep.style.ROOT)
            plt.rcParams.update({"text.usetex": False, "font.size": 9, "axes.titlesize": 9,
                                 "axes.labelsize": 9, "legend.fontsize": 8,
                                 "xtick.labelsize": 8, "ytick.labelsize": 8})
        except Exception:  # noqa: BLE001 - mplhep missing or its style unusable: plain style
            pass
        _STYLED = True
    return plt


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, n)
    return int(math.ceil(n / cols)), cols


def _density(counts: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    total = max(counts.sum(), 1)
    widths = np.diff(edges)
    return counts / total / widths, np.sqrt(counts) / total / widths


def _quiet_axis(ax, log_x: bool = False, log_y: bool = False) -> None:
    """Few ticks and no minor ticks: tick layout dominates the time of many-panel figures."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

    for axis, log in ((ax.xaxis, log_x), (ax.yaxis, log_y)):
        if log:
            low, high = sorted(abs(v) for v in axis.get_view_interval())
            decades = np.log10(high / low) if low > 0 else np.inf
            # short log ranges: label 1-2-5 steps, plain numbers
            subs = (1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)
            axis.set_major_locator(LogLocator(subs=subs, numticks=6))
            if decades < 2.5:
                axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            axis.set_major_locator(MaxNLocator(4))
        axis.set_minor_locator(NullLocator())


def plot_histograms(panels: Sequence[dict], path: str | Path, title: str = "",
                    labels: tuple[str, str] = ("reference", "generated")) -> Path:
    """One figure of histograms with ratio panels, one panel per observable.

    Args:
        panels: dicts with ``edges``, ``reference`` and ``generated`` (bin counts on the
            same edges), ``label`` (x axis), ``log`` (log x axis) and optional
            ``separation`` (shown in the panel).
        path: PNG to write.
        title: figure title.
        labels: legend names of the two samples.
    """
    plt = setup_style()
    rows, cols = _grid(len(panels))
    height = 3.2 * rows + 0.5
    fig = plt.figure(figsize=(3.4 * cols, height))
    outer = fig.add_gridspec(rows, cols, hspace=0.38, wspace=0.34, left=0.22 / cols + 0.03,
                             right=0.98, top=1.0 - 0.5 / height, bottom=0.45 / height)
    for k, panel in enumerate(panels):
        r, c = divmod(k, cols)
        inner = outer[r, c].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.0)
        top = fig.add_subplot(inner[0])
        bottom = fig.add_subplot(inner[1])
        edges = np.asarray(panel["edges"], dtype=np.float64)
        ref, ref_err = _density(np.asarray(panel["reference"]), edges)
        gen, gen_err = _density(np.asarray(panel["generated"]), edges)
        top.stairs(ref, edges, fill=True, color=REFERENCE_COLOUR, alpha=0.45, label=labels[0])
        top.stairs(gen, edges, color=GENERATED_COLOUR, linewidth=1.4, label=labels[1])
        log_y = bool(np.any(ref > 0) or np.any(gen > 0))
        if log_y:
            top.set_yscale("log")
        log_x = bool(panel.get("log"))
        for ax in (top, bottom):
            if log_x:
                ax.set_xscale("log")
            ax.set_xlim(edges[0], edges[-1])
        if "separation" in panel:
            top.text(0.98, 0.97, f"S = {panel['separation']:.3g}", transform=top.transAxes,
                     ha="right", va="top", fontsize=7)
        top.tick_params(labelbottom=False)
        if k == 0:
            top.legend(loc="upper left", frameon=False, fontsize=7)
        centres = 0.5 * (edges[1:] + edges[:-1])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(ref > 0, gen / ref, np.nan)
            err = np.where(ref > 0, np.hypot(gen_err / ref, gen * ref_err / ref**2), np.nan)
        bottom.axhline(1.0, color="black", linewidth=0.6)
        bottom.errorbar(centres, ratio, yerr=err, fmt=".", markersize=2.5, linewidth=0.7,
                        color=GENERATED_COLOUR)
        bottom.set_ylim(0.5, 1.5)
        bottom.set_ylabel("gen/ref", fontsize=7)
        bottom.set_xlabel(panel.get("label", ""), labelpad=1)
        _quiet_axis(top, log_x, log_y)
        _quiet_axis(bottom, log_x)
        bottom.yaxis.set_major_locator(_fixed([0.6, 1.0, 1.4]))
    if title:
        fig.suptitle(title, y=1.0 - 0.12 / height)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _fixed(values):
    from matplotlib.ticker import FixedLocator

    return FixedLocator(values)


def _layer_extent(geometry: Geometry, i: int) -> list[float]:
    layer = geometry.layers[i]
    h = layer.shape[0] * layer.cell_size[0] / 2.0
    w = layer.shape[1] * layer.cell_size[1] / 2.0
    return [-w, w, -h, h]


def plot_average_images(reference: np.ndarray, generated: np.ndarray, geometry: Geometry,
                        path: str | Path, labels: tuple[str, str] = ("reference", "generated")
                        ) -> Path:
    """Average shower per layer for both samples and their ratio.

    Args:
        reference, generated: ``(n_voxels,)`` average deposits in MeV.
        geometry: their geometry.
        path: PNG to write.
    """
    import matplotlib.colors as mcolors

    plt = setup_style()
    ref_layers = [a[0] for a in geometry.split_layers(np.asarray(reference)[None])]
    gen_layers = [a[0] for a in geometry.split_layers(np.asarray(generated)[None])]
    n = geometry.n_layers
    per_row = 1 if n <= 6 else 3  # many layers: three layers (x 3 images) per row
    rows = int(math.ceil(n / per_row))
    height = 2.3 * rows + 1.1
    fig = plt.figure(figsize=(2.7 * 3 * per_row, height))
    grid = fig.add_gridspec(rows, 3 * per_row, hspace=0.45, wspace=0.25, left=0.05,
                            right=0.98, top=1.0 - 0.3 / height, bottom=1.0 / height)
    positive = np.concatenate([np.ravel(a) for a in ref_layers + gen_layers])
    positive = positive[positive > 0]
    vmax = positive.max() if positive.size else 1.0
    vmin = max(vmax * 1e-6, positive.min() if positive.size else vmax * 1e-6)
    norm = mcolors.LogNorm(vmin=vmin, vmax=vmax)
    ratio_norm = mcolors.LogNorm(vmin=0.5, vmax=2.0)
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    im = rim = None
    for i in range(n):
        r, c0 = divmod(i, per_row)
        c0 *= 3
        extent = _layer_extent(geometry, i)
        images = ((ref_layers[i], f"{labels[0]}, layer {i}", norm, cmap),
                  (gen_layers[i], f"{labels[1]}, layer {i}", norm, cmap))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(ref_layers[i] > 0, gen_layers[i] / ref_layers[i], np.nan)
        images += ((np.ma.masked_invalid(ratio), f"gen/ref, layer {i}", ratio_norm, "RdBu_r"),)
        for j, (img, name, scale, colours) in enumerate(images):
            ax = fig.add_subplot(grid[r, c0 + j])
            shown = ax.imshow(np.ma.masked_less_equal(img, 0), norm=scale, cmap=colours,
                              extent=extent, aspect="auto", origin="lower",
                              interpolation="nearest")
            if j < 2:
                im = shown
            else:
                rim = shown
            ax.text(0.5, 1.02, name, transform=ax.transAxes, ha="center", va="bottom",
                    fontsize=7)
            ax.tick_params(labelsize=6)
            _quiet_axis(ax)
    unit = geometry.layers[0].cell_unit
    fig.text(0.5, 0.72 / height, f"cell position [{unit}] (rows vertical, columns horizontal)",
             ha="center", fontsize=7)
    bar = fig.colorbar(im, cax=fig.add_axes([0.08, 0.25 / height, 0.38, 0.12 / height]),
                       orientation="horizontal")
    bar.set_label("mean deposit [MeV]", fontsize=7)
    bar = fig.colorbar(rim, cax=fig.add_axes([0.56, 0.25 / height, 0.38, 0.12 / height]),
                       orientation="horizontal")
    ticks = [0.5, 0.7, 1.0, 1.4, 2.0]
    bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
    bar.minorticks_off()
    bar.set_label("generated / reference", fontsize=7)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_energy_response(profiles: Sequence[dict], path: str | Path,
                         labels: tuple[str, str] = ("reference", "generated")) -> Path:
    """Mean energy response ``E_tot / E_inc`` (band: RMS) against a condition, with ratio.

    Args:
        profiles: dicts with ``x_label``, ``centres``, ``reference`` and ``generated``
            (each a dict with ``mean``, ``rms`` and ``error`` per bin) and ``log`` (log x).
        path: PNG to write.
    """
    plt = setup_style()
    fig = plt.figure(figsize=(4.2 * len(profiles), 4.2))
    grid = fig.add_gridspec(2, len(profiles), height_ratios=[3, 1], hspace=0.08, wspace=0.3)
    for k, prof in enumerate(profiles):
        top = fig.add_subplot(grid[0, k])
        bottom = fig.add_subplot(grid[1, k], sharex=top)
        x = np.asarray(prof["centres"])
        for key, colour, name in (("reference", REFERENCE_COLOUR, labels[0]),
                                  ("generated", GENERATED_COLOUR, labels[1])):
            mean = np.asarray(prof[key]["mean"], dtype=float)
            rms = np.asarray(prof[key]["rms"], dtype=float)
            top.plot(x, mean, "o-", color=colour, markersize=3, label=name)
            top.fill_between(x, mean - rms, mean + rms, color=colour, alpha=0.2)
        top.set_ylabel(r"$E_\mathrm{tot} / E_\mathrm{inc}$ (band: RMS)")
        top.tick_params(labelbottom=False)
        top.legend(frameon=False)
        ref = np.asarray(prof["reference"]["mean"], dtype=float)
        gen = np.asarray(prof["generated"]["mean"], dtype=float)
        err = np.hypot(np.asarray(prof["reference"]["error"], dtype=float),
                       np.asarray(prof["generated"]["error"], dtype=float))
        with np.errstate(divide="ignore", invalid="ignore"):
            bottom.errorbar(x, gen / ref, yerr=err / np.abs(ref), fmt="o", markersize=3,
                            color=GENERATED_COLOUR)
        bottom.axhline(1.0, color="black", linewidth=0.6)
        bottom.set_ylabel("gen/ref", fontsize=7)
        bottom.set_xlabel(prof["x_label"])
        if prof.get("log"):
            top.set_xscale("log")
        _quiet_axis(top, bool(prof.get("log")))
        _quiet_axis(bottom, bool(prof.get("log")))
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_cell_spectrum(edges: np.ndarray, reference: np.ndarray, generated: np.ndarray,
                       path: str | Path, separation: float | None = None,
                       labels: tuple[str, str] = ("reference", "generated")) -> Path:
    """Spectrum of non-zero cell energies (MeV) for both samples, with ratio."""
    edges = np.asarray(edges)
    used = np.nonzero((np.asarray(reference) + np.asarray(generated)) > 0)[0]
    lo, hi = (used[0], used[-1] + 1) if used.size else (0, len(edges) - 1)
    panel = {"edges": edges[lo:hi + 1], "reference": np.asarray(reference)[lo:hi],
             "generated": np.asarray(generated)[lo:hi], "label": "cell energy [MeV]",
             "log": True}
    if separation is not None:
        panel["separation"] = separation
    return plot_histograms([panel], path, title="Cell-energy spectrum (non-zero cells)",
                           labels=labels)


def _views(voxels: np.ndarray, geometry: Geometry) -> list[tuple[str, np.ndarray]]:
    """Images of one shower: each layer, or for many layers of one cell grid (clic51,
    CaloChallenge datasets 2 and 3) the sum over layers and two side views. Layers of
    different grids (CaloChallenge dataset-1 pions: 7 layers) cannot be stacked and are
    shown one by one."""
    layers = [a[0] for a in geometry.split_layers(np.asarray(voxels)[None])]
    if geometry.n_layers <= 6 or len({img.shape for img in layers}) > 1:
        return [(f"layer {i}", img) for i, img in enumerate(layers)]
    stack = np.stack(layers)  # (layers, rows, cols)
    return [("sum over layers", stack.sum(axis=0)), ("layer vs row", stack.sum(axis=2)),
            ("layer vs column", stack.sum(axis=1))]


def plot_neighbours(generated: np.ndarray, neighbours: np.ndarray, distances: np.ndarray,
                    geometry: Geometry, path: str | Path,
                    generated_energy: np.ndarray | None = None,
                    neighbour_energy: np.ndarray | None = None) -> Path:
    """Generated showers (left) and their nearest reference showers (right).

    Args:
        generated: ``(Q, n_voxels)`` generated showers, MeV.
        neighbours: ``(Q, n_voxels)`` the closest reference shower of each.
        distances: ``(Q,)`` their Euclidean distances in MeV.
        geometry: their geometry.
        path: PNG to write.
        generated_energy, neighbour_energy: ``(Q,)`` incident energies in MeV (titles).
    """
    import matplotlib.colors as mcolors

    plt = setup_style()
    q = len(generated)
    n_views = len(_views(generated[0], geometry))
    fig, axes = plt.subplots(q, 2 * n_views, figsize=(2.2 * 2 * n_views, 2.0 * q),
                             squeeze=False)
    for row in range(q):
        pair = (_views(generated[row], geometry), _views(neighbours[row], geometry))
        values = np.concatenate([np.ravel(img) for views in pair for _, img in views])
        values = values[values > 0]
        vmax = values.max() if values.size else 1.0
        norm = mcolors.LogNorm(vmin=max(vmax * 1e-4, 1e-6), vmax=vmax)
        for side, views in enumerate(pair):
            for j, (name, img) in enumerate(views):
                ax = axes[row, side * n_views + j]
                ax.imshow(np.ma.masked_less_equal(img, 0), norm=norm, aspect="auto",
                          origin="lower", interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                who = "generated" if side == 0 else f"nearest ref (d={distances[row]:.3g} MeV)"
                energy = generated_energy if side == 0 else neighbour_energy
                extra = f", {energy[row] / 1000:.3g} GeV" if energy is not None else ""
                ax.set_title(f"{who}{extra}\n{name}" if j == 0 else name, fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
