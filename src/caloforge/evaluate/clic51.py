"""Evaluation of the CLIC-like 51x51x25 ECAL (3DGAN), beyond the generic one.

The 3DGAN paper (Carminati, Khattak et al.) validates 3DGAN with:

- 2D projections of the shower on the xy, xz and yz planes (figure 1), here averaged over
  showers, reference and generated side by side;
- the generated/reference ratio of the total deposited energy (ECAL sum) as a function of
  the primary energy (figure 2a): the mean ECAL sum in bins of primary energy, its ratio;
- the single-cell energy spectrum in linear and logarithmic scale (figures 2b, 2c);
- the difference between the reference and the generated correlation matrices of shower
  features (figure 3a, "Geant4 - GAN"): primary energy, incident angle, ECAL sum, number
  of hit cells, the energy fractions in the front, middle and back thirds of the depth,
  and the first (barycentre) and second (RMS width) moments along x, y and z.

Axes: x are the rows and y the columns of each layer's grid, z the layers (the depth); the
coordinates are the geometry's cell centres and layer depth centres (mm for clic51).
Layers of different shapes are padded to the largest grid, so any geometry works.
Bounded memory: projections, per-bin sums and histograms are accumulated per chunk and
only a capped table of per-shower features (no voxels) is kept.

References:
    F. Carminati, G. Khattak et al., "Generative Adversarial Networks for fast
    simulation", J. Phys.: Conf. Ser. 1525 (2020) 012064 (CHEP 2019).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from caloforge.evaluate.extras import GeometryExtra, register_extra
from caloforge.evaluate.metrics import histogram_separation_power
from caloforge.geometry import Geometry
from caloforge.units import gev_to_mev, mev_to_gev

__all__ = ["Clic51Extra", "voxel_grid", "shower_features", "correlation_matrix",
           "FEATURE_NAMES"]

FEATURE_NAMES = ("E_p", "angle", "ECAL_sum", "hits", "f_front", "f_middle", "f_back",
                 "M1_x", "M1_y", "M1_z", "M2_x", "M2_y", "M2_z")
_FEATURE_UNITS = ("GeV", "deg", "GeV", "", "", "", "", "mm", "mm", "mm", "mm", "mm", "mm")
_FEATURE_CAP = 50_000  # per-shower feature rows kept per file
_ENERGY_BINS = 10  # primary-energy bins over the geometry's energy range
_LOG_EDGES_MEV = np.logspace(-4, 5, 91)  # single-cell spectrum, 10 bins per decade
_LINEAR_BINS = 100
_HIT_THRESHOLD_MEV = 0.1  # a cell counts as hit above this deposit
_SUB_CHUNK = 128  # showers converted to a grid at a time (65025 cells each for clic51)


def voxel_grid(voxels: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Flat voxels ``(n, n_voxels)`` MeV -> ``(n, rows, cols, layers)`` (x, y, z), layers
    of smaller grids padded with zeros at the high-index end."""
    voxels = np.asarray(voxels, dtype=np.float32)
    n = len(voxels)
    rows = max(layer.shape[0] for layer in geometry.layers)
    cols = max(layer.shape[1] for layer in geometry.layers)
    if all(layer.shape == (rows, cols) for layer in geometry.layers):
        return voxels.reshape(n, geometry.n_layers, rows, cols).transpose(0, 2, 3, 1)
    grid = np.zeros((n, rows, cols, geometry.n_layers), np.float32)
    for i, layer in enumerate(geometry.layers):
        r, c = layer.shape
        grid[:, :r, :c, i] = voxels[:, geometry.layer_slice(i)].reshape(n, r, c)
    return grid


