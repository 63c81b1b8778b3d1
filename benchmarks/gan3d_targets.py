"""The 3DGAN figures of merit on clic51 files: generated against reference, one line each.

Not a unit test: a measurement for docs/3dgan.md. Reads two clic51 files (51 x 51 x 25,
e.g. ``caloforge generate`` and ``caloforge simulate -g clic51`` output) and prints

- the mean ECAL sum / primary energy per 10-GeV bin (100-200 GeV), gen/ref (target:
  within 10% in every bin; Carminati et al., CHEP 2019, report agreement with Geant4
  within about 10%);
- the barycentres in x and y (centred showers);
- the mean longitudinal (z) and transverse (x, y) profiles per unit primary energy in the
  shower core, the bins where the reference's profile is at least 10% of its peak, gen/ref
  (target: within 10%);
- the largest and mean absolute difference of the Pearson correlation matrices of the 13
  shower features of ``caloforge evaluate`` (target: at most 0.3).

    python benchmarks/gan3d_targets.py clic51_ref.h5 clic51_3dgan.h5
"""

from __future__ import annotations

import argparse

import numpy as np

ENERGY_EDGES_GEV = np.arange(100.0, 201.0, 10.0)
CORE_FRACTION = 0.1


def ecal_response(showers) -> tuple[np.ndarray, np.ndarray]:
    """Per 10-GeV bin of primary energy: mean ECAL sum / E and its standard error (nan in
    an empty bin)."""
    from caloforge.evaluate.observables import response_profile

    profile = response_profile(showers.incident_energy / 1e3,
                               showers.total_energy() / showers.incident_energy,
                               ENERGY_EDGES_GEV)
    return tuple(np.array([np.nan if v is None else v for v in profile[key]])
                 for key in ("mean", "error"))


def main() -> None:
    from caloforge.data import read_showers
    from caloforge.evaluate.clic51 import FEATURE_NAMES, _axes, correlation_matrix, shower_features

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reference")
    p.add_argument("generated")
    args = p.parse_args()
    ref, gen = read_showers(args.reference), read_showers(args.generated)
    if ref.geometry.name != "clic51" or gen.geometry.name != "clic51":
        raise SystemExit("both files must be clic51 (51 x 51 x 25) files")

    (rm, re), (gm, ge) = ecal_response(ref), ecal_response(gen)
    ratio = gm / rm
    print("ECAL sum / E per 10-GeV bin, gen/ref: "
          + " ".join(f"{x:.3f}" for x in ratio)
          + f"  ({(np.abs(ratio - 1) <= 0.1).sum()} of {len(ratio)} within 10%;"
          f" statistical error {np.hypot(re / rm, ge / gm).max():.3f} at most)")
    for name, s in (("reference", ref), ("generated", gen)):
        r = s.total_energy() / s.incident_energy
        print(f"  {name}: ECAL sum / E {r.mean():.4f} +- {r.std():.4f} ({len(s)} showers)")

    axes = _axes(ref.geometry)
    features, profiles = [], []
    for name, s in (("reference", ref), ("generated", gen)):
        grid = s.voxels.reshape(len(s), 25, 51, 51).transpose(0, 2, 3, 1)  # (n, x, y, z)
        f = shower_features(grid, s.incident_energy, s.angle, axes)
        features.append(f)
        e = s.incident_energy[:, None]
        profiles.append({"z": (grid.sum((1, 2)) / e).mean(0),
                         "x": (grid.sum((2, 3)) / e).mean(0),
                         "y": (grid.sum((1, 3)) / e).mean(0)})
        print(f"{name}: barycentre x {f[:, 7].mean():.2f} +- {f[:, 7].std():.2f} mm, "
              f"y {f[:, 8].mean():.2f} +- {f[:, 8].std():.2f} mm; RMS width x "
              f"{f[:, 10].mean():.1f}, y {f[:, 11].mean():.1f}, z {f[:, 12].mean():.1f} mm")
    for axis in ("z", "x", "y"):
        pr, pg = profiles[0][axis], profiles[1][axis]
        core = pr >= CORE_FRACTION * pr.max()
        ratio = pg[core] / pr[core]
        inside = (np.abs(ratio - 1) <= 0.1).sum()
        print(f"{axis} profile, core ({core.sum()} bins): {inside} within 10%, worst "
              f"{ratio[np.argmax(np.abs(ratio - 1))]:.3f}; gen/ref "
              + " ".join(f"{x:.2f}" for x in ratio))
    diff = correlation_matrix(features[0]) - correlation_matrix(features[1])
    off = ~np.eye(len(diff), dtype=bool)
    print(f"correlation difference (13 features): max {np.abs(diff[off]).max():.3f}, "
          f"mean {np.abs(diff[off]).mean():.3f}")
    upper = np.triu_indices(len(diff), k=1)
    worst = np.argsort(-np.abs(diff[upper]))[:3]
    print("  largest (reference - generated): " + ", ".join(
        f"{FEATURE_NAMES[upper[0][k]]} / {FEATURE_NAMES[upper[1][k]]} "
        f"{diff[upper][k]:+.2f}" for k in worst))


if __name__ == "__main__":
    main()
