"""Parity of ``caloforge evaluate`` with the official CaloChallenge ``evaluate.py``.

Not a unit test: run it by hand. It makes pairs of CaloChallenge dataset-1 photon files
(368 voxels, the layout of ``binning_dataset_1_photons.xml``), scores every pair with
``caloforge evaluate`` and, when given a checkout of the CaloChallenge code, with the
official ``code/evaluate.py`` too, and prints one table.

    python benchmarks/calochallenge_parity.py make --n 3000 --workdir /tmp/parity
    python benchmarks/calochallenge_parity.py caloforge --workdir /tmp/parity --threads 1
    python benchmarks/calochallenge_parity.py official --workdir /tmp/parity \\
        --code /path/to/CaloChallenge/homepage/code --threads 1
    python benchmarks/calochallenge_parity.py table --workdir /tmp/parity

The showers are toy showers, neither Geant4 nor caloforge's parametric simulator (which
does not know the CaloChallenge layouts): incident energies 2^8 ... 2^22 MeV as in dataset 1,
a Gamma-distributed longitudinal profile (GFlash-like: Grindhammer et al.,
arXiv:hep-ex/0001020) split over the five readout layers, and per layer a core + tail radial
profile of discrete hits around a fluctuating shower axis, histogrammed into the (alpha, r)
bins of the XML. Small showers have few hits, so the 1 MeV readout threshold matters.

Pairs (reference and generated each ``--n`` showers, independent seeds):

- ``identical``: the same model;
- ``mild``: radial profile 5% wider and shower maximum 3% deeper;
- ``strong``: radial profile 25% wider, shower maximum 15% deeper, hit energies 30% more
  spread.

The official script is run unchanged except for one line: its train/test/validation split
uses fixed counts of the full dataset (80,000 / 20,000 / 21,000 showers for dataset-1
photons), which a file of a few thousand showers cannot fill, so ``ttv_split`` is called
without ``dataset=`` (its own 60/20/20 fallback). Its FPD/KPD call
``jetnet.evaluation.fpd``/``kpd``, whose package imports much else (numba, energyflow,
coffea, torch_geometric); ``jetnet-shim`` makes a folder where ``import jetnet`` gives
jetnet's own, unchanged ``gen_metrics.py`` with those imports stubbed (``numba.njit`` is the
identity, so KPD runs the same numpy code uncompiled):

    pip install --no-deps --target /tmp/jetnet-pkg jetnet==0.2.5
    python benchmarks/calochallenge_parity.py jetnet-shim --package /tmp/jetnet-pkg \
        --to /tmp/jetnet-shim     # then: official ... --jetnet /tmp/jetnet-shim
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GEOMETRY = "calochallenge_ds1_photons"
# Depth of the readout layers in radiation lengths (presampler, strips, middle, back,
# first tile layer): an ATLAS-like barrel at eta ~ 0.
_LAYER_X0 = np.array([0.0, 2.0, 6.3, 22.0, 24.0, 40.0])
_RADIUS_MM = np.array([25.0, 6.0, 12.0, 40.0, 120.0])  # core radius per layer
_PAIRS = {
    "identical": {},
    "mild": {"radial": 1.05, "depth": 1.03},
    "strong": {"radial": 1.25, "depth": 1.15, "hit_spread": 1.3},
}


def toy_showers(n: int, seed: int, radial: float = 1.0, depth: float = 1.0,
                hit_spread: float = 1.0, max_hits: int = 400):
    """Toy dataset-1 photon showers (see the module docstring).

    Args:
        n: number of showers.
        seed: random seed.
        radial: scale of every radial width.
        depth: scale of the depth of the shower maximum.
        hit_spread: scale of the relative spread of hit energies.
        max_hits: most hits per layer (energy per hit grows above that).

    Returns:
        A :class:`caloforge.data.ShowerSet`, MeV.
    """
    from scipy import stats

    from caloforge.data import ShowerSet
    from caloforge.geometry import get_geometry

    geometry = get_geometry(GEOMETRY)
    rng = np.random.default_rng(seed)
    energy = 2.0 ** rng.integers(8, 23, n)
    # Longitudinal: Gamma profile in X0, t_max = (a - 1) / b fluctuating shower by shower.
    b = 0.5
    t_max = depth * (np.log(energy / 20.0) + 0.5) * rng.lognormal(0.0, 0.12, n)
    a = 1.0 + b * np.clip(t_max, 0.2, None)
    cdf = stats.gamma.cdf(_LAYER_X0[None, :] * b, a[:, None])
    fractions = np.diff(cdf, axis=1)
    response = np.clip(rng.normal(0.95, 0.04 + 0.3 / np.sqrt(energy / 100.0)), 0.05, None)
    layer_energy = energy[:, None] * fractions * response[:, None]
    voxels = np.zeros((n, geometry.n_voxels), dtype=np.float64)
    axis = rng.normal(0.0, 1.5, (n, 2))  # shower axis offset, mm
    for i, layer in enumerate(geometry.layers):
        n_alpha, n_r = layer.shape
        edges = np.asarray(layer.r_edges)
        hits = np.clip(np.ceil(layer_energy[:, i] / 2.0), 1, max_hits).astype(int)
        width = _RADIUS_MM[i] * radial * rng.lognormal(0.0, 0.08, (n, 1))
        tail = rng.random((n, max_hits)) < 0.15
        r = rng.exponential(1.0, (n, max_hits)) * width * np.where(tail, 4.0, 1.0)
        phi = rng.uniform(-np.pi, np.pi, (n, max_hits))
        x = r * np.cos(phi) + axis[:, :1] * (1 + i)
        y = r * np.sin(phi) + axis[:, 1:] * (1 + i)
        hit_r = np.hypot(x, y)
        alpha = np.arctan2(y, x)
        r_bin = np.searchsorted(edges, hit_r, side="right") - 1
        a_bin = np.clip(((alpha + np.pi) / (2 * np.pi) * n_alpha).astype(int), 0, n_alpha - 1)
        used = (np.arange(max_hits)[None, :] < hits[:, None]) & (r_bin < n_r)
        spread = 0.6 * hit_spread
        weight = rng.gamma(1.0 / spread**2, spread**2, (n, max_hits)) * used
        weight *= layer_energy[:, i:i + 1] / np.maximum(weight.sum(axis=1, keepdims=True),
                                                        1e-12)
        cell = geometry.layer_offsets[i] + a_bin * n_r + np.where(used, r_bin, 0)
        rows = np.broadcast_to(np.arange(n)[:, None], cell.shape)
        np.add.at(voxels, (rows[used], cell[used]), weight[used])
    return ShowerSet(geometry, voxels.astype(np.float32), energy.astype(np.float32),
                     meta={"particle": "gamma", "generator": "toy (calochallenge_parity.py)"})


def _write(path: Path, showers) -> None:
    """The published dataset-1 layout, float64 as the CaloChallenge files (the official
    classifier runs in float64 and refuses float32 inputs)."""
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("incident_energies",
                         data=showers.incident_energy.astype(np.float64)[:, None])
        f.create_dataset("showers", data=showers.voxels.astype(np.float64))
        for key, value in showers.meta.items():
            f.attrs[key] = value


def make(args) -> None:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    _write(work / "reference.h5", toy_showers(args.n, 1))
    for k, (pair, distortion) in enumerate(_PAIRS.items()):
        _write(work / f"{pair}.h5", toy_showers(args.n, 10 + k, **distortion))
    print(f"wrote reference.h5 and {', '.join(p + '.h5' for p in _PAIRS)} ({args.n} showers "
          f"each) to {work}")


def run_caloforge(args) -> None:
    from caloforge.evaluate import evaluate_files

    work = Path(args.workdir)
    results = {}
    for pair in _PAIRS:
        start = time.perf_counter()
        m = evaluate_files(work / "reference.h5", work / f"{pair}.h5",
                           work / f"caloforge_{pair}", classifier_inputs=("low", "high"),
                           repeat=args.repeat, threads=args.threads, plots=False,
                           progress=False, seed=args.seed)
        results[pair] = {
            "auc_low": m["classifier"]["low"]["auc"],
            "auc_low_error": m["classifier"]["low"]["auc_error"],
            "auc_high": m["classifier"]["high"]["auc"],
            "auc_high_error": m["classifier"]["high"]["auc_error"],
            "auc_low_raw": m["classifier"]["low"]["auc_uncalibrated"],
            "auc_high_raw": m["classifier"]["high"]["auc_uncalibrated"],
            "fpd": m.get("fpd"), "kpd": m.get("kpd"), "threshold_MeV": m["threshold_MeV"],
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(pair, json.dumps(results[pair]), flush=True)
    (work / "caloforge.json").write_text(json.dumps(results, indent=2))


def _patched_code(code: Path, work: Path) -> Path:
    """Copy of the official code folder with the one-line split change (see the module)."""
    target = work / "official_code"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(code, target)
    script = target / "evaluate.py"
    text = script.read_text()
    old = "dataset=args.dataset)"
    if text.count(old) != 1:
        sys.exit(f"{script}: expected one 'ttv_split(..., {old}' call; the official code "
                 f"changed, patch it by hand")
    script.write_text(text.replace(old, "dataset=None)"))
    return target


def _official_value(text: str, pattern: str) -> list[float] | None:
    found = re.findall(pattern, text)
    if not found:
        return None
    last = found[-1]
    return [float(v) for v in (last if isinstance(last, tuple) else (last,))]


def run_official(args) -> None:
    work = Path(args.workdir).resolve()
    code = _patched_code(Path(args.code).resolve(), work)
    env = dict(os.environ)
    if args.jetnet:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(args.jetnet).resolve()),
                                             env.get("PYTHONPATH", "")])
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    results = json.loads((work / "official.json").read_text()) if (
        work / "official.json").exists() else {}
    for pair in args.pairs:
        row = results.setdefault(pair, {})
        for mode in args.modes:
            out = work / f"official_{pair}_{mode}"
            out.mkdir(exist_ok=True)
            command = [sys.executable, "evaluate.py", "-i", str(work / f"{pair}.h5"),
                       "-r", str(work / "reference.h5"), "-m", mode, "-d", "1-photons",
                       "--output_dir", str(out), *([] if args.cuda else ["--no_cuda"]),
                       *args.official_args]
            start = time.perf_counter()
            proc = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
            (out / "log.txt").write_text(proc.stdout + proc.stderr)
            if proc.returncode:
                print(f"{pair} {mode}: official evaluate.py failed, see {out / 'log.txt'}")
                continue
            text = proc.stdout
            if mode.startswith("cls"):
                auc = _official_value(text, r"Final result of classifier test \(AUC / JSD\):"
                                            r"\s*([-\d.]+) / ([-\d.]+)")
                raw = _official_value(text, r"AUC on test set is ([-\d.e]+)")
                row[mode] = {"auc": auc[0], "jsd": auc[1], "auc_raw": raw[0] if raw else None}
            else:
                fpd = _official_value(text, r"FPD \(x10\^3\): ([-\d.]+) ± ([-\d.]+)")
                kpd = _official_value(text, r"KPD \(x10\^3\): ([-\d.]+) ± ([-\d.]+)")
                row["fpd"] = [v / 1e3 for v in fpd]
                row["kpd"] = [v / 1e3 for v in kpd]
            row[f"{mode}_seconds"] = round(time.perf_counter() - start, 1)
            print(pair, mode, json.dumps(row), flush=True)
            (work / "official.json").write_text(json.dumps(results, indent=2))


_SHIM = {
    "numba/__init__.py": "def njit(*args, **kwargs):\n"
                         "    if len(args) == 1 and callable(args[0]) and not kwargs:\n"
                         "        return args[0]\n"
                         "    return lambda f: f\n\n\n"
                         "prange = range\n\n\n"
                         "def set_num_threads(n):\n    pass\n",
    "energyflow/__init__.py": "",
    "energyflow/emd.py": "emds = None\n",
    "jetnet/__init__.py": "import jetnet.evaluation  # noqa: F401\n",
    "jetnet/datasets.py": "JetNet = None\n",
    "jetnet/utils.py": "",
    "jetnet/evaluation/__init__.py": "from .gen_metrics import fpd, kpd  # noqa: F401\n",
}


def jetnet_shim(args) -> None:
    source = Path(args.package) / "jetnet" / "evaluation" / "gen_metrics.py"
    if not source.exists():
        sys.exit(f"{source} not found: pip install --no-deps --target {args.package} "
                 f"jetnet==0.2.5")
    target = Path(args.to)
    for name, text in _SHIM.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(text)
    shutil.copy(source, target / "jetnet" / "evaluation" / "gen_metrics.py")
    print(f"wrote {target}: jetnet's gen_metrics.py with stubbed imports")


def _pm(pair, scale: float = 1.0, digits: int = 3) -> str:
    if not pair:
        return "–"
    return f"{pair[0] * scale:.{digits}f} ± {pair[1] * scale:.{digits}f}"


def table(args) -> None:
    work = Path(args.workdir)
    ours = json.loads((work / "caloforge.json").read_text())
    theirs: dict = {}
    for path in [work / "official.json", *map(Path, args.merge)]:
        if path.exists():  # several official runs side by side (one per pair) merge here
            for pair, row in json.loads(path.read_text()).items():
                theirs.setdefault(pair, {}).update(row)
    print("| pair | AUC low: caloforge / official | AUC high: caloforge / official | "
          "FPD x10^3: caloforge / official | KPD x10^3: caloforge / official |")
    print("|---|---|---|---|---|")
    for pair, row in ours.items():
        off = theirs.get(pair, {})
        low = off.get("cls-low", {}).get("auc")
        high = off.get("cls-high", {}).get("auc")
        ours_low = _pm([row["auc_low"], row["auc_low_error"] or 0.0])
        ours_high = _pm([row["auc_high"], row["auc_high_error"] or 0.0])
        print(f"| {pair} | {ours_low} / {'–' if low is None else f'{low:.3f}'} | "
              f"{ours_high} / {'–' if high is None else f'{high:.3f}'} | "
              f"{_pm(row['fpd'], 1e3)} / {_pm(off.get('fpd'), 1e3)} | "
              f"{_pm(row['kpd'], 1e3)} / {_pm(off.get('kpd'), 1e3)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("make", help="write the reference and the generated files")
    p.add_argument("--n", type=int, default=3000, help="showers per file")
    p = sub.add_parser("caloforge", help="score every pair with caloforge evaluate")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("official", help="score every pair with the official evaluate.py")
    p.add_argument("--code", required=True, help="the CaloChallenge homepage's code/ folder")
    p.add_argument("--jetnet", help="folder to put on PYTHONPATH for 'import jetnet'")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cuda", action="store_true",
                   help="let evaluate.py use the GPU (without it: --no_cuda)")
    p.add_argument("--pairs", nargs="+", default=list(_PAIRS), choices=list(_PAIRS))
    p.add_argument("--modes", nargs="+", default=["cls-low", "cls-high", "fpd"],
                   choices=["cls-low", "cls-high", "fpd"])
    p.add_argument("--official-args", nargs=argparse.REMAINDER, default=[],
                   help="passed on to evaluate.py (e.g. --cls_n_epochs 30)")
    p = sub.add_parser("table", help="print the comparison table (markdown)")
    p.add_argument("--merge", nargs="*", default=[],
                   help="more official.json files (from runs with other --workdir)")
    p = sub.add_parser("jetnet-shim", help="folder where 'import jetnet' gives fpd and kpd")
    p.add_argument("--package", required=True, help="pip --target folder holding jetnet")
    p.add_argument("--to", required=True)
    for name, p in sub.choices.items():
        if name != "jetnet-shim":
            p.add_argument("--workdir", default="/tmp/caloforge-parity")
    args = parser.parse_args()
    {"make": make, "caloforge": run_caloforge, "official": run_official, "table": table,
     "jetnet-shim": jetnet_shim}[args.step](args)


if __name__ == "__main__":
    main()