def _axes(geometry: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell-centre coordinates along x (rows), y (cols) and z (layer depth centres)."""
    widest_x = max(geometry.layers, key=lambda layer: layer.shape[0])
    widest_y = max(geometry.layers, key=lambda layer: layer.shape[1])
    x = widest_x.cell_centres()[0]
    y = widest_y.cell_centres()[1]
    z = np.array([0.5 * (layer.depth[0] + layer.depth[1]) for layer in geometry.layers])
    return x.astype(np.float64), y.astype(np.float64), z.astype(np.float64)


def shower_features(grid: np.ndarray, incident_energy: np.ndarray, angle: np.ndarray | None,
                    axes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Per-shower features in the order of :data:`FEATURE_NAMES`.

    Args:
        grid: ``(n, rows, cols, layers)`` deposits in MeV.
        incident_energy: ``(n,)`` primary energy in MeV.
        angle: ``(n,)`` polar angle in degrees, or ``None`` (90).
        axes: cell-centre coordinates along x, y, z (see :func:`_axes`).

    Returns:
        ``(n, 13)`` float64: E_p (GeV), angle (deg), ECAL sum (GeV), hit cells, energy
        fractions of the front/middle/back thirds of the layers, barycentres M1 and RMS
        widths M2 along x, y, z (coordinate units); moments are 0 for empty showers.
    """
    e = np.clip(grid, 0.0, None)
    n, _, _, n_layers = e.shape
    x, y, z = axes
    px, py, pz = (e.sum(axis=axis, dtype=np.float64) for axis in ((2, 3), (1, 3), (1, 2)))
    total = pz.sum(axis=1)
    safe = np.where(total > 0, total, 1.0)
    moments = []
    for profile, coord in ((px, x), (py, y), (pz, z)):
        m1 = profile @ coord / safe
        m2 = np.sqrt(np.clip(profile @ coord**2 / safe - m1**2, 0.0, None))
        moments.append((np.where(total > 0, m1, 0.0), np.where(total > 0, m2, 0.0)))
    thirds = np.array_split(np.arange(n_layers), 3)
    fractions = [pz[:, idx].sum(axis=1) / safe if idx.size else np.zeros(n) for idx in thirds]
    hits = (e > _HIT_THRESHOLD_MEV).sum(axis=(1, 2, 3))
    ang = np.full(n, 90.0) if angle is None else np.asarray(angle, np.float64)
    energy_gev = mev_to_gev(np.asarray(incident_energy, np.float64))
    return np.stack([energy_gev, ang, mev_to_gev(total), hits,
                     *fractions, moments[0][0], moments[1][0], moments[2][0],
                     moments[0][1], moments[1][1], moments[2][1]], axis=1)


def correlation_matrix(features: np.ndarray) -> np.ndarray:
    """Pearson correlations of the columns of ``features`` ``(n, k)``; a constant column
    correlates 0 with the others (1 with itself) instead of NaN."""
    f = np.asarray(features, dtype=np.float64)
    k = f.shape[1]
    if len(f) < 2:
        return np.eye(k)
    centred = f - f.mean(axis=0)
    std = np.sqrt((centred**2).mean(axis=0))
    ok = std > 1e-12 * np.maximum(np.abs(f).max(axis=0), 1e-300)
    z = np.where(ok, centred / np.where(ok, std, 1.0), 0.0)
    corr = z.T @ z / len(f)
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


@register_extra("clic51")
class Clic51Extra(GeometryExtra):
    """Projections, ECAL sum vs primary energy, cell spectrum and feature correlations."""

    title = "CLIC-like ECAL (3DGAN): projections, energy response, cell spectrum, correlations"

    def __init__(self, geometry: Geometry):
        super().__init__(geometry)
        grid = voxel_grid(np.zeros((1, geometry.n_voxels), np.float32), geometry)
        _, rows, cols, layers = grid.shape
        self.axes = _axes(geometry)
        self.n = 0
        self.proj = {"xy": np.zeros((rows, cols)), "xz": np.zeros((rows, layers)),
                     "yz": np.zeros((cols, layers))}
        lo, hi = geometry.energy_range
        self.energy_edges_gev = np.linspace(lo, hi, _ENERGY_BINS + 1)
        self.bin_count = np.zeros(_ENERGY_BINS)
        self.bin_sum = np.zeros(_ENERGY_BINS)  # ECAL sum, GeV
        self.bin_sum2 = np.zeros(_ENERGY_BINS)
        self.n_outside_energy_range = 0
        self.linear_edges_mev = np.linspace(0.0, gev_to_mev(0.1 * hi), _LINEAR_BINS + 1)
        self.log_hist = np.zeros(len(_LOG_EDGES_MEV) - 1)
        self.linear_hist = np.zeros(_LINEAR_BINS)
        self.n_below_log_range = 0
        self.n_cells = 0
        self.features: list[np.ndarray] = []
        self.n_features = 0

    def update(self, voxels: np.ndarray, incident_energy: np.ndarray,
               angle: np.ndarray | None) -> None:
        for lo in range(0, len(voxels), _SUB_CHUNK):
            hi = lo + _SUB_CHUNK
            self._update(voxels[lo:hi], incident_energy[lo:hi],
                         None if angle is None else angle[lo:hi])

    def _update(self, voxels: np.ndarray, incident_energy: np.ndarray,
                angle: np.ndarray | None) -> None:
        grid = voxel_grid(voxels, self.geometry)
        n = len(grid)
        if n == 0:
            return
        self.n += n
        self.proj["xy"] += grid.sum(axis=(0, 3), dtype=np.float64)
        self.proj["xz"] += grid.sum(axis=(0, 2), dtype=np.float64)
        self.proj["yz"] += grid.sum(axis=(0, 1), dtype=np.float64)
        features = shower_features(grid, incident_energy, angle, self.axes)
        energy_gev, ecal_gev = features[:, 0], features[:, 2]
        index = np.searchsorted(self.energy_edges_gev, energy_gev, side="right") - 1
        index[energy_gev == self.energy_edges_gev[-1]] = _ENERGY_BINS - 1
        inside = (index >= 0) & (index < _ENERGY_BINS)
        self.n_outside_energy_range += int((~inside).sum())
        np.add.at(self.bin_count, index[inside], 1)
        np.add.at(self.bin_sum, index[inside], ecal_gev[inside])
        np.add.at(self.bin_sum2, index[inside], ecal_gev[inside] ** 2)
        cells = grid[grid > 0].astype(np.float64)
        self.n_cells += grid.size
        self.n_below_log_range += int((cells < _LOG_EDGES_MEV[0]).sum())
        self.log_hist += np.histogram(cells, bins=_LOG_EDGES_MEV)[0]
        edges = self.linear_edges_mev
        self.linear_hist += np.histogram(np.clip(cells, edges[0], np.nextafter(edges[-1], 0)),
                                         bins=edges)[0]
        room = _FEATURE_CAP - self.n_features
        if room > 0:
            self.features.append(features[:room])
            self.n_features += min(room, n)

    # ---- results of one file -------------------------------------------------------------

    def mean_projection(self, plane: str) -> np.ndarray:
        """Average 2D projection (MeV per cell column) on ``"xy"``, ``"xz"`` or ``"yz"``."""
        return self.proj[plane] / max(self.n, 1)

    def feature_table(self) -> np.ndarray:
        """The kept per-shower features ``(n, len(FEATURE_NAMES))``."""
        if not self.features:
            return np.zeros((0, len(FEATURE_NAMES)))
        return np.concatenate(self.features)

    def energy_response(self) -> list[dict]:
        """Mean ECAL sum (GeV) and its standard deviation per primary-energy bin."""
        rows = []
        for i in range(_ENERGY_BINS):
            count = self.bin_count[i]
            mean = self.bin_sum[i] / count if count else None
            std = (float(np.sqrt(max(self.bin_sum2[i] / count - mean**2, 0.0)))
                   if count else None)
            rows.append({"lo_gev": float(self.energy_edges_gev[i]),
                         "hi_gev": float(self.energy_edges_gev[i + 1]), "n": int(count),
                         "mean_gev": None if mean is None else float(mean), "std_gev": std})
        return rows

    # ---- comparison ------------------------------------------------------------------------

    @classmethod
    def compare(cls, ref: Clic51Extra, gen: Clic51Extra, outdir: Path,
                plots: bool) -> tuple[dict, list[tuple[str, str]]]:
        metrics = {
            "projections": cls._compare_projections(ref, gen),
            "energy_response": cls._compare_response(ref, gen),
            "cell_spectrum": cls._compare_spectrum(ref, gen),
            "correlations": cls._compare_correlations(ref, gen),
        }
        figures: list[tuple[str, str]] = []
        if plots:
            outdir = Path(outdir)
            outdir.mkdir(parents=True, exist_ok=True)
            figures = [
                ("Average 2D projections (xy, xz, yz): reference, generated, ratio",
                 cls._plot_projections(ref, gen, outdir / "clic51_projections.png")),
                ("ECAL sum vs primary energy and the generated / reference ratio",
                 cls._plot_response(metrics["energy_response"], outdir / "clic51_response.png")),
                ("Single-cell energy spectrum, linear and logarithmic",
                 cls._plot_spectrum(ref, gen, outdir / "clic51_cell_spectrum.png")),
                ("Correlation of shower features: reference - generated",
                 cls._plot_correlations(metrics["correlations"],
                                        outdir / "clic51_correlation_difference.png")),
            ]
        return metrics, figures

    @staticmethod
    def _compare_projections(ref: Clic51Extra, gen: Clic51Extra) -> dict:
        out = {}
        for plane in ("xy", "xz", "yz"):
            r, g = ref.mean_projection(plane), gen.mean_projection(plane)
            norm = r.sum()
            out[plane] = {
                "sum_reference_mev": float(norm), "sum_generated_mev": float(g.sum()),
                # half the L1 distance of the unit-normalised images: 0 same, 1 disjoint
                "shape_distance": (float(0.5 * np.abs(r / norm - g / g.sum()).sum())
                                   if norm > 0 and g.sum() > 0 else None),
                "peak_reference": [int(v) for v in np.unravel_index(np.argmax(r), r.shape)],
                "peak_generated": [int(v) for v in np.unravel_index(np.argmax(g), g.shape)],
            }
        return out

    @staticmethod
    def _compare_response(ref: Clic51Extra, gen: Clic51Extra) -> dict:
        rows = []
        for r, g in zip(ref.energy_response(), gen.energy_response(), strict=True):
            ratio = (g["mean_gev"] / r["mean_gev"] if r["mean_gev"] and g["mean_gev"]
                     is not None else None)
            rows.append({"lo_gev": r["lo_gev"], "hi_gev": r["hi_gev"], "n_reference": r["n"],
                         "n_generated": g["n"], "ecal_sum_reference_gev": r["mean_gev"],
                         "ecal_sum_generated_gev": g["mean_gev"],
                         "std_reference_gev": r["std_gev"], "std_generated_gev": g["std_gev"],
                         "ratio_generated_over_reference": ratio})
        ratios = [row["ratio_generated_over_reference"] for row in rows
                  if row["ratio_generated_over_reference"] is not None]
        total_r = ref.bin_sum.sum() / max(ref.bin_count.sum(), 1)
        total_g = gen.bin_sum.sum() / max(gen.bin_count.sum(), 1)
        return {"bins": rows,
                "ratio_overall": float(total_g / total_r) if total_r > 0 else None,
                "max_abs_ratio_deviation": (float(max(abs(x - 1.0) for x in ratios))
                                            if ratios else None),
                "n_outside_energy_range": [ref.n_outside_energy_range,
                                           gen.n_outside_energy_range]}

    @staticmethod
    def _compare_spectrum(ref: Clic51Extra, gen: Clic51Extra) -> dict:
        def sep(p, q):
            return histogram_separation_power(p, q) if p.sum() > 0 and q.sum() > 0 else None

        def occupancy(x: Clic51Extra) -> float | None:
            return float(x.log_hist.sum() / x.n_cells) if x.n_cells else None

        return {"separation_power_log": sep(ref.log_hist, gen.log_hist),
                "separation_power_linear": sep(ref.linear_hist, gen.linear_hist),
                "nonzero_fraction_reference": occupancy(ref),
                "nonzero_fraction_generated": occupancy(gen),
                "log_edges_mev": [float(_LOG_EDGES_MEV[0]), float(_LOG_EDGES_MEV[-1])],
                "below_log_range": [ref.n_below_log_range, gen.n_below_log_range]}

    @staticmethod
    def _compare_correlations(ref: Clic51Extra, gen: Clic51Extra) -> dict:
        fr, fg = ref.feature_table(), gen.feature_table()
        cr, cg = correlation_matrix(fr), correlation_matrix(fg)
        diff = cr - cg
        off = ~np.eye(len(FEATURE_NAMES), dtype=bool)
        i, j = np.unravel_index(np.argmax(np.where(off, np.abs(diff), -1.0)), diff.shape)
        return {"features": list(FEATURE_NAMES), "units": list(_FEATURE_UNITS),
                "n_showers": [len(fr), len(fg)],
                "reference": cr.round(4).tolist(), "generated": cg.round(4).tolist(),
                "difference": diff.round(4).tolist(),
                "max_abs_difference": float(np.abs(diff[off]).max()),
                "mean_abs_difference": float(np.abs(diff[off]).mean()),
                "largest_pair": [FEATURE_NAMES[i], FEATURE_NAMES[j]]}

    # ---- figures ---------------------------------------------------------------------------

    @staticmethod
    def _plot_projections(ref: Clic51Extra, gen: Clic51Extra, path: Path) -> str:
        import matplotlib.colors as mcolors

        from caloforge.evaluate.plots import setup_style

        plt = setup_style()
        fig, axes = plt.subplots(3, 3, figsize=(10.0, 9.0), squeeze=False)
        labels = {"xy": ("y", "x"), "xz": ("z", "x"), "yz": ("z", "y")}
        for k, plane in enumerate(("xy", "xz", "yz")):
            r, g = ref.mean_projection(plane), gen.mean_projection(plane)
            positive = np.concatenate([r[r > 0], g[g > 0]])
            vmax = positive.max() if positive.size else 1.0
            norm = mcolors.LogNorm(vmin=max(vmax * 1e-5, positive.min() if positive.size
                                            else vmax * 1e-5), vmax=vmax)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(r > 0, g / r, np.nan)
            for j, (img, title, scale, cmap) in enumerate((
                    (r, f"{plane}: reference", norm, "viridis"),
                    (g, f"{plane}: generated", norm, "viridis"),
                    (ratio, f"{plane}: gen / ref", mcolors.LogNorm(0.1, 10.0), "RdBu_r"))):
                ax = axes[k, j]
                shown = ax.imshow(np.ma.masked_invalid(np.ma.masked_less_equal(img, 0)),
                                  norm=scale, cmap=cmap, aspect="auto", origin="lower",
                                  interpolation="nearest")
                ax.set_title(title)
                ax.set_xlabel(f"{labels[plane][0]} [cell]")
                ax.set_ylabel(f"{labels[plane][1]} [cell]")
                fig.colorbar(shown, ax=ax, fraction=0.08, pad=0.02).set_label(
                    "MeV per shower" if j < 2 else "ratio")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return Path(path).name

    @staticmethod
    def _plot_response(response: dict, path: Path) -> str:
        from caloforge.evaluate.plots import GENERATED_COLOUR, REFERENCE_COLOUR, setup_style

        plt = setup_style()
        rows = response["bins"]
        centre = np.array([0.5 * (r["lo_gev"] + r["hi_gev"]) for r in rows])

        def column(key):
            return np.array([np.nan if r[key] is None else r[key] for r in rows], float)

        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.0, 6.0), sharex=True,
                                          gridspec_kw={"height_ratios": [2, 1]})
        for side, colour in (("reference", REFERENCE_COLOUR), ("generated", GENERATED_COLOUR)):
            top.errorbar(centre, column(f"ecal_sum_{side}_gev"), yerr=column(f"std_{side}_gev"),
                         fmt="o", color=colour, label=side, capsize=2, markersize=4)
        top.set_ylabel("mean ECAL sum [GeV]")
        top.legend(frameon=False)
        bottom.plot(centre, column("ratio_generated_over_reference"), "o-",
                    color=GENERATED_COLOUR)
        bottom.axhline(1.0, color="grey", lw=0.8)
        bottom.set_ylabel("generated / reference")
        bottom.set_xlabel("primary energy [GeV]")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return Path(path).name

    @staticmethod
    def _plot_spectrum(ref: Clic51Extra, gen: Clic51Extra, path: Path) -> str:
        from caloforge.evaluate.plots import GENERATED_COLOUR, REFERENCE_COLOUR, setup_style

        plt = setup_style()
        fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.0))
        for ax, edges, key, log_x in ((axes[0], ref.linear_edges_mev, "linear_hist", False),
                                      (axes[1], _LOG_EDGES_MEV, "log_hist", True)):
            for side, colour in ((ref, REFERENCE_COLOUR), (gen, GENERATED_COLOUR)):
                counts = getattr(side, key) / max(side.n, 1)
                ax.stairs(counts, edges, color=colour,
                          label="reference" if side is ref else "generated")
            ax.set_yscale("log")
            if log_x:
                ax.set_xscale("log")
            ax.set_xlabel("cell energy [MeV]")
            ax.set_ylabel("cells per shower")
            ax.legend(frameon=False)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return Path(path).name

    @staticmethod
    def _plot_correlations(corr: dict, path: Path) -> str:
        from caloforge.evaluate.plots import setup_style

        plt = setup_style()
        diff = np.array(corr["difference"])
        names = corr["features"]
        fig, ax = plt.subplots(figsize=(7.0, 6.0))
        shown = ax.imshow(diff, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks(range(len(names)), names, rotation=90)
        ax.set_yticks(range(len(names)), names)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{diff[i, j]:.2f}", ha="center", va="center", fontsize=5)
        ax.set_title(f"reference - generated: max |diff| {corr['max_abs_difference']:.3f}, "
                     f"mean {corr['mean_abs_difference']:.3f}")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return Path(path).name
