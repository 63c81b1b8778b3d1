"""Evaluation of the ATLAS-like 89-cell photon cluster, beyond the generic one.

Klein's dense-WGAN study of this cluster compares real and generated clusters by:

- mean cell intensities per layer (reference, generated and their ratio);
- the energy-weighted barycentre of each layer in eta and phi, averaged over showers,
  and the RMS width per layer, ``RMS = sqrt(sum_i E_i (x_i - x_bar)^2 / sum_i E_i)``
  with ``x_bar = sum_i E_i x_i / sum_i E_i`` (its appendix: ``w_i = E_i``,
  ``x_i = eta_i``), averaged over showers;
- the total energy per event.

Coordinates are the geometry's cell centres (:meth:`caloforge.geometry.Layer.cell_positions`:
rows are eta and columns phi for the ``"eta,phi"`` layers of atlas89, relative to the
cluster centre), so nothing here depends on the cell counts. A shower whose layer holds no
energy has no barycentre there and is left out of that layer's averages (the generic
observables set it to 0 instead). Everything is accumulated in bounded memory: sums,
histograms on bins fixed by the layer's extent, and a capped subsample of total energies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from caloforge.evaluate.extras import GeometryExtra, register_extra
from caloforge.evaluate.metrics import clipped_histogram, common_bins, histogram_separation_power
from caloforge.evaluate.observables import axis_names
from caloforge.geometry import Geometry
from caloforge.units import mev_to_gev

__all__ = ["Atlas89Extra", "layer_moments"]

_BINS = 40  # histogram bins of barycentres and widths over the layer's extent
_TOTAL_CAP = 200_000  # total energies kept per file
_CELL_FLOOR = 1e-3  # cells below this fraction of the layer's hottest mean are not compared


def layer_moments(layer_voxels: np.ndarray, coordinate: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy-weighted barycentre and RMS of one coordinate over one layer.

    Args:
        layer_voxels: ``(N, n_cells)`` deposits in MeV (negative values count as 0).
        coordinate: ``(n_cells,)`` cell-centre coordinate (eta, phi, mm).

    Returns:
        ``(barycentre (N,), rms (N,), hit (N,) bool)``; barycentre and RMS are 0 where
        the layer holds no energy (``hit`` false).
    """
    e = np.clip(np.asarray(layer_voxels, dtype=np.float64), 0.0, None)
    x = np.asarray(coordinate, dtype=np.float64)
    total = e.sum(axis=1)
    hit = total > 0
    safe = np.where(hit, total, 1.0)
    mean = np.where(hit, (e @ x) / safe, 0.0)
    # the centred form avoids the cancellation of <x^2> - <x>^2 for narrow showers
    centred = np.where(hit, (e * (x[None, :] - mean[:, None]) ** 2).sum(axis=1) / safe, 0.0)
    return mean, np.sqrt(np.clip(centred, 0.0, None)), hit


def _separation(p: np.ndarray, q: np.ndarray) -> float | None:
    """Separation power, or ``None`` when one sample never filled the histogram."""
    if p.sum() <= 0 or q.sum() <= 0:
        return None
    return histogram_separation_power(p, q)


def _stats(s: np.ndarray) -> dict[str, float]:
    """Mean and standard deviation from ``[n, sum, sum of squares]``."""
    n, total, squares = (float(v) for v in s)
    if n == 0:
        return {"n": 0, "mean": None, "std": None}
    mean = total / n
    return {"n": int(n), "mean": mean, "std": float(np.sqrt(max(squares / n - mean**2, 0.0)))}


