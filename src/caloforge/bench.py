"""Timing: milliseconds per shower at several batch sizes, measured side by side.

Every timing here is taken in the same process, on the same hardware, with warm-up calls
excluded, so ratios between generators (a model vs the parametric simulator vs Geant4)
are meaningful. Absolute numbers depend on the machine: :func:`hardware` records it.

The timer is hand-written rather than :mod:`timeit` or pytest-benchmark: it needs a time
budget per batch size and skips batch sizes predicted to exceed it, which neither offers.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Timing", "hardware", "time_per_shower", "markdown_table", "REFERENCE_FIGURES",
           "GEANT4_EM_MS_PER_SHOWER",
           "model_sampler", "onnx_sampler", "simulator_sampler", "load_bench_model",
           "bench_runs"]

#: Geant4's CPU time per CaloGAN shower, ms: the mean ``cpu_s`` of the 4000 showers (2000 e+,
#: 2000 photons, 1-100 GeV, 1.0906 s and 1.0958 s) of the reference files made with Geant4
#: 11.4.1 (electromagnetic physics, data-free models) through geant4-pybind, one thread on
#: a shared 2-core machine of the kind caloforge is developed on (CPU time, not wall time;
#: standard error of the mean 10 ms). Measured once; the package does not read those files.
GEANT4_EM_MS_PER_SHOWER = 1093.2

#: Per-shower times (ms) by batch size: the Geant4 figure above and the figures the papers
#: quote on their own hardware, for the table's reference rows.
REFERENCE_FIGURES = {
    "Geant4 11.4 (electromagnetic physics, data-free models), 1 thread, this machine class":
        {1: GEANT4_EM_MS_PER_SHOWER},
    "CaloGAN (paper, arXiv:1712.10321; Intel Xeon CPU)":
        {1: 13.1, 10: 5.11, 128: 2.19, 1024: 2.03},
    "CaloFlow student (paper, arXiv:2110.11377; NVIDIA TITAN V GPU)":
        {10: 5.81, 100: 0.60, 1000: 0.12, 10000: 0.08},
    "CaloFlow teacher (papers, arXiv:2106.05285, 2110.11377; NVIDIA TITAN V GPU)":
        {10: 835.0, 100: 96.1, 1000: 41.4, 10000: 36.2},
}


@dataclass
class Timing:
    """One measured configuration.

    Attributes:
        name: what was timed (``"calogan"``, ``"parametric eplus"``, ...).
        batch_size: showers per call.
        ms_per_shower: median over repeats, in milliseconds per shower.
        spread: half the interquartile range over repeats, ms per shower.
        repeats: number of timed calls.
        backend: ``"torch"``, ``"onnxruntime"``, ``"numpy"`` or ``"geant4"``.
        device: ``"cpu"`` or the CUDA device name.
        threads: intra-op threads in use.
        note: e.g. why a batch size was skipped.
    """

    name: str
    batch_size: int
    ms_per_shower: float | None
    spread: float | None
    repeats: int
    backend: str
    device: str
    threads: int
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def hardware() -> dict:
    """The machine the timings were taken on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def time_per_shower(sample: Callable[[int], object], batch_sizes: list[int], *, name: str,
                    backend: str, device: str = "cpu", threads: int = 1, repeats: int = 5,
                    warmup: int = 1, max_seconds: float = 60.0,
                    sync: Callable[[], None] | None = None) -> list[Timing]:
    """Time ``sample(batch_size)`` at each batch size.

    Args:
        sample: makes ``batch_size`` showers; its return value is ignored.
        batch_sizes: batch sizes, in increasing order.
        name, backend, device, threads: labels recorded in each :class:`Timing`.
        repeats: timed calls per batch size (median and interquartile range reported).
        warmup: untimed calls first (allocations, JIT, caches).
        max_seconds: budget per batch size: repeats stop before a call that would end past
            it; a batch size whose single call is predicted (from the previous batch size)
            to take longer is skipped, and one predicted to take over a quarter of it is
            timed without warm-up (its one-time costs are negligible beside it).
        sync: called after each call (e.g. ``torch.cuda.synchronize``) so that
            asynchronous devices are timed correctly.

    Returns:
        One :class:`Timing` per batch size.

    Examples:
        >>> timings = time_per_shower(lambda b: sum(range(b)), [1, 10], name="sum",
        ...                           backend="python", repeats=2)
        >>> [(t.batch_size, t.repeats, t.ms_per_shower > 0) for t in timings]
        [(1, 2, True), (10, 2, True)]
        >>> print(markdown_table(timings, [1, 10]).splitlines()[0])
        | generator | backend | device | threads | batch 1 | batch 10 |
    """
    results: list[Timing] = []
    per_shower = 0.0  # seconds per shower at the previous batch size
    for batch in batch_sizes:
        predicted = per_shower * batch  # seconds for one call, from the previous batch size
        if predicted > max_seconds:
            results.append(Timing(name, batch, None, None, 0, backend, device, threads,
                                  f"skipped: one call would take about {predicted:.0f} s, "
                                  f"over the {max_seconds:g} s budget"))
            continue
        # a call that takes a large part of the budget has negligible one-time costs
        for _ in range(warmup if predicted <= max_seconds / 4 else 0):
            sample(batch)
            if sync:
                sync()
        times = []
        start_all = time.perf_counter()
        for _ in range(repeats):
            start = time.perf_counter()
            sample(batch)
            if sync:
                sync()
            times.append((time.perf_counter() - start) * 1000.0 / batch)
            # no call that would end past the budget (the first always runs)
            if time.perf_counter() - start_all + times[-1] * batch / 1000.0 > max_seconds:
                break
        median = statistics.median(times)
        per_shower = median / 1000.0
        q = np.percentile(times, [25, 75]) if len(times) > 1 else (times[0], times[0])
        results.append(Timing(name, batch, median, float(q[1] - q[0]) / 2, len(times),
                              backend, device, threads))
    return results


