"""Time of FPD and KPD against the voxel count: the features are high-level.

Not a unit test: run it by hand on the machine whose figure you want to quote.

    python benchmarks/bench_evaluate_distances.py                    # 10,000 vs 10,000
    python benchmarks/bench_evaluate_distances.py --n 2000 --geometries calogan calochallenge_ds3

For each geometry it makes two samples of synthetic stand-in showers (random sparse
deposits, not physics; chunks of 500 so that 40,500-voxel showers fit in memory), computes
their shower shapes and feature vectors (what ``caloforge evaluate`` does while reading),
then times :func:`caloforge.evaluate.fpd` and :func:`caloforge.evaluate.kpd` on them, as
the pipeline calls them. It prints, per geometry, the voxel and feature counts and the
seconds of each step (wall time, and the process's CPU time, which a machine shared with
other jobs does not inflate; with the load average): FPD/KPD depend on the number of
features (layers), not on the number of voxels; reading and the shower shapes do scale
with the voxels.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def features(geometry, n: int, seed: int, chunk: int = 500) -> np.ndarray:
    from caloforge.data import ShowerSet
    from caloforge.evaluate import feature_matrix, shower_shapes

    rng = np.random.default_rng(seed)
    parts = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        energy = 10.0 ** rng.uniform(3, 6, m)
        voxels = rng.exponential(1.0, (m, geometry.n_voxels)).astype(np.float32)
        voxels *= rng.random((m, geometry.n_voxels), dtype=np.float32) < 0.3
        voxels *= (energy / np.maximum(voxels.sum(axis=1), 1e-6))[:, None].astype(np.float32)
        shapes = shower_shapes(ShowerSet(geometry, voxels, energy))
        parts.append(feature_matrix(shapes, geometry)[0])
    return np.concatenate(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="showers per sample")
    parser.add_argument("--geometries", nargs="+",
                        default=["calogan", "calochallenge_ds2", "calochallenge_ds3"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from threadpoolctl import threadpool_limits

    from caloforge.evaluate import fpd, kpd
    from caloforge.geometry import get_geometry

    rows = []
    with threadpool_limits(limits=args.threads):
        for name in args.geometries:
            geometry = get_geometry(name)
            t = time.perf_counter()
            ref, gen = features(geometry, args.n, 1), features(geometry, args.n, 2)
            t_features = time.perf_counter() - t
            varying = (ref.std(axis=0) > 0) | (gen.std(axis=0) > 0)
            ref, gen = ref[:, varying], gen[:, varying]
            t, c = time.perf_counter(), time.process_time()
            fpd_value = fpd(ref, gen)
            t_fpd, c_fpd = time.perf_counter() - t, time.process_time() - c
            t, c = time.perf_counter(), time.process_time()
            kpd_value = kpd(ref, gen)
            t_kpd, c_kpd = time.perf_counter() - t, time.process_time() - c
            row = {"geometry": name, "voxels": geometry.n_voxels, "features": ref.shape[1],
                   "n": args.n, "features_s": round(t_features, 1), "fpd_s": round(t_fpd, 1),
                   "kpd_s": round(t_kpd, 1), "fpd_cpu_s": round(c_fpd, 1),
                   "kpd_cpu_s": round(c_kpd, 1), "fpd": fpd_value, "kpd": kpd_value,
                   "load_average": os.getloadavg()[0]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| geometry | voxels | features | shower shapes (s) | FPD wall / CPU (s) | "
          "KPD wall / CPU (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['geometry']} | {r['voxels']} | {r['features']} | {r['features_s']} | "
              f"{r['fpd_s']} / {r['fpd_cpu_s']} | {r['kpd_s']} / {r['kpd_cpu_s']} |")


if __name__ == "__main__":
    main()