@register_extra("atlas89")
class Atlas89Extra(GeometryExtra):
    """Mean cell intensities, barycentres and RMS per layer, and total energy (Klein)."""

    title = "ATLAS-like cluster: cell intensities, barycentres and total energy"

    def __init__(self, geometry: Geometry):
        super().__init__(geometry)
        self.n = 0
        self.voxel_sum = np.zeros(geometry.n_voxels)
        self.axes: list[tuple[str, str]] = [axis_names(layer) for layer in geometry.layers]
        self.coordinates: list[tuple[np.ndarray, np.ndarray]] = []
        self.centre_edges: list[tuple[np.ndarray, np.ndarray]] = []
        self.width_edges: list[tuple[np.ndarray, np.ndarray]] = []
        for layer in geometry.layers:
            a, b = (np.ravel(c).astype(np.float64) for c in layer.cell_positions())
            self.coordinates.append((a, b))
            # barycentres lie inside the span of the cell centres, RMS below half of it
            self.centre_edges.append(tuple(self._edges(c.min(), c.max()) for c in (a, b)))
            self.width_edges.append(tuple(
                self._edges(0.0, max(0.5 * (c.max() - c.min()), 1e-12)) for c in (a, b)))
        n_layers = geometry.n_layers
        # [layer, axis, (n, sum, sum of squares)]
        self.centre_sums = np.zeros((n_layers, 2, 3))
        self.width_sums = np.zeros((n_layers, 2, 3))
        self.centre_hist = np.zeros((n_layers, 2, _BINS), dtype=np.int64)
        self.width_hist = np.zeros((n_layers, 2, _BINS), dtype=np.int64)
        self.total_energy: list[np.ndarray] = []
        self.incident_energy: list[np.ndarray] = []
        self.n_kept = 0

    @staticmethod
    def _edges(lo: float, hi: float) -> np.ndarray:
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        return np.linspace(lo, hi, _BINS + 1)

    def update(self, voxels: np.ndarray, incident_energy: np.ndarray,
               angle: np.ndarray | None) -> None:
        voxels = np.asarray(voxels, dtype=np.float64)
        self.n += len(voxels)
        self.voxel_sum += voxels.sum(axis=0)
        for i in range(self.geometry.n_layers):
            flat = voxels[:, self.geometry.layer_slice(i)]
            for k, coordinate in enumerate(self.coordinates[i]):
                centre, width, hit = layer_moments(flat, coordinate)
                centre, width = centre[hit], width[hit]
                self.centre_sums[i, k] += (len(centre), centre.sum(), (centre**2).sum())
                self.width_sums[i, k] += (len(width), width.sum(), (width**2).sum())
                self.centre_hist[i, k] += clipped_histogram(centre, self.centre_edges[i][k])
                self.width_hist[i, k] += clipped_histogram(width, self.width_edges[i][k])
        keep = min(len(voxels), _TOTAL_CAP - self.n_kept)
        if keep > 0:
            self.total_energy.append(voxels[:keep].sum(axis=1))
            self.incident_energy.append(np.asarray(incident_energy[:keep], dtype=np.float64))
            self.n_kept += keep

    @property
    def mean_voxels(self) -> np.ndarray:
        """``(n_voxels,)`` mean deposit per cell in MeV."""
        return self.voxel_sum / max(self.n, 1)

    def totals(self) -> tuple[np.ndarray, np.ndarray]:
        """Kept total energies and incident energies, MeV."""
        if not self.total_energy:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(self.total_energy), np.concatenate(self.incident_energy)

    # ---- comparison --------------------------------------------------------------------

    @classmethod
    def compare(cls, ref: Atlas89Extra, gen: Atlas89Extra, outdir: Path,
                plots: bool) -> tuple[dict, list[tuple[str, str]]]:
        geometry = ref.geometry
        cells = cls._compare_cells(ref, gen)
        barycentres = {}
        for i, layer in enumerate(geometry.layers):
            per_axis = {}
            for k, axis in enumerate(ref.axes[i]):
                per_axis[axis] = {
                    "reference": {"barycentre": _stats(ref.centre_sums[i, k]),
                                  "rms": _stats(ref.width_sums[i, k])},
                    "generated": {"barycentre": _stats(gen.centre_sums[i, k]),
                                  "rms": _stats(gen.width_sums[i, k])},
                    "barycentre_separation_power": _separation(
                        ref.centre_hist[i, k], gen.centre_hist[i, k]),
                    "rms_separation_power": _separation(
                        ref.width_hist[i, k], gen.width_hist[i, k]),
                }
            barycentres[layer.name] = per_axis
        total = cls._compare_totals(ref, gen)
        metrics = {"mean_cell_intensity": cells, "barycentres": barycentres,
                   "total_energy": total["metrics"],
                   "notes": "barycentre and rms: energy-weighted per shower and layer over "
                            "cell centres, then mean and std over showers with energy in "
                            "the layer; coordinates relative to the cluster centre"}
        figures: list[tuple[str, str]] = []
        if plots:
            outdir = Path(outdir)
            figures.append(("Mean cell intensity per layer: reference, generated, ratio",
                            cls._plot_cells(ref, gen, outdir / "atlas89_mean_cells.png")))
            figures.append(("Barycentre and RMS per layer (mean over showers, error bar: "
                            "spread over showers)",
                            cls._plot_barycentres(barycentres, geometry, ref.axes,
                                                  outdir / "atlas89_barycentres.png")))
            figures.append(("Total energy per event",
                            cls._plot_totals(total["panels"], outdir / "atlas89_total.png")))
        return metrics, figures

    @staticmethod
    def _compare_cells(ref: Atlas89Extra, gen: Atlas89Extra) -> dict:
        geometry = ref.geometry
        ref_layers = [a[0] for a in geometry.split_layers(ref.mean_voxels[None])]
        gen_layers = [a[0] for a in geometry.split_layers(gen.mean_voxels[None])]
        out = {}
        for layer, r, g in zip(geometry.layers, ref_layers, gen_layers, strict=True):
            compared = r >= _CELL_FLOOR * r.max() if r.max() > 0 else np.zeros_like(r, bool)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(r > 0, g / r, np.nan)
            sel = ratio[compared]
            out[layer.name] = {
                "reference_mev": r.tolist(),
                "generated_mev": g.tolist(),
                "ratio": [[None if not np.isfinite(v) else float(v) for v in row]
                          for row in ratio],
                "layer_energy_reference_mev": float(r.sum()),
                "layer_energy_generated_mev": float(g.sum()),
                "layer_energy_ratio": float(g.sum() / r.sum()) if r.sum() > 0 else None,
                "n_cells_compared": int(compared.sum()),
                "cell_ratio_median": float(np.median(sel)) if sel.size else None,
                "cell_ratio_min": float(sel.min()) if sel.size else None,
                "cell_ratio_max": float(sel.max()) if sel.size else None,
                "hottest_cell_ratio": float(ratio.ravel()[np.argmax(r)]) if r.max() > 0
                else None,
            }
        return out

    @staticmethod
    def _compare_totals(ref: Atlas89Extra, gen: Atlas89Extra) -> dict:
        t_ref, e_ref = ref.totals()
        t_gen, e_gen = gen.totals()
        metrics: dict = {}
        panels = []
        for name, label, a, b in (
                ("total_energy_gev", r"$E_\mathrm{tot}$ [GeV]", mev_to_gev(t_ref),
                 mev_to_gev(t_gen)),
                ("response", r"$E_\mathrm{tot} / E_\mathrm{inc}$",
                 t_ref / np.where(e_ref > 0, e_ref, 1.0),
                 t_gen / np.where(e_gen > 0, e_gen, 1.0))):
            if a.size == 0 or b.size == 0:
                continue
            edges = common_bins(a, b, bins=50)
            hr, hg = clipped_histogram(a, edges), clipped_histogram(b, edges)
            s = histogram_separation_power(hr, hg)
            metrics[name] = {"reference": {"mean": float(a.mean()), "std": float(a.std())},
                             "generated": {"mean": float(b.mean()), "std": float(b.std())},
                             "mean_ratio": float(b.mean() / a.mean()) if a.mean() else None,
                             "separation_power": s}
            panels.append({"edges": edges, "reference": hr, "generated": hg, "label": label,
                           "separation": s})
        metrics["n_showers_used"] = [int(t_ref.size), int(t_gen.size)]
        return {"metrics": metrics, "panels": panels}

    # ---- figures -----------------------------------------------------------------------

    @staticmethod
    def _plot_cells(ref: Atlas89Extra, gen: Atlas89Extra, path: Path) -> str:
        import matplotlib.colors as mcolors

        from caloforge.evaluate.plots import setup_style

        plt = setup_style()
        geometry = ref.geometry
        ref_layers = [a[0] for a in geometry.split_layers(ref.mean_voxels[None])]
        gen_layers = [a[0] for a in geometry.split_layers(gen.mean_voxels[None])]
        n = geometry.n_layers
        fig, axes = plt.subplots(3, n, figsize=(2.8 * n, 7.2), squeeze=False)
        for i, layer in enumerate(geometry.layers):
            a, b = layer.cell_centres()
            da, db = layer.cell_size if not layer.is_polar else (1.0, 1.0)
            extent = [b.min() - db / 2, b.max() + db / 2, a.min() - da / 2, a.max() + da / 2]
            r, g = ref_layers[i], gen_layers[i]
            positive = np.concatenate([r[r > 0], g[g > 0]])
            vmax = positive.max() if positive.size else 1.0
            norm = mcolors.LogNorm(vmin=max(vmax * 1e-4, positive.min() if positive.size
                                            else vmax * 1e-4), vmax=vmax)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(r > 0, g / r, np.nan)
            col_name, row_name = ref.axes[i][1], ref.axes[i][0]
            for j, (img, title, scale, cmap) in enumerate((
                    (r, f"{layer.name}: reference", norm, "viridis"),
                    (g, f"{layer.name}: generated", norm, "viridis"),
                    (ratio, f"{layer.name}: gen / ref", mcolors.LogNorm(0.5, 2.0), "RdBu_r"))):
                ax = axes[j, i]
                shown = ax.imshow(np.ma.masked_invalid(np.ma.masked_less_equal(img, 0)),
                                  norm=scale, cmap=cmap, extent=extent, aspect="auto",
                                  origin="lower", interpolation="nearest")
                ax.set_title(title, fontsize=8)
                ax.set_xlabel(col_name, fontsize=7)
                ax.set_ylabel(row_name, fontsize=7)
                ax.tick_params(labelsize=6)
                bar = fig.colorbar(shown, ax=ax, fraction=0.08, pad=0.02)
                bar.ax.tick_params(labelsize=6)
                bar.set_label("MeV" if j < 2 else "ratio", fontsize=6)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return Path(path).name

    @staticmethod
    def _plot_barycentres(barycentres: dict, geometry: Geometry, axes_names: list,
                          path: Path) -> str:
        from caloforge.evaluate.plots import GENERATED_COLOUR, REFERENCE_COLOUR, setup_style

        plt = setup_style()
        fig, axes = plt.subplots(2, 2, figsize=(8.0, 6.0), squeeze=False)
        x = np.arange(geometry.n_layers)
        names = [layer.name for layer in geometry.layers]
        for k in range(2):
            for j, quantity in enumerate(("barycentre", "rms")):
                ax = axes[k, j]
                for offset, side, colour in ((-0.1, "reference", REFERENCE_COLOUR),
                                             (0.1, "generated", GENERATED_COLOUR)):
                    stats = [barycentres[n][axes_names[i][k]][side][quantity]
                             for i, n in enumerate(names)]
                    mean = [np.nan if s["mean"] is None else s["mean"] for s in stats]
                    std = [np.nan if s["std"] is None else s["std"] for s in stats]
                    ax.errorbar(x + offset, mean, yerr=std, fmt="o", color=colour,
                                label=side, markersize=4, capsize=2)
                ax.set_xticks(x, names, fontsize=7)
                axis = axes_names[0][k]
                ax.set_ylabel(f"{'mean' if quantity == 'barycentre' else 'RMS'} {axis}",
                              fontsize=8)
                if k == 0 and j == 0:
                    ax.legend(frameon=False, fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return Path(path).name

    @staticmethod
    def _plot_totals(panels: list[dict], path: Path) -> str:
        from caloforge.evaluate.plots import plot_histograms

        plot_histograms(panels, path, title="Total energy per event")
        return Path(path).name
