"""Mean E_tot/E_inc per 10-GeV bin of a model against the parametric simulator, with many
showers a side (only the totals are kept, chunk by chunk, so 500,000 a side fit in memory).

Not a unit test: a measurement. Pion E_tot/E_inc is broad (rms 0.15-0.29), so with the
50,000 showers of a model card one bin's mean is known to +-1.7%; a 1% target needs about
ten times more. The 1 keV readout threshold of `caloforge evaluate` is applied to both.
The reference is caloforge's parametric simulator (not Geant4).

    python benchmarks/response_bins.py calogan-piplus --particle piplus -n 500000
"""

from __future__ import annotations

import argparse

import numpy as np
from pretrained_card import response_rows


def main() -> None:
    import torch

    from caloforge.pretrained import resolve_run
    from caloforge.simulate import simulate_showers
    from caloforge.train import load_run

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="run directory or pretrained name (calogan, 1-100 GeV)")
    p.add_argument("--particle", required=True)
    p.add_argument("-n", type=int, default=500_000, help="showers a side")
    p.add_argument("--chunk", type=int, default=50_000)
    p.add_argument("--ref-seed", type=int, default=1000, help="first chunk's simulator seed")
    p.add_argument("--gen-seed", type=int, default=22)
    p.add_argument("--threshold-mev", type=float, default=0.001)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--simulator-version", default="parametric-2")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    model = load_run(resolve_run(args.model))
    lo_gev, hi_gev = (e / 1000 for e in model.conditioning.energy)
    generator = torch.Generator().manual_seed(args.gen_seed)
    rng = np.random.default_rng(args.gen_seed)
    sides = {"ref": ([], []), "gen": ([], [])}
    for i in range(args.n // args.chunk):
        s = simulate_showers("calogan", args.particle, args.chunk, energy_range=(1, 100),
                             seed=args.ref_seed + i, version=args.simulator_version)
        v = np.where(s.voxels < args.threshold_mev, 0, s.voxels)
        sides["ref"][0].append(s.incident_energy)
        sides["ref"][1].append(v.sum(1) / s.incident_energy)
        energy = rng.uniform(max(lo_gev, 1) * 1000, min(hi_gev, 100) * 1000, args.chunk)
        e = torch.from_numpy(energy.astype(np.float32))[:, None]
        with torch.inference_mode():
            g = model.sample(e, generator)
        g = torch.where(g < args.threshold_mev, 0, g)
        sides["gen"][0].append(energy)
        sides["gen"][1].append((g.sum(1) / e[:, 0]).numpy())
        print(f"chunk {i + 1} of {args.n // args.chunk}", flush=True)
    (ref, gen) = ((np.concatenate(a), np.concatenate(b)) for a, b in sides.values())
    rows = response_rows(ref, gen, 1.0, 100.0)
    for a, b, r, m, d, err in rows:
        print(f"{max(a, 1.0):3.0f}-{b:3.0f} GeV  E_tot/E_inc ref {r:.4f}  gen {m:.4f}  "
              f"{100 * d:+.2f} +- {100 * err:.2f}%")
    chi2 = sum((d / err) ** 2 for *_, d, err in rows)
    print(f"chi2 {chi2:.1f} for {len(rows)} bins")


if __name__ == "__main__":
    main()
