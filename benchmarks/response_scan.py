"""Energy response of a trained model at fixed incident energies, against the parametric
simulator at the same energies.

Not a unit test: a measurement. A 1-100 GeV file drawn uniformly in energy holds few
low-energy showers (0.6% below 1.6 GeV), so the per-bin response of ``caloforge evaluate``
has a 3-4% statistical error in its lowest bins even at 20,000 showers; here every energy
gets the same number of showers on both sides.

    python benchmarks/response_scan.py RUN                 # run dir or pretrained name
    python benchmarks/response_scan.py RUN --particle eplus -n 5000 --energies 1.26,5,79.4

Prints, per energy (GeV), mean E_tot/E_inc generated and reference with their standard
errors, the ratio gen/ref with its error, and the spread ratio; ``--json`` writes them.
The reference is caloforge's parametric simulator (not Geant4).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

# the centres of the ten logarithmic bins of `caloforge evaluate` over 1-100 GeV
DEFAULT_ENERGIES = tuple(float(e) for e in np.round(np.logspace(0.1, 1.9, 10), 2))


def response(showers) -> np.ndarray:
    """``(n,)`` deposited over incident energy."""
    return showers.total_energy() / showers.incident_energy


def main() -> None:
    from caloforge.data import concatenate
    from caloforge.errors import CaloforgeError
    from caloforge.generate import generate
    from caloforge.pretrained import resolve_run
    from caloforge.simulate import simulate_showers
    from caloforge.train.checkpoint import load_run
    from caloforge.units import gev_to_mev

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run directory or pretrained name")
    p.add_argument("--particle", default=None,
                   help="the reference's particle (default: the model's; another is refused)")
    p.add_argument("-n", type=int, default=2000, help="showers per energy and side (2000)")
    p.add_argument("--energies", default=",".join(map(str, DEFAULT_ENERGIES)),
                   help="comma-separated incident energies in GeV")
    p.add_argument("--seed", type=int, default=4, help="generation seed (reference: +9)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", help="write the table to this JSON file")
    args = p.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)

    try:
        model = load_run(resolve_run(args.run))
        energies = [float(x) for x in args.energies.split(",")]
        if args.n < 1:
            raise CaloforgeError(f"-n must be positive, got {args.n}")
        for e in energies:
            model.conditioning.check_energy(gev_to_mev(e), gev_to_mev(e))
    except (CaloforgeError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    particle = model.run_info.get("particle")
    if args.particle and particle and args.particle != particle:
        raise SystemExit(f"error: the model learnt {particle} showers, not {args.particle}")
    particle = args.particle or particle
    rows = []
    print(f"{'E (GeV)':>8} {'gen':>15} {'ref':>15} {'gen/ref':>15} {'spread g/r':>10}")
    for i, e in enumerate(energies):
        gen = response(concatenate(list(generate(model, args.n, energy_range=(e, e),
                                                 seed=args.seed + i))))
        ref = response(simulate_showers(model.geometry, particle, args.n,
                                        energy_range=(e, e), seed=args.seed + 9 + i))
        g, r = gen.mean(), ref.mean()
        ge, re = gen.std() / np.sqrt(len(gen)), ref.std() / np.sqrt(len(ref))
        ratio = g / r
        row = {"energy_GeV": e, "gen_mean": g, "gen_error": ge, "ref_mean": r,
               "ref_error": re, "ratio": ratio, "ratio_error": ratio * np.hypot(ge / g, re / r),
               "spread_ratio": gen.std() / ref.std()}
        rows.append({k: float(v) for k, v in row.items()})
        print(f"{e:8.2f} {g:8.4f}±{ge:.4f} {r:8.4f}±{re:.4f} {ratio:8.4f}±{row['ratio_error']:.4f}"
              f" {row['spread_ratio']:10.2f}")
    worst = max(rows, key=lambda x: abs(x["ratio"] - 1))
    print(f"worst: {worst['ratio']:.4f} at {worst['energy_GeV']} GeV")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"run": args.run, "particle": particle, "n": args.n,
                       "reference": "parametric", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