def markdown_table(timings: list[Timing], batch_sizes: list[int],
                   reference: dict[str, dict[int, float]] | None = None) -> str:
    """A Markdown table: one row per (name, backend, device), one column per batch size."""
    header = "| generator | backend | device | threads | " + " | ".join(
        f"batch {b}" for b in batch_sizes) + " |"
    lines = [header, "|" + "---|" * (4 + len(batch_sizes))]
    rows: dict[tuple, dict[int, Timing]] = {}
    for t in timings:
        rows.setdefault((t.name, t.backend, t.device, t.threads), {})[t.batch_size] = t
    for (name, backend, device, threads), by_batch in rows.items():
        cells = []
        for b in batch_sizes:
            t = by_batch.get(b)
            if t is None or t.ms_per_shower is None:
                cells.append("-")
            else:
                cells.append(f"{_fmt(t.ms_per_shower)} ± {_fmt(t.spread)}")
        lines.append(f"| {name} | {backend} | {device} | {threads} | " + " | ".join(cells) + " |")
    for name, by_batch in (reference or {}).items():
        cells = [_fmt(by_batch[b]) if b in by_batch else "-" for b in batch_sizes]
        lines.append(f"| {name} | quoted | - | - | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(ms: float) -> str:
    if ms >= 100:
        return f"{ms:.0f}"
    return f"{ms:.3g}"


def _conditions(model, n: int, seed: int = 0) -> np.ndarray:
    """``(n, n_conditions)`` float32 conditions spread uniformly over the trained range."""
    rng = np.random.default_rng(seed)
    cond = model.conditioning
    cols = [rng.uniform(*(cond.energy if name == "energy" else cond.angle), n)
            for name in cond.names]
    return np.stack(cols, axis=1).astype(np.float32)


def model_sampler(model, max_batch: int, device: str = "cpu") -> tuple[Callable, Callable]:
    """``(sample, sync)`` for a model in PyTorch: ``sample(b)`` draws latent noise and
    decodes ``b`` showers (conditions prepared beforehand, as a simulation framework has
    them), ``sync`` waits for an asynchronous device."""
    import torch

    model = model.to(device).eval()
    conditions = torch.from_numpy(_conditions(model, max_batch)).to(device)

    def sample(b: int) -> None:
        with torch.inference_mode():
            model.sample(conditions[:b])

    sync = torch.cuda.synchronize if str(device).startswith("cuda") else None
    return sample, sync


def onnx_sampler(model, onnx_path, max_batch: int, threads: int,
                 device: str = "cpu") -> Callable:
    """``sample(b)`` for the ONNX export of ``model`` run by onnxruntime (noise drawn with
    numpy, as a C++ hook would draw it)."""
    from caloforge.export import onnx_session

    session = onnx_session(onnx_path, threads=threads, device=device)
    conditions = _conditions(model, max_batch)
    latent_shape = tuple(model.latent_shape())
    rng = np.random.default_rng(0)

    def sample(b: int) -> None:
        latent = rng.standard_normal((b, *latent_shape), dtype=np.float32)
        session.run(["showers"], {"latent": latent, "conditions": conditions[:b]})

    return sample


def simulator_sampler(geometry, particle: str, energy_range=None) -> Callable:
    """``sample(b)`` for the embedded parametric simulator (numpy, in memory)."""
    from caloforge.simulate import simulate_showers

    seeds = iter(range(1, 1 << 30))

    def sample(b: int) -> None:
        simulate_showers(geometry, particle, b, energy_range=energy_range, seed=next(seeds),
                         chunk_size=max(b, 1))

    return sample


def load_bench_model(spec: str, device: str = "cpu"):
    """The model that ``spec`` names and a label for the table.

    ``spec`` is a run directory or a pretrained name, optionally followed by
    ``:SAMPLER`` (one of the model's :attr:`~caloforge.models.base.GenerativeModel.samplers`,
    e.g. ``RUN:teacher``); without it the model's default sampler is used.

    Raises:
        CaloforgeError: no such run or pretrained model, or a sampler the model does not
            have or cannot use yet.
    """
    from caloforge.pretrained import resolve_run
    from caloforge.train import load_run

    run, sep, sampler = spec.rpartition(":")
    if not sep or not sampler or os.path.exists(spec) or "/" in sampler:
        run, sampler = spec, ""
    model = load_run(resolve_run(run), device=device)
    model.use_sampler(sampler or None)
    particle = model.run_info.get("particle") or "?"
    label = " ".join(x for x in (model.family, model.sampler) if x)
    return model, f"{label} {particle} ({run})"


def _time_model(model, name: str, onnx_path: str, batch_sizes: list[int], backends,
                device: str, dev_label: str, common: dict, notes: list[str],
                log: Callable[[str], None]) -> list[Timing]:
    """Time one model with torch and/or onnxruntime (exported to ``onnx_path``)."""
    from caloforge.errors import CaloforgeError

    timings: list[Timing] = []
    if "torch" in backends:
        log(f"timing {name} with torch on {dev_label}")
        sample, sync = model_sampler(model, max(batch_sizes), device)
        timings += time_per_shower(sample, batch_sizes, name=name, backend="torch",
                                   device=dev_label, sync=sync, **common)
    if "onnxruntime" in backends:
        from caloforge.export import export_onnx

        log(f"exporting {name} to ONNX and timing it with onnxruntime")
        try:
            export_onnx(model, onnx_path, check=False)
        except CaloforgeError as err:  # a model the exporter refuses (a teacher)
            notes.append(f"{name}: not timed with onnxruntime ({err})")
            log(notes[-1])
        else:
            sample = onnx_sampler(model, onnx_path, max(batch_sizes), common["threads"], device)
            timings += time_per_shower(sample, batch_sizes, name=name, backend="onnxruntime",
                                       device=dev_label, **common)
    return timings


def _time_references(refs: dict, batch_sizes: list[int], simulator: bool, geant4: int,
                     common: dict, notes: list[str],
                     log: Callable[[str], None]) -> list[Timing]:
    """Time the parametric simulator (and Geant4 on request) for each (geometry, particle)."""
    from caloforge.errors import CaloforgeError

    timings: list[Timing] = []
    for (_, particle), geometry in refs.items():
        if simulator:
            log(f"timing the parametric simulator, {geometry.name} {particle}")
            timings += time_per_shower(
                simulator_sampler(geometry, particle), batch_sizes,
                name=f"parametric simulator {geometry.name} {particle}", backend="numpy",
                device="cpu", **common)
        if geant4 and geometry.name == "calogan":
            log(f"timing Geant4 (FTFP_BERT), {geant4} {particle} showers")
            try:
                from caloforge.simulate.geant4 import time_geant4_shower

                ms = time_geant4_shower(geant4, particle)
                timings.append(Timing(f"Geant4 FTFP_BERT calogan {particle}", 1, ms, None,
                                      geant4, "geant4", "cpu", 1, "serial run manager"))
            except (CaloforgeError, ImportError) as err:
                notes.append(f"Geant4 not timed: {err}")
                log(notes[-1])
    return timings


def bench_runs(rundirs: list[str], batch_sizes: list[int], *, backends=("torch",),
               device: str = "cpu", threads: int = 1, repeats: int = 5,
               max_seconds: float = 60.0, simulator: bool = True, geant4: int = 0,
               workdir: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Time every run (and the reference simulators) side by side in this process.

    Args:
        rundirs: trained run directories or pretrained names; ``RUN:SAMPLER`` (e.g.
            ``RUN:teacher``) times that sampler of a model with several
            (:func:`load_bench_model`).
        batch_sizes: batch sizes, increasing.
        backends: ``"torch"`` and/or ``"onnxruntime"`` (exports each model to ``workdir``).
        device: ``"cpu"`` or ``"cuda"``.
        threads: intra-op threads for torch, onnxruntime and the parametric simulator.
        repeats, max_seconds: see :func:`time_per_shower`.
        simulator: also time the parametric simulator for each (geometry, particle).
        geant4: Geant4 showers to time for calogan runs (0: none); skipped with a note when
            geant4-pybind or its data are missing.
        workdir: folder for ONNX exports (default: a temporary folder).
        log: progress messages.

    Returns:
        ``{"hardware", "batch_sizes", "timings": [Timing dicts], "notes": [str]}``.

    Raises:
        CaloforgeError: a run that cannot be loaded or a sampler it does not have.
    """
    import tempfile

    import torch

    torch.set_num_threads(threads)
    os.environ["CALOFORGE_THREADS"] = str(threads)
    timings: list[Timing] = []
    notes: list[str] = []
    refs: dict[tuple[str, str], object] = {}  # (geometry name, particle) -> geometry
    dev_label = device if device == "cpu" else torch.cuda.get_device_name(0)
    common = {"repeats": repeats, "max_seconds": max_seconds, "threads": threads}
    with tempfile.TemporaryDirectory(prefix="caloforge-bench-") as tmp:
        for i, spec in enumerate(rundirs):
            model, name = load_bench_model(spec, device)
            particle = model.run_info.get("particle") or "?"
            if particle in model.geometry.particles:
                refs.setdefault((model.geometry.name, particle), model.geometry)
            onnx_path = os.path.join(workdir or tmp, f"model{i}.onnx")
            timings += _time_model(model, name, onnx_path, batch_sizes, backends, device,
                                   dev_label, common, notes, log)
    if not refs:
        from caloforge.geometry import get_geometry

        refs[("calogan", "eplus")] = get_geometry("calogan")
    timings += _time_references(refs, batch_sizes, simulator, geant4, common, notes, log)
    return {"hardware": hardware(), "batch_sizes": list(batch_sizes),
            "timings": [t.to_dict() for t in timings], "notes": notes}
