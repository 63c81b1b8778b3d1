"""The evaluation pipeline: two shower files in, ``metrics.json`` and ``report.html`` out.

It composes the pieces of :mod:`caloforge.evaluate` and owns no mathematics. Named stages,
each a function of the previous stages' results and an :class:`EvaluationConfig`:

1. :func:`prepare` (headers, geometry, readout threshold, subsamples),
2. :func:`read_samples` (one streamed, thresholded pass over each file),
3. :func:`histogram_stage` (observables' histograms and separation powers),
4. :func:`distance_stage` (FPD, KPD),
5. :func:`neighbour_stage` (nearest neighbours),
6. :func:`classifier_stage` (the classifier test),
7. :func:`report_stage` (figures, ``metrics.json``, ``report.html``).

Files are streamed in chunks (bounded memory, whatever the geometry): per shower only the
shape observables and conditions are kept, plus the voxels of a subsample for the
voxel-level classifier inputs (all showers for calogan and atlas89; for clic51 as many as
fit in ``voxel_budget_mb`` after 3 x 3 transverse pooling).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field, replace
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

__all__ = [
    "EvaluationConfig",
    "evaluate_files",
    "check_compatible",
    "prepare",
    "read_samples",
    "histogram_stage",
    "distance_stage",
    "neighbour_stage",
    "classifier_stage",
    "report_stage",
]

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


@dataclass(frozen=True)
class EvaluationConfig:
    """Settings of one evaluation (what ``caloforge evaluate``'s options set).

    Attributes:
        classifier_inputs: any of ``"low"``, ``"normed"``, ``"high"``.
        repeat: classifier runs per input (error bar: their standard deviation).
        max_showers: use at most this many showers of each file (the first ones).
        classifier: run the classifier test.
        seed: seed of every random choice (subsamples, splits, initialisation).
        device: ``"cpu"`` or ``"cuda"`` for the classifier.
        epochs: most classifier epochs per run (early stopping usually ends sooner).
        plots: draw the figures (the report then has none).
        progress: progress bars.
        voxel_budget_mb: memory for the voxel-level classifier inputs of each sample, MB.
        threads: CPU threads for torch and the BLAS libraries (default: their own
            settings); 1 is often fastest on a machine shared with other jobs.
        threshold: readout threshold in MeV per cell, applied to both samples before every
            observable, histogram, classifier input and distance (cells below it count
            as empty); ``None``: the geometry's default
            (:func:`caloforge.data.threshold.default_threshold`).
        distances: compute FPD and KPD (omitted anyway, with a warning, when a sample has
            fewer showers than :func:`caloforge.evaluate.metrics.min_showers_for_distances`).
    """

    classifier_inputs: tuple[str, ...] = INPUTS
    repeat: int = 1
    max_showers: int | None = None
    classifier: bool = True
    seed: int = 0
    device: str = "cpu"
    epochs: int = 50
    plots: bool = True
    progress: bool = True
    voxel_budget_mb: float = 1024.0
    threads: int | None = None
    threshold: float | None = None
    distances: bool = True

    def validate(self) -> None:
        """Check the settings before any file is read.

        Raises:
            CaloforgeError: for an unknown classifier input, a negative or non-finite
                threshold, ``max_showers`` below 2, or CUDA asked for but missing.
        """
        for kind in self.classifier_inputs:
            if kind not in INPUTS:
                raise CaloforgeError(f"unknown classifier input {kind!r}; choose from "
                                     f"{', '.join(INPUTS)}")
        threshold = self.threshold
        if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
            raise CaloforgeError(f"the readout threshold must be a finite value >= 0 MeV, "
                                 f"got {threshold}")
        if self.max_showers is not None and self.max_showers < 2:
            raise CaloforgeError(f"--max-showers must be at least 2, got {self.max_showers}")
        if self.classifier:
            torch_device(self.device)  # fail before the long steps if CUDA is missing


def evaluate_files(reference_path: str | Path, generated_path: str | Path,
                   outdir: str | Path, config: EvaluationConfig | None = None,
                   **options) -> dict:
    """Compare generated showers with reference showers; write metrics and a report.

    Runs the stages :func:`prepare`, :func:`read_samples`, :func:`histogram_stage`,
    :func:`distance_stage`, :func:`neighbour_stage`, :func:`classifier_stage` and
    :func:`report_stage` in that order.

    Args:
        reference_path: the reference file (Geant4 or parametric showers).
        generated_path: the file to judge; same geometry, same range of conditions.
        outdir: folder for ``metrics.json``, ``report.html`` and the PNG figures.
        config: the settings (default: :class:`EvaluationConfig`'s).
        **options: fields of :class:`EvaluationConfig` that replace those of ``config``
            (e.g. ``epochs=3, plots=False``).

    Returns:
        The metrics also written to ``outdir/metrics.json``: ``classifier`` (per input:
        ``auc``, ``auc_uncalibrated``, ``jsd``, their errors and the runs),
        ``separation_power`` (observable -> value), ``fpd`` and ``kpd`` (``[value, error]``
        or ``None``, see ``distances``), ``threshold_MeV``, ``n_reference``,
        ``n_generated``, ``nearest_neighbours``, ``energy_response``,
        ``reference``/``generated`` (file, generator, particle), ``settings``,
        ``timing_s`` and ``warnings``.

    Raises:
        CaloforgeError: for bad settings, missing or unreadable files, files of different
            geometries or condition ranges, empty files, NaN or infinite values.

    Examples:
        >>> metrics = evaluate_files("reference.h5", "generated.h5", "evaluation",
        ...                          epochs=5, plots=False)  # doctest: +SKIP
        >>> metrics["classifier"]["high"]["auc"]  # doctest: +SKIP
        0.503
    """
    config = replace(config or EvaluationConfig(), **options)
    config = replace(config, classifier_inputs=tuple(config.classifier_inputs))
    config.validate()
    with contextlib.ExitStack() as stack:
        if config.threads is not None:
            from threadpoolctl import threadpool_limits  # installed with scikit-learn

            stack.enter_context(threadpool_limits(limits=int(config.threads)))
        t_start = time.perf_counter()
        created = not Path(outdir).exists()
        try:
            setup = prepare(reference_path, generated_path, outdir, config)
            samples = read_samples(setup, config)
            histograms = histogram_stage(samples)
            distances = distance_stage(samples, config)
            neighbours = neighbour_stage(samples)
            classifier = classifier_stage(samples, distances, config)
            return report_stage(setup, samples, histograms, distances, neighbours,
                                classifier, config, t_start)
        except BaseException:
            # a failed evaluation leaves no half-filled folder behind; one the user already
            # had is left as it was found, apart from the figures written into it
            if created:
                shutil.rmtree(outdir, ignore_errors=True)
            raise


@dataclass
class Setup:
    """What the stage :func:`prepare` decides before reading the showers.

    Attributes:
        paths: ``(reference, generated)`` file paths.
        infos: their headers (:func:`caloforge.data.file_info` plus ``path``).
        geometry: the common geometry.
        outdir: the output folder (created).
        threshold: readout threshold, MeV per cell; ``threshold_source`` says whose.
        n: ``(reference, generated)`` showers used.
        pool: transverse pooling of the voxel-level classifier inputs.
        sample: ``(reference, generated)`` sorted shower indices kept for them.
        warnings: messages for the report.
        timing: seconds per stage.
    """

    paths: tuple[Path, Path]
    infos: tuple[dict, dict]
    geometry: Geometry
    outdir: Path
    threshold: float
    threshold_source: str
    n: tuple[int, int]
    pool: int
    sample: tuple[np.ndarray, np.ndarray]
    warnings: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)


def prepare(reference_path: str | Path, generated_path: str | Path, outdir: str | Path,
            config: EvaluationConfig) -> Setup:
    """Stage "setup": read both headers, check them, choose the threshold and subsamples.

    Args:
        reference_path, generated_path: the two shower files.
        outdir: output folder (created here, after the checks).
        config: the settings.

    Returns:
        The :class:`Setup`: geometry, threshold (MeV per cell), showers used per file, and
        the indices of the showers whose voxels feed the voxel-level classifier inputs
        (pooled for fine geometries, subsampled to ``config.voxel_budget_mb``).

    Raises:
        CaloforgeError: for missing files, different geometries or an empty file.
    """
    t = time.perf_counter()
    paths = (Path(reference_path), Path(generated_path))
    infos = []
    for path in paths:
        info = dict(file_info(path))
        info["path"] = str(path)
        infos.append(info)
    geometry = check_compatible(*infos)
    threshold = (default_threshold(geometry) if config.threshold is None
                 else float(config.threshold))
    source = "user" if config.threshold is not None else f"default for {geometry.name}"
    n_ref, n_gen = (info["n"] if config.max_showers is None else
                    min(info["n"], config.max_showers) for info in infos)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    warnings: list[str] = []
    pool = pool_factor(geometry)
    n_pooled = sum(pooled_layer_sizes(geometry, pool))
    need_voxels = config.classifier and any(k in ("low", "normed")
                                            for k in config.classifier_inputs)
    cap = int(config.voxel_budget_mb * 2**20 // (4 * n_pooled)) if need_voxels else 0
    sample_ref = np.sort(rng.choice(n_ref, min(cap, n_ref), replace=False))
    sample_gen = np.sort(rng.choice(n_gen, min(cap, n_gen), replace=False))
    if need_voxels and (len(sample_ref) < n_ref or len(sample_gen) < n_gen):
        warnings.append(f"voxel-level classifier inputs use {len(sample_ref)} reference and "
                        f"{len(sample_gen)} generated showers (memory budget "
                        f"{config.voxel_budget_mb:g} MB per sample)")
    if pool > 1 and need_voxels:
        warnings.append(f"voxel-level classifier inputs are pooled {pool} x {pool} cells per "
                        f"layer ({n_pooled} inputs instead of {geometry.n_voxels})")
    return Setup(paths, tuple(infos), geometry, outdir, threshold, source, (n_ref, n_gen),
                 pool, (sample_ref, sample_gen), warnings, {"setup": time.perf_counter() - t})


@dataclass
class Samples:
    """What the stage :func:`read_samples` keeps of both files.

    Attributes:
        setup: the :class:`Setup` (its ``warnings`` and ``timing`` grow in later stages).
        reference, generated: per-file :class:`_Summary` (shower shapes, conditions in MeV
            and degrees, mean voxels, cell-energy counts, voxel subsample), thresholded.
        search: nearest-neighbour search of the queries in the reference, filled.
        gen_queries: the generated showers used as queries (thresholded).
        n_queries: ``(generated, reference)`` query counts.
    """

    setup: Setup
    reference: _Summary
    generated: _Summary
    search: NeighbourSearch
    gen_queries: object
    n_queries: tuple[int, int]


def read_samples(setup: Setup, config: EvaluationConfig) -> Samples:
    """Stage "read": stream both files once, thresholded, and keep per-shower summaries.

    Every chunk is thresholded (:func:`caloforge.data.threshold.apply_threshold`) before
    anything is computed from it: shower shapes (:func:`shower_shapes`), the mean shower,
    the cell-energy spectrum, the voxel subsample of the classifier, the geometry's extra
    observables and the nearest-neighbour search (100 generated and 100 held-out
    reference showers as queries, Euclidean distance over the voxels in MeV).

    Args:
        setup: the result of :func:`prepare`.
        config: the settings.

    Returns:
        The :class:`Samples`.

    Raises:
        CaloforgeError: for NaN or infinite values, or condition ranges that differ.
    """
    t = time.perf_counter()
    ref_path, gen_path = setup.paths
    n_ref, n_gen = setup.n
    n_stat_gen, n_stat_ref = min(_NN_STAT, n_gen), min(_NN_STAT, n_ref - 1)
    gen_queries = read_showers(gen_path, n=n_stat_gen)
    apply_threshold(gen_queries.voxels, setup.threshold, copy=False)
    queries = gen_queries.voxels
    if n_stat_ref > 0:
        ref_queries = read_showers(ref_path, n=n_stat_ref)
        apply_threshold(ref_queries.voxels, setup.threshold, copy=False)
        queries = np.concatenate([queries, ref_queries.voxels])
    exclude = np.concatenate([np.full(n_stat_gen, -1), np.arange(n_stat_ref)])
    search = NeighbourSearch(queries, k=1, exclude=exclude)
    gen = _summarise(gen_path, n_gen, setup.geometry, setup.pool, setup.sample[1], None,
                     "read generated", config.progress, setup.threshold)
    ref = _summarise(ref_path, n_ref, setup.geometry, setup.pool, setup.sample[0], search,
                     "read reference", config.progress, setup.threshold)
    setup.timing["read_and_shapes"] = time.perf_counter() - t
    paths = (str(ref_path), str(gen_path))
    _check_condition("incident energy", "GeV", 1000.0, ref.incident_energy,
                     gen.incident_energy, paths)
    if ref.angle is not None and gen.angle is not None:
        _check_condition("angle", "deg", 1.0, ref.angle, gen.angle, paths)
    ref_meta, gen_meta = setup.infos[0]["meta"], setup.infos[1]["meta"]
    if ref_meta.get("particle") and gen_meta.get("particle") and \
            ref_meta["particle"] != gen_meta["particle"]:
        setup.warnings.append(f"the files name different particles: reference "
                              f"{ref_meta['particle']!r}, generated {gen_meta['particle']!r}")
    learned = gen_meta.get("training_generator_version")
    if str(ref_meta.get("generator", "")).lower() == "parametric" and learned and \
            ref_meta.get("generator_version") != learned:
        setup.warnings.append(
            f"the model learned {learned} showers but the reference is "
            f"{ref_meta.get('generator_version') or 'an unversioned parametric file'}: the "
            f"figures measure the simulator's change as well; simulate the reference with "
            f"--simulator-version {learned}")
    return Samples(setup, ref, gen, search, gen_queries, (n_stat_gen, n_stat_ref))


def histogram_stage(samples: Samples) -> dict:
    """Stage "observables and histograms": one histogram per observable, both samples.

    Bins are fixed by the reference (:func:`common_bins`, 50 bins, values outside in the
    end bins), so a generated sample cannot move them.

    Args:
        samples: the result of :func:`read_samples`.

    Returns:
        ``{"separation": {observable: S}, "panels": {observable: histogram panel},
        "cell_separation": S of the cell-energy spectrum or None, "conditions": ranges
        (GeV, degrees) and S of the incident energy, "response": E_tot / E_inc profiles
        against the incident energy (GeV) and the angle (degrees)}``.
    """
    t = time.perf_counter()
    ref, gen = samples.reference, samples.generated
    separation, panels = {}, {}
    for name, obs in observables(samples.setup.geometry).items():
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
    out = {"separation": separation, "panels": panels, "cell_separation": cell_separation,
           "conditions": _conditions(ref, gen), "response": _responses(ref, gen)}
    samples.setup.timing["histograms"] = time.perf_counter() - t
    return out


def _conditions(ref: _Summary, gen: _Summary) -> dict:
    """Condition ranges (GeV, degrees) and the separation power of the incident energy."""
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
    return conditions


def _responses(ref: _Summary, gen: _Summary) -> dict:
    """Energy response profiles against each condition (10 bins)."""
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
    return response


def distance_stage(samples: Samples, config: EvaluationConfig) -> dict:
    """Stage "distances": FPD and KPD on the high-level feature vectors.

    Args:
        samples: the result of :func:`read_samples`.
        config: the settings (``distances``, ``seed``).

    Returns:
        ``{"features": (reference, generated) feature matrices (N, n_features), "names":
        feature names, "varying": mask of the columns compared (constant ones left out),
        "fpd", "kpd": (value, error) or None, "note": "computed" or why not,
        "min_showers": the minimum sample size}``. Features are dimensionless (layer
        energies as ``log10(E / MeV + 1)``); so are FPD and KPD.
    """
    t = time.perf_counter()
    ref, gen = samples.reference, samples.generated
    geometry = samples.setup.geometry
    ref_features, names = feature_matrix(ref.shapes, geometry)
    gen_features, _ = feature_matrix(gen.shapes, geometry)
    varying = (ref_features.std(axis=0) > 0) | (gen_features.std(axis=0) > 0)
    out = {"features": (ref_features, gen_features), "names": names, "varying": varying,
           "fpd": None, "kpd": None,
           "min_showers": min_showers_for_distances(int(varying.sum()))}
    if not config.distances:
        out["note"] = "skipped (--no-distances)"
    elif min(ref.n, gen.n) < out["min_showers"]:
        out["note"] = (f"omitted: FPD and KPD on {int(varying.sum())} features need at "
                       f"least {out['min_showers']} showers per sample for an honest error, "
                       f"got {ref.n} reference and {gen.n} generated")
        samples.setup.warnings.append(out["note"])
    else:
        out["note"] = "computed"
        out["fpd"] = fpd(ref_features[:, varying], gen_features[:, varying], seed=config.seed)
        out["kpd"] = kpd(ref_features[:, varying], gen_features[:, varying], seed=config.seed)
    samples.setup.timing["fpd_kpd"] = time.perf_counter() - t
    return out


def neighbour_stage(samples: Samples) -> dict:
    """Stage "nearest neighbours": distances of generated showers to the reference.

    Args:
        samples: the result of :func:`read_samples` (its search is complete).

    Returns:
        ``{"metrics": {"n_queries", "median_distance_generated_MeV",
        "median_distance_reference_MeV", "ratio"}, "index": (Q,) nearest reference shower
        of each generated query, "distance": (Q,) its distance in MeV}``.
    """
    n_gen = samples.n_queries[0]
    index, distance = samples.search.result()
    index, distance = index[:, 0], distance[:, 0]
    gen_d, ref_d = distance[:n_gen], distance[n_gen:]
    metrics = {
        "n_queries": int(n_gen),
        "median_distance_generated_MeV": float(np.median(gen_d)),
        "median_distance_reference_MeV": float(np.median(ref_d)) if len(ref_d) else None,
        "ratio": memorisation_ratio(gen_d, ref_d) if len(ref_d) else None,
    }
    return {"metrics": metrics, "index": index[:n_gen], "distance": gen_d}


def classifier_stage(samples: Samples, distances: dict, config: EvaluationConfig) -> dict:
    """Stage "classifier": the classifier test for each input.

    Args:
        samples: the result of :func:`read_samples` (voxel subsamples, conditions).
        distances: the result of :func:`distance_stage` (feature matrices).
        config: the settings.

    Returns:
        ``{input: result of train_classifier}`` (AUC, raw AUC, JSD; empty when
        ``config.classifier`` is false).
    """
    t = time.perf_counter()
    results = {}
    if config.classifier:
        for kind in config.classifier_inputs:
            x_ref, x_gen = _classifier_input(kind, samples, distances)
            results[kind] = train_classifier(
                x_ref, x_gen, repeat=config.repeat, seed=config.seed, device=config.device,
                epochs=config.epochs, progress=config.progress, desc=f"classifier {kind}",
                threads=config.threads)
            del x_ref, x_gen
    samples.setup.timing["classifier"] = time.perf_counter() - t
    return results


def _classifier_input(kind: str, samples: Samples, distances: dict
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Both samples' classifier inputs of one kind (see :mod:`.classifier`)."""
    ref, gen = samples.reference, samples.generated
    if kind == "high":
        ref_features, gen_features = distances["features"]
        return (high_level_input(ref_features, ref.incident_energy, ref.angle),
                high_level_input(gen_features, gen.incident_energy, gen.angle))
    pair = []
    for summary, index in zip((ref, gen), samples.setup.sample, strict=True):
        angle = None if summary.angle is None else summary.angle[index]
        energy = summary.incident_energy[index]
        if kind == "low":
            pair.append(low_level_input(summary.sample, energy, angle))
        else:
            sizes = pooled_layer_sizes(samples.setup.geometry, samples.setup.pool)
            pair.append(normed_input(summary.sample, sizes, energy, angle))
    return pair[0], pair[1]


def report_stage(setup: Setup, samples: Samples, histograms: dict, distances: dict,
                 neighbours: dict, classifier: dict, config: EvaluationConfig,
                 t_start: float) -> dict:
    """Stage "report": the geometry's extra observables, figures, metrics.json, report.html.

    Args:
        setup, samples, histograms, distances, neighbours, classifier: the earlier stages'
            results.
        config: the settings.
        t_start: ``time.perf_counter()`` at the start (for the total time).

    Returns:
        The metrics written to ``setup.outdir/metrics.json`` (see :func:`evaluate_files`).
    """
    ref, gen = samples.reference, samples.generated
    geometry_specific, extra_figures = None, []
    if ref.extra is not None:
        t = time.perf_counter()
        geometry_specific, extra_figures = type(ref.extra).compare(ref.extra, gen.extra,
                                                                   setup.outdir, config.plots)
        setup.timing["geometry_specific"] = time.perf_counter() - t
    metrics = _metrics(setup, samples, histograms, distances, neighbours, classifier, config)
    metrics["geometry_specific"] = geometry_specific
    figures = []
    if config.plots:
        t = time.perf_counter()
        nn_shown = min(_NN_PLOTTED, samples.n_queries[0])
        figures = _draw(setup.outdir, setup.geometry, observables(setup.geometry),
                        histograms["panels"], ref, gen, histograms["response"],
                        histograms["cell_separation"], samples.gen_queries,
                        neighbours["index"][:nn_shown], neighbours["distance"][:nn_shown],
                        setup.paths[0], config.progress, setup.threshold)
        setup.timing["plots"] = time.perf_counter() - t
        if extra_figures:
            figures.append((ref.extra.title or setup.geometry.name, list(extra_figures)))
    setup.timing["total"] = time.perf_counter() - t_start
    metrics["timing_s"] = setup.timing
    metrics = _clean(metrics)
    write_report(metrics, setup.outdir, figures)
    tmp = setup.outdir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    tmp.replace(setup.outdir / "metrics.json")
    return metrics


def _file_entry(info: dict, n_used: int) -> dict:
    meta = info["meta"]
    return {"path": info["path"], "n_file": info["n"], "n_used": n_used,
            "generator": meta.get("generator"), "generator_label": generator_label(meta),
            "generator_version": meta.get("generator_version"),
            "training_generator_version": meta.get("training_generator_version"),
            "particle": meta.get("particle"), "seed": meta.get("seed")}


def _metrics(setup: Setup, samples: Samples, histograms: dict, distances: dict,
             neighbours: dict, classifier: dict, config: EvaluationConfig) -> dict:
    """The metrics dictionary (before JSON cleaning); see :func:`evaluate_files`."""
    ref, gen = samples.reference, samples.generated
    geometry = setup.geometry
    names, varying = distances["names"], distances["varying"]
    response = histograms["response"]
    return {
        "caloforge_version": __version__,
        "geometry": geometry.name,
        "n_voxels": geometry.n_voxels,
        "threshold_MeV": setup.threshold,
        "threshold_source": setup.threshold_source,
        "n_reference": int(ref.n),
        "n_generated": int(gen.n),
        "reference": _file_entry(setup.infos[0], ref.n),
        "generated": _file_entry(setup.infos[1], gen.n),
        "classifier": classifier,
        "separation_power": histograms["separation"],
        "cell_energy_separation_power": histograms["cell_separation"],
        "fpd": None if distances["fpd"] is None else list(distances["fpd"]),
        "kpd": None if distances["kpd"] is None else list(distances["kpd"]),
        "distances": distances["note"],
        "distances_min_showers": distances["min_showers"],
        "fpd_kpd_features": [n for n, keep in zip(names, varying, strict=True) if keep],
        "conditions": histograms["conditions"],
        "energy_response": {k: {kk: vv for kk, vv in v.items() if kk not in ("x_label", "log")}
                            for k, v in response.items()},
        "nearest_neighbours": neighbours["metrics"],
        "settings": {"classifier": config.classifier,
                     "classifier_inputs": list(config.classifier_inputs),
                     "repeat": config.repeat, "epochs": config.epochs, "seed": config.seed,
                     "device": config.device, "max_showers": config.max_showers,
                     "voxel_pooling": setup.pool, "threads": config.threads,
                     "voxel_inputs_showers": [len(setup.sample[0]), len(setup.sample[1])],
                     "histogram_bins": _HIST_BINS, "threshold_MeV": setup.threshold,
                     "distances": config.distances},
        "warnings": setup.warnings,
    }


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
