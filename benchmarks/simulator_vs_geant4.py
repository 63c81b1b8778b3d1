"""Compare the parametric simulator with the Geant4 reference showers, per energy bin.

Not a unit test: a calibration aid. The reference files in ``../shared/reference/`` are
Geant4 11.4 (electromagnetic physics, data-free models) showers in the CaloGAN calorimeter.

    python benchmarks/simulator_vs_geant4.py                       # e+ and gamma, 20 000 each
    python benchmarks/simulator_vs_geant4.py --particle gamma -n 50000 --plots docs/figures
    python benchmarks/simulator_vs_geant4.py --simulator-version parametric-2   # the one before

Prints, for each particle and incident-energy bin (GeV), Geant4 against parametric:
deposited fraction (grid only, and with the overflow) mean and spread, layer fractions,
lateral widths ``sigma_i`` (cells), ``E_ratio_i``, the fraction of non-zero cells per layer
at several readout thresholds, the correlations of the layer energies, the photon-start
proxy ``P(f_0 < 0.02)``, the cell-energy spectrum per layer (fraction of cells per decade
of MeV), and the shower-shape features with the largest separation power
``S = 0.5 sum (p - q)^2 / (p + q)``. ``--plots DIR`` writes the figures.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference"
BINS = ((1, 3), (3, 10), (10, 30), (30, 100), (1, 100))
THRESHOLDS = (0.0, 1e-3, 1e-2, 1e-1, 1.0)  # MeV
DECADES = np.logspace(-6, 5, 12)  # MeV


def load(particle: str, n: int, seed: int, reference: Path, version: str | None = None):
    from caloforge.data import read_showers
    from caloforge.simulate import simulate_showers

    g4 = read_showers(reference / f"geant4_em_{particle}.h5")
    sim = simulate_showers("calogan", particle, n, energy_range=(1, 100), seed=seed,
                           version=version)
    return g4, sim


def summary(showers, lo: float, hi: float) -> dict:
    """Per-bin means of the compared quantities."""
    from caloforge.evaluate.observables import shower_shapes

    e = showers.incident_energy / 1000.0
    s = showers[(e >= lo) & (e <= hi)]
    n = len(s)
    shapes = shower_shapes(s)
    grid = s.voxels.astype(np.float64).sum(axis=1)
    over = grid + s.overflow.astype(np.float64).sum(axis=1)
    resp, resp_all = grid / s.incident_energy, over / s.incident_energy
    layers = s.layer_energies().astype(np.float64)
    f = layers / layers.sum(axis=1, keepdims=True)
    out = {
        "n": n,
        "E_dep/E": (resp.mean(), resp.std() / np.sqrt(n)),
        "rms E_dep/E": (resp.std(), resp.std() / np.sqrt(2 * n)),
        "E_dep+ovf/E": (resp_all.mean(), resp_all.std() / np.sqrt(n)),
        "rms E_dep+ovf/E": (resp_all.std(), resp_all.std() / np.sqrt(2 * n)),
    }
    for i in range(3):
        out[f"f{i}"] = (f[:, i].mean(), f[:, i].std() / np.sqrt(n))
    for i in range(3):
        out[f"rms f{i}"] = (f[:, i].std(), f[:, i].std() / np.sqrt(2 * n))
    for i in range(3):
        v = shapes[f"sigma_{i}"]
        out[f"sigma_{i}"] = (v.mean(), v.std() / np.sqrt(n))
    for i in range(3):
        v = shapes[f"E_ratio_{i}"]
        out[f"E_ratio_{i}"] = (v.mean(), v.std() / np.sqrt(n))
    for t in THRESHOLDS:
        for i, image in enumerate(s.layers):
            occ = (image.reshape(n, -1) > t).mean(axis=1)
            out[f"occ{i} >{t:g}"] = (occ.mean(), occ.std() / np.sqrt(n))
    logl = np.log(layers + 1e-3)
    c = np.corrcoef(logl.T)
    out["corr lnE0,lnE1"] = (c[0, 1], (1 - c[0, 1] ** 2) / np.sqrt(n))
    out["corr lnE1,lnE2"] = (c[1, 2], (1 - c[1, 2] ** 2) / np.sqrt(n))
    out["corr lnE0,lnE2"] = (c[0, 2], (1 - c[0, 2] ** 2) / np.sqrt(n))
    late = (f[:, 0] < 0.02).mean()
    out["P(f0<0.02)"] = (late, np.sqrt(late * (1 - late) / n))
    return out


def spectrum(showers) -> np.ndarray:
    """(n_layers, n_decades) fraction of cells whose energy lies in each decade (MeV)."""
    return np.stack([np.histogram(image.ravel(), DECADES)[0] / image.size
                     for image in showers.layers])


def separation(a: np.ndarray, b: np.ndarray, bins: int = 40) -> float:
    lo, hi = np.quantile(np.concatenate([a, b]), [0.001, 0.999])
    if hi <= lo:
        return 0.0
    edges = np.linspace(lo, hi, bins + 1)
    p = np.histogram(np.clip(a, lo, hi), edges)[0] / len(a)
    q = np.histogram(np.clip(b, lo, hi), edges)[0] / len(b)
    ok = p + q > 0
    return float(0.5 * ((p[ok] - q[ok]) ** 2 / (p[ok] + q[ok])).sum())


def worst_features(g4, sim, k: int = 12) -> list[tuple[str, float]]:
    from caloforge.evaluate.observables import shower_shapes

    a, b = shower_shapes(g4), shower_shapes(sim)
    sp = {name: separation(a[name], b[name]) for name in a}
    return sorted(sp.items(), key=lambda kv: -kv[1])[:k]


def table(particle: str, g4, sim) -> None:
    print(f"\n## {particle}: Geant4 11.4 (EM, data-free models) {len(g4)} showers vs "
          f"parametric {len(sim)} showers")
    rows = {}
    for lo, hi in BINS:
        rows[(lo, hi)] = (summary(g4, lo, hi), summary(sim, lo, hi))
    keys = list(rows[BINS[0]][0])
    header = "| quantity | " + " | ".join(f"{lo}-{hi} GeV G4 / param" for lo, hi in BINS) + " |"
    print(header)
    print("|---" * (len(BINS) + 1) + "|")
    for key in keys:
        cells = []
        for b in BINS:
            if key == "n":
                cells.append(f"{rows[b][0][key]} / {rows[b][1][key]}")
                continue
            (va, ea), (vb, eb) = rows[b][0][key], rows[b][1][key]
            pull = (vb - va) / np.hypot(ea, eb) if np.hypot(ea, eb) > 0 else 0.0
            fmt = ".4f" if abs(va) < 10 else ".1f"
            cells.append(f"{va:{fmt}} / {vb:{fmt}} ({pull:+.0f}s)")
        print(f"| {key} | " + " | ".join(cells) + " |")
    print("\ncell-energy spectrum, fraction of cells per decade (MeV), 1-100 GeV:")
    sa, sb = spectrum(g4), spectrum(sim)
    print("layer | " + " ".join(f"{lo:>8.0e}" for lo in DECADES[:-1]))
    for i in range(len(sa)):
        print(f"G4 {i}  | " + " ".join(f"{x:8.4f}" for x in sa[i]))
        print(f"par {i} | " + " ".join(f"{x:8.4f}" for x in sb[i]))
    print("\nlargest separation powers (shower shapes, 1-100 GeV):")
    print(", ".join(f"{name} {v:.3f}" for name, v in worst_features(g4, sim)))


def plots(particle: str, g4, sim, outdir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    centres = np.sqrt(DECADES[1:] * DECADES[:-1])
    fine = np.logspace(-6, 5, 67)
    for i in range(3):
        ax = axes[0, i]
        for s, label, style in ((g4, "Geant4 11.4 EM", "k-"), (sim, "parametric", "r--")):
            c = s.layers[i].ravel()
            h = np.histogram(c, fine)[0] / s.layers[i].size
            ax.step(np.sqrt(fine[1:] * fine[:-1]), h, style, where="mid", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"cell energy, layer {i} (MeV)")
        ax.set_ylabel("fraction of cells")
        ax.legend(fontsize=8)
    del centres
    mids = [(lo * hi) ** 0.5 for lo, hi in BINS[:-1]]
    for i in range(3):
        ax = axes[1, i]
        for s, label, style in ((g4, "Geant4 11.4 EM", "ko-"), (sim, "parametric", "rs--")):
            for t, alpha in ((0.0, 1.0), (1.0, 0.5)):
                occ = [summary(s, lo, hi)[f"occ{i} >{t:g}"][0] for lo, hi in BINS[:-1]]
                ax.plot(mids, occ, style, alpha=alpha,
                        label=f"{label}, > {t:g} MeV")
        ax.set_xscale("log")
        ax.set_xlabel("incident energy (GeV)")
        ax.set_ylabel(f"non-zero cell fraction, layer {i}")
        ax.legend(fontsize=7)
    fig.suptitle(f"{particle}: Geant4 11.4 (EM, data-free models, {len(g4)}) vs "
                 f"parametric ({len(sim)})")
    fig.tight_layout()
    fig.savefig(outdir / f"sim_vs_geant4_{particle}_cells.png", dpi=80)
    plt.close(fig)

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    for s, label, style in ((g4, "Geant4 11.4 EM", "k"), (sim, "parametric", "r")):
        layers = s.layer_energies().astype(np.float64)
        tot = layers.sum(axis=1)
        f = layers / tot[:, None]
        resp = (tot + s.overflow.sum(axis=1)) / s.incident_energy
        kw = dict(histtype="step", density=True, color=style, label=label)
        axes[0].hist(resp, np.linspace(0.95, 1.01, 61), **kw)
        axes[1].hist(f[:, 0], np.linspace(0, 0.6, 61), **kw)
        axes[2].hist(np.log10(f[:, 2] + 1e-7), np.linspace(-7, -0.5, 61), **kw)
        from caloforge.evaluate.observables import shower_shapes

        axes[3].hist(shower_shapes(s)["sigma_1"], np.linspace(0, 2.5, 61), **kw)
    for ax, lab in zip(axes, ("(E_dep + overflow) / E", "f_0", "log10 f_2", "sigma_1 (cells)"),
                       strict=True):
        ax.set_xlabel(lab)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(outdir / f"sim_vs_geant4_{particle}_shapes.png", dpi=80)
    plt.close(fig)

    # Layer-1 occupancy map of 10-100 GeV showers (how often each cell is hit above the
    # evaluation's 1 keV): the halo's transverse shape, which a diamond-shaped profile
    # gets wrong along the axes through the core.
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    maps = []
    for s in (g4, sim):
        e = s.incident_energy / 1000.0
        image = s.layers[1][e >= 10.0]
        maps.append((image > 1e-3).mean(axis=0))
    for ax, m, title in ((axes[0], maps[0], "Geant4 11.4 EM"), (axes[1], maps[1], "parametric")):
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"{title}: layer-1 cells hit, 10-100 GeV", fontsize=9)
        fig.colorbar(im, ax=ax)
    im = axes[2].imshow(maps[1] / np.maximum(maps[0], 1e-3), vmin=0.5, vmax=1.5, cmap="coolwarm")
    axes[2].set_title("parametric / Geant4", fontsize=9)
    fig.colorbar(im, ax=axes[2])
    fig.tight_layout()
    fig.savefig(outdir / f"sim_vs_geant4_{particle}_occupancy.png", dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particle", choices=("eplus", "gamma"), action="append")
    parser.add_argument("-n", type=int, default=20_000, help="parametric showers per particle")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    parser.add_argument("--plots", type=Path, default=None, help="folder for the figures")
    parser.add_argument("--simulator-version", default=None,
                        help="parametric simulator version (default: the newest)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for particle in args.particle or ["eplus", "gamma"]:
        g4, sim = load(particle, args.n, args.seed, args.reference, args.simulator_version)
        table(particle, g4, sim)
        if args.plots:
            plots(particle, g4, sim, args.plots)


if __name__ == "__main__":
    main()
