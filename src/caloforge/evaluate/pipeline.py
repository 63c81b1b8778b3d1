"""The evaluation pipeline: two shower files in, ``metrics.json`` and ``report.html`` out.

It composes the pieces of :mod:`caloforge.evaluate` and owns no mathematics. Files are
streamed in chunks (bounded memory, whatever the geometry): per shower only the shape
observables and conditions are kept, plus the voxels of a subsample for the voxel-level
classifier inputs (all showers for calogan and atlas89; for clic51 as many as fit in
``voxel_budget_mb`` after 3 x 3 transverse pooling).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from caloforge._version import __version__
from caloforge.data import file_info, iter_showers, read_showers
from caloforge.data.threshold import apply_threshold, default_threshold
from caloforge.errors import CaloforgeError
from caloforge.evaluate.classifier import (
    INPUTS,
    high_level_input,
    low_level_input,
    normed_input,
    pool_factor,
    pool_voxels,
    pooled_layer_sizes,
    torch_device,
    train_classifier,
)
from caloforge.evaluate.extras import GeometryExtra, extra_for
from caloforge.evaluate.metrics import (
    clipped_histogram,
    common_bins,
    fpd,
    histogram_separation_power,
    kpd,
    min_showers_for_distances,
)
from caloforge.evaluate.neighbours import NeighbourSearch, memorisation_ratio
from caloforge.evaluate.observables import (
    CELL_ENERGY_EDGES,
    cell_energy_histogram,
    feature_matrix,
    observables,
    response_profile,
    shower_shapes,
)
from caloforge.evaluate.report import generator_label, write_report
from caloforge.geometry import Geometry

__all__ = ["evaluate_files", "check_compatible"]

_HIST_BINS = 50
_CHUNK_BYTES = 256 * 2**20  # voxels read per chunk
_NN_PLOTTED = 4  # generated showers shown with their nearest neighbours
_NN_STAT = 100  # showers per side for the nearest-neighbour distance statistic


@dataclass
class _Summary:
    """What one streamed pass over a file keeps."""

    shapes: dict[str, list] = field(default_factory=dict)
    incident_energy: list = field(default_factory=list)
    angle: list = field(default_factory=list)
    voxel_sum: np.ndarray | None = None
    cell_counts: np.ndarray | None = None
    sample: list = field(default_factory=list)
    extra: GeometryExtra | None = None
    n: int = 0

    def finish(self) -> None:
        self.shapes = {k: np.concatenate(v) for k, v in self.shapes.items()}
        self.incident_energy = np.concatenate(self.incident_energy)
        self.angle = np.concatenate(self.angle) if self.angle else None
        self.sample = (np.concatenate(self.sample) if self.sample else None)

    @property
    def mean_voxels(self) -> np.ndarray:
        return self.voxel_sum / max(self.n, 1)


def _summarise(path: Path, n: int, geometry: Geometry, pool: int, sample_index: np.ndarray,
               search: NeighbourSearch | None, desc: str, progress: bool,
               threshold: float) -> _Summary:
    from tqdm.auto import tqdm

    chunk_size = int(max(64, min(10_000, _CHUNK_BYTES // (4 * geometry.n_voxels))))
    out = _Summary(voxel_sum=np.zeros(geometry.n_voxels), cell_counts=np.zeros(
        len(CELL_ENERGY_EDGES) - 1, dtype=np.int64))
    extra_cls = extra_for(geometry)
    if extra_cls is not None:
        out.extra = extra_cls(geometry)
    start = 0
    with tqdm(total=n, desc=desc, unit="shower", disable=not progress, leave=False) as bar:
        for chunk in iter_showers(path, chunk_size=chunk_size, stop=n):
            chunk.check_finite(str(path))
            apply_threshold(chunk.voxels, threshold, copy=False)
            for name, values in shower_shapes(chunk).items():
                out.shapes.setdefault(name, []).append(values.astype(np.float64))
            out.incident_energy.append(chunk.incident_energy.astype(np.float64))
            if chunk.angle is not None:
                out.angle.append(chunk.angle.astype(np.float64))
            out.voxel_sum += chunk.voxels.sum(axis=0, dtype=np.float64)
            out.cell_counts += cell_energy_histogram(chunk.voxels)
            stop = start + len(chunk)
            lo, hi = np.searchsorted(sample_index, [start, stop])
            if hi > lo:
                rows = sample_index[lo:hi] - start
                out.sample.append(pool_voxels(chunk.voxels[rows], geometry, pool))
            if search is not None:
                search.update(chunk.voxels)
            if out.extra is not None:
                out.extra.update(chunk.voxels, chunk.incident_energy, chunk.angle)
            out.n += len(chunk)
            start = stop
            bar.update(len(chunk))
    out.finish()
    return out


def check_compatible(reference: dict, generated: dict) -> Geometry:
    """Raise a :class:`CaloforgeError` unless two files' headers can be compared.

    Args:
        reference, generated: :func:`caloforge.data.file_info` of the two files, with
            ``path`` added.

    Returns:
        Their common geometry.
    """
    g_ref, g_gen = reference["geometry"], generated["geometry"]
    if g_ref.name != g_gen.name or g_ref.layers != g_gen.layers:
        raise CaloforgeError(
            f"the files hold different geometries: {reference['path']} is {g_ref.name!r} "
            f"({g_ref.n_voxels} voxels), {generated['path']} is {g_gen.name!r} "
            f"({g_gen.n_voxels} voxels); compare showers of one calorimeter"
        )
    for info in (reference, generated):
        if info["n"] == 0:
            raise CaloforgeError(f"{info['path']}: the file holds no showers")
    return g_ref


def _check_condition(name: str, unit: str, scale: float, ref: np.ndarray, gen: np.ndarray,
                     paths: tuple) -> None:
    """Error unless the two samples cover the same range of a condition."""
    r_lo, r_hi, g_lo, g_hi = ref.min(), ref.max(), gen.min(), gen.max()
    text = (f"reference {paths[0]} has {name}s {r_lo / scale:.4g}-{r_hi / scale:.4g} {unit}, "
            f"generated {paths[1]} has {g_lo / scale:.4g}-{g_hi / scale:.4g} {unit}")
    if g_lo > r_hi or r_lo > g_hi:
        raise CaloforgeError(f"{name} ranges do not overlap: {text}; generate showers for the "
                             f"conditions of the reference")
    width = max(r_hi - r_lo, g_hi - g_lo)
    # Edges of a uniform sample of n fluctuate by ~width / n: allow that, plus 10%.
    tolerance = max(0.1, 10.0 / min(len(ref), len(gen))) * width
    if width == 0:
        tolerance = 1e-3 * abs(r_hi)
    if abs(r_lo - g_lo) > tolerance or abs(r_hi - g_hi) > tolerance:
        raise CaloforgeError(f"{name} ranges differ: {text}; the classifier would separate the "
                             f"samples by their conditions alone, so generate showers over "
                             f"the reference's range (e.g. with the reference's conditions)")


def _condition_edges(ref: np.ndarray, gen: np.ndarray, bins: int) -> tuple[np.ndarray, bool]:
    lo, hi = max(ref.min(), gen.min()), min(ref.max(), gen.max())
    if hi <= lo:
        lo, hi = lo * 0.999, lo * 1.001 + 1e-9
    if lo > 0 and hi / lo > 5:
        return np.logspace(np.log10(lo), np.log10(hi), bins + 1), True
    return np.linspace(lo, hi, bins + 1), False


def _clean(obj):
    """JSON-safe copy: NaN/inf to None, numpy scalars to Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def evaluate_files(reference_path: str | Path, generated_path: str | Path,
                   outdir: str | Path, classifier_inputs: Sequence[str] = INPUTS,
                   repeat: int = 1, max_showers: int | None = None, classifier: bool = True,
                   seed: int = 0, device: str = "cpu", epochs: int = 50,
                   plots: bool = True, progress: bool = True,
                   voxel_budget_mb: float = 1024.0, threads: int | None = None,
                   threshold: float | None = None, distances: bool = True) -> dict:
    """Compare generated showers with reference showers; write metrics and a report.

    Args:
        reference_path: the reference file (Geant4 or parametric showers).
        generated_path: the file to judge; same geometry, same range of conditions.
        outdir: folder for ``metrics.json``, ``report.html`` and the PNG figures.
        classifier_inputs: any of ``"low"``, ``"normed"``, ``"high"``.
        repeat: classifier runs per input (error bar: their standard deviation).
        max_showers: use at most this many showers of each file (the first ones).
        classifier: run the classifier test.
        seed: seed of every random choice (subsamples, splits, initialisation).
        device: ``"cpu"`` or ``"cuda"`` for the classifier.
        epochs: most classifier epochs per run (early stopping usually ends sooner).
        plots: draw the figures (the report then has none).
        progress: progress bars.
        voxel_budget_mb: memory for the voxel-level classifier inputs of each sample.
        threads: CPU threads for torch and the BLAS libraries (default: their own
            settings); 1 is often fastest on a machine shared with other jobs.
        threshold: readout threshold in MeV per cell, applied to both samples before every
            observable, histogram, classifier input and distance (cells below it count
            as empty); ``None``: the geometry's default
            (:func:`caloforge.data.threshold.default_threshold`).
        distances: compute FPD and KPD (omitted anyway, with a warning, when a sample has
            fewer showers than :func:`caloforge.evaluate.metrics.min_showers_for_distances`).

    Returns:
        The metrics also written to ``outdir/metrics.json``: ``classifier`` (per input:
        ``auc``, ``jsd``, their errors and the runs), ``separation_power`` (observable ->
        value), ``fpd`` and ``kpd`` (``[value, error]``), ``n_reference``, ``n_generated``,
        ``nearest_neighbours``, ``energy_response``, ``reference``/``generated`` (file,
        generator, particle), ``settings``, ``timing_s`` and ``warnings``.
    """
    with contextlib.ExitStack() as stack:
        if threads is not None:
            from threadpoolctl import threadpool_limits  # installed with scikit-learn

            stack.enter_context(threadpool_limits(limits=int(threads)))
        return _evaluate(reference_path, generated_path, outdir, classifier_inputs, repeat,
                         max_showers, classifier, seed, device, epochs, plots, progress,
                         voxel_budget_mb, threads, threshold, distances)


def _evaluate(reference_path, generated_path, outdir, classifier_inputs, repeat, max_showers,
              classifier, seed, device, epochs, plots, progress, voxel_budget_mb,
              threads, threshold, distances) -> dict:
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    reference_path, generated_path = Path(reference_path), Path(generated_path)
    for kind in classifier_inputs:
        if kind not in INPUTS:
            raise CaloforgeError(f"unknown classifier input {kind!r}; choose from "
                                 f"{', '.join(INPUTS)}")
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise CaloforgeError(f"the readout threshold must be a finite value >= 0 MeV, got "
                             f"{threshold}")
    if max_showers is not None and max_showers < 2:
        raise CaloforgeError(f"--max-showers must be at least 2, got {max_showers}")
    if classifier:
        torch_device(device)  # fail before the long steps if CUDA is missing
    infos = []
    for path in (reference_path, generated_path):
        info = dict(file_info(path))
        info["path"] = str(path)
        infos.append(info)
    ref_info, gen_info = infos
    geometry = check_compatible(ref_info, gen_info)
    threshold_source = "user" if threshold is not None else f"default for {geometry.name}"
    threshold = default_threshold(geometry) if threshold is None else float(threshold)
    n_ref = ref_info["n"] if max_showers is None else min(ref_info["n"], max_showers)
    n_gen = gen_info["n"] if max_showers is None else min(gen_info["n"], max_showers)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    warnings: list[str] = []

    # Voxel-level classifier inputs: pooled for fine geometries, subsampled to the budget.
    pool = pool_factor(geometry)
    n_pooled = sum(pooled_layer_sizes(geometry, pool))
    need_voxels = classifier and any(k in ("low", "normed") for k in classifier_inputs)
    cap = int(voxel_budget_mb * 2**20 // (4 * n_pooled)) if need_voxels else 0
    sample_ref = np.sort(rng.choice(n_ref, min(cap, n_ref), replace=False))
    sample_gen = np.sort(rng.choice(n_gen, min(cap, n_gen), replace=False))
    if need_voxels and (len(sample_ref) < n_ref or len(sample_gen) < n_gen):
        warnings.append(f"voxel-level classifier inputs use {len(sample_ref)} reference and "
                        f"{len(sample_gen)} generated showers (memory budget "
                        f"{voxel_budget_mb:g} MB per sample)")
    if pool > 1 and need_voxels:
        warnings.append(f"voxel-level classifier inputs are pooled {pool} x {pool} cells per "
                        f"layer ({n_pooled} inputs instead of {geometry.n_voxels})")

    # Nearest neighbours: generated showers, and held-out reference showers as a yardstick.
    n_stat_gen, n_stat_ref = min(_NN_STAT, n_gen), min(_NN_STAT, n_ref - 1)
    gen_queries = read_showers(generated_path, n=n_stat_gen)
    ref_queries = read_showers(reference_path, n=n_stat_ref) if n_stat_ref > 0 else None
    for queries in (gen_queries, ref_queries):
        if queries is not None:
            apply_threshold(queries.voxels, threshold, copy=False)
    queries = gen_queries.voxels if ref_queries is None else np.concatenate(
        [gen_queries.voxels, ref_queries.voxels])
    exclude = np.concatenate([np.full(n_stat_gen, -1), np.arange(n_stat_ref)])
    search = NeighbourSearch(queries, k=1, exclude=exclude)
    timing["setup"] = time.perf_counter() - t_start

    t = time.perf_counter()
    gen = _summarise(generated_path, n_gen, geometry, pool, sample_gen, None,
                     "read generated", progress, threshold)
    ref = _summarise(reference_path, n_ref, geometry, pool, sample_ref, search,
                     "read reference", progress, threshold)
    timing["read_and_shapes"] = time.perf_counter() - t

    paths = (str(reference_path), str(generated_path))
    _check_condition("incident energy", "GeV", 1000.0, ref.incident_energy,
                     gen.incident_energy, paths)
    if ref.angle is not None and gen.angle is not None:
        _check_condition("angle", "deg", 1.0, ref.angle, gen.angle, paths)
    ref_meta, gen_meta = ref_info["meta"], gen_info["meta"]
    if ref_meta.get("particle") and gen_meta.get("particle") and \
            ref_meta["particle"] != gen_meta["particle"]:
        warnings.append(f"the files name different particles: reference "
                        f"{ref_meta['particle']!r}, generated {gen_meta['particle']!r}")

    # Histograms and separation powers on one binning per observable.
    t = time.perf_counter()
    info = observables(geometry)
    separation, panels = {}, {}
    for name, obs in info.items():
        edges = common_bins(ref.shapes[name], gen.shapes[name], _HIST_BINS, obs.scale,
                            limits=obs.limits)
        counts = [clipped_histogram(ref.shapes[name], edges),
                  clipped_histogram(gen.shapes[name], edges)]
        separation[name] = histogram_separation_power(*counts)
        panels[name] = {"edges": edges, "reference": counts[0], "generated": counts[1],
                        "label": obs.label, "log": obs.scale == "log",
                        "separation": separation[name]}
    cell_separation = (histogram_separation_power(ref.cell_counts, gen.cell_counts)
                       if ref.cell_counts.sum() and gen.cell_counts.sum() else None)
    e_edges = common_bins(ref.incident_energy, gen.incident_energy, 20)
    conditions = {
        "incident_energy_range_GeV": {
            "reference": [ref.incident_energy.min() / 1000, ref.incident_energy.max() / 1000],
            "generated": [gen.incident_energy.min() / 1000, gen.incident_energy.max() / 1000]},
        "incident_energy_separation_power": histogram_separation_power(
            clipped_histogram(ref.incident_energy, e_edges),
            clipped_histogram(gen.incident_energy, e_edges)),
    }
    if ref.angle is not None and gen.angle is not None:
        conditions["angle_range_deg"] = {"reference": [ref.angle.min(), ref.angle.max()],
                                         "generated": [gen.angle.min(), gen.angle.max()]}

    # Energy response against each condition.
    response = {}
    cond_pairs = [("incident_energy", "incident energy [GeV]", ref.incident_energy,
                   gen.incident_energy, 1000.0)]
    if ref.angle is not None and gen.angle is not None:
        cond_pairs.append(("angle", "angle [deg]", ref.angle, gen.angle, 1.0))
    for key, label, r_cond, g_cond, scale in cond_pairs:
        edges, log = _condition_edges(r_cond, g_cond, 10)
        response[key] = {
            "x_label": label, "log": log, "edges": edges / scale,
            "centres": (np.sqrt(edges[1:] * edges[:-1]) if log else
                        0.5 * (edges[1:] + edges[:-1])) / scale,
            "reference": response_profile(r_cond, ref.shapes["response"], edges),
            "generated": response_profile(g_cond, gen.shapes["response"], edges),
        }
    timing["histograms"] = time.perf_counter() - t

    # FPD and KPD on the high-level feature vector (constant columns left out).
    t = time.perf_counter()
    ref_features, feature_names = feature_matrix(ref.shapes, geometry)
    gen_features, _ = feature_matrix(gen.shapes, geometry)
    varying = (ref_features.std(axis=0) > 0) | (gen_features.std(axis=0) > 0)
    fpd_value = kpd_value = None
    needed = min_showers_for_distances(int(varying.sum()))
    if not distances:
        distance_note = "skipped (--no-distances)"
    elif min(ref.n, gen.n) < needed:
        distance_note = (f"omitted: FPD and KPD on {int(varying.sum())} features need at "
                         f"least {needed} showers per sample for an honest error, got "
                         f"{ref.n} reference and {gen.n} generated")
        warnings.append(distance_note)
    else:
        distance_note = "computed"
        fpd_value = fpd(ref_features[:, varying], gen_features[:, varying], seed=seed)
        kpd_value = kpd(ref_features[:, varying], gen_features[:, varying], seed=seed)
    timing["fpd_kpd"] = time.perf_counter() - t

    # Nearest neighbours.
    nn_index, nn_distance = search.result()
    nn_index, nn_distance = nn_index[:, 0], nn_distance[:, 0]
    gen_d, ref_d = nn_distance[:n_stat_gen], nn_distance[n_stat_gen:]
    nearest = {
        "n_queries": int(n_stat_gen),
        "median_distance_generated_MeV": float(np.median(gen_d)),
        "median_distance_reference_MeV": float(np.median(ref_d)) if len(ref_d) else None,
        "ratio": memorisation_ratio(gen_d, ref_d) if len(ref_d) else None,
    }

    # Classifier.
    t = time.perf_counter()
    classifier_results = {}
    if classifier:
        for kind in classifier_inputs:
            if kind == "high":
                x_ref = high_level_input(ref_features, ref.incident_energy, ref.angle)
                x_gen = high_level_input(gen_features, gen.incident_energy, gen.angle)
            else:
                r_angle = None if ref.angle is None else ref.angle[sample_ref]
                g_angle = None if gen.angle is None else gen.angle[sample_gen]
                if kind == "low":
                    x_ref = low_level_input(ref.sample, ref.incident_energy[sample_ref], r_angle)
                    x_gen = low_level_input(gen.sample, gen.incident_energy[sample_gen], g_angle)
                else:
                    sizes = pooled_layer_sizes(geometry, pool)
                    x_ref = normed_input(ref.sample, sizes, ref.incident_energy[sample_ref],
                                         r_angle)
                    x_gen = normed_input(gen.sample, sizes, gen.incident_energy[sample_gen],
                                         g_angle)
            classifier_results[kind] = train_classifier(
                x_ref, x_gen, repeat=repeat, seed=seed, device=device, epochs=epochs,
                progress=progress, desc=f"classifier {kind}", threads=threads)
            del x_ref, x_gen
    timing["classifier"] = time.perf_counter() - t

    # Geometry-specific observables (caloforge.evaluate.extras).
    geometry_specific, extra_figures = None, []
    if ref.extra is not None:
        t = time.perf_counter()
        geometry_specific, extra_figures = type(ref.extra).compare(ref.extra, gen.extra,
                                                                   outdir, plots)
        timing["geometry_specific"] = time.perf_counter() - t

    metrics = {
        "caloforge_version": __version__,
        "geometry": geometry.name,
        "n_voxels": geometry.n_voxels,
        "threshold_MeV": threshold,
        "threshold_source": threshold_source,
        "n_reference": int(ref.n),
        "n_generated": int(gen.n),
        "reference": {"path": str(reference_path), "n_file": ref_info["n"], "n_used": ref.n,
                      "generator": ref_meta.get("generator"),
                      "generator_label": generator_label(ref_meta),
                      "particle": ref_meta.get("particle"), "seed": ref_meta.get("seed")},
        "generated": {"path": str(generated_path), "n_file": gen_info["n"], "n_used": gen.n,
                      "generator": gen_meta.get("generator"),
                      "generator_label": generator_label(gen_meta),
                      "particle": gen_meta.get("particle"), "seed": gen_meta.get("seed")},
        "classifier": classifier_results,
        "separation_power": separation,
        "cell_energy_separation_power": cell_separation,
        "fpd": None if fpd_value is None else list(fpd_value),
        "kpd": None if kpd_value is None else list(kpd_value),
        "distances": distance_note,
        "distances_min_showers": needed,
        "fpd_kpd_features": [n for n, keep in zip(feature_names, varying, strict=True) if keep],
        "conditions": conditions,
        "energy_response": {k: {kk: vv for kk, vv in v.items() if kk not in ("x_label", "log")}
                            for k, v in response.items()},
        "nearest_neighbours": nearest,
        "geometry_specific": geometry_specific,
        "settings": {"classifier": classifier, "classifier_inputs": list(classifier_inputs),
                     "repeat": repeat, "epochs": epochs, "seed": seed, "device": device,
                     "max_showers": max_showers, "voxel_pooling": pool, "threads": threads,
                     "voxel_inputs_showers": [len(sample_ref), len(sample_gen)],
                     "histogram_bins": _HIST_BINS, "threshold_MeV": threshold,
                     "distances": distances},
        "timing_s": timing,
        "warnings": warnings,
    }

    figures = []
    if plots:
        t = time.perf_counter()
        figures = _draw(outdir, geometry, info, panels, ref, gen, response, cell_separation,
                        gen_queries, nn_index[:min(_NN_PLOTTED, n_stat_gen)],
                        nn_distance[:min(_NN_PLOTTED, n_stat_gen)], reference_path, progress,
                        threshold)
        timing["plots"] = time.perf_counter() - t
        if extra_figures:
            figures.append((ref.extra.title or geometry.name, list(extra_figures)))
    timing["total"] = time.perf_counter() - t_start
    metrics = _clean(metrics)
    write_report(metrics, outdir, figures)
    tmp = outdir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    tmp.replace(outdir / "metrics.json")
    return metrics


def _draw(outdir: Path, geometry: Geometry, info: dict, panels: dict, ref: _Summary,
          gen: _Summary, response: dict, cell_separation, gen_queries, nn_index, nn_distance,
          reference_path: Path, progress: bool, threshold: float) -> list:
    """Write every figure; return the report's sections."""
    from tqdm.auto import tqdm

    from caloforge.evaluate import plots

    families: dict[str, list[str]] = {}
    for name, obs in info.items():
        families.setdefault(obs.family, []).append(name)
    hist_items = []
    for family, names in tqdm(families.items(), desc="plots", unit="figure", leave=False,
                              disable=not progress):
        file = f"hist_{family}.png"
        plots.plot_histograms([panels[n] for n in names], outdir / file, title=family)
        hist_items.append((f"{family}: reference (filled) vs generated (line), ratio below; "
                           f"S = separation power", file))
    sections = [("Shower-shape histograms", hist_items)]

    plots.plot_average_images(ref.mean_voxels, gen.mean_voxels, geometry,
                              outdir / "average_images.png")
    sections.append(("Average shower per layer", [(
        "Mean deposit per cell (log colour scale) for reference and generated showers, and "
        "their ratio (generated / reference; white: empty in the reference)",
        "average_images.png")]))

    profiles = list(response.values())
    plots.plot_energy_response(profiles, outdir / "energy_response.png")
    items = [("Energy response E_tot / E_inc against the conditions (mean, band: RMS)",
              "energy_response.png")]
    if cell_separation is not None:
        plots.plot_cell_spectrum(CELL_ENERGY_EDGES, ref.cell_counts, gen.cell_counts,
                                 outdir / "cell_energy.png", separation=cell_separation)
        items.append(("Spectrum of non-zero cell energies", "cell_energy.png"))
    sections.append(("Energy response and cell-energy spectrum", items))

    if len(nn_index):
        neighbours = [read_showers(reference_path, n=1, start=int(i), check=False)
                      for i in nn_index]
        for shower in neighbours:
            apply_threshold(shower.voxels, threshold, copy=False)
        plots.plot_neighbours(gen_queries.voxels[:len(nn_index)],
                              np.concatenate([s.voxels for s in neighbours]), nn_distance,
                              geometry, outdir / "nearest_neighbours.png",
                              gen_queries.incident_energy[:len(nn_index)],
                              np.concatenate([s.incident_energy for s in neighbours]))
        sections.append(("Nearest neighbours", [(
            "Generated showers (left) and the closest reference shower (right, Euclidean "
            "distance over all voxels in MeV)", "nearest_neighbours.png")]))
    return sections
