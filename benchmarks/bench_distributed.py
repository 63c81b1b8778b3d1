"""Data-parallel training throughput: showers per second with 1 and 2 processes.

Not a unit test: run it by hand on the machine whose figure you want to quote.

    python benchmarks/bench_distributed.py                       # calogan, default config
    python benchmarks/bench_distributed.py --family wgan --geometry atlas89 --steps 60
    python benchmarks/bench_distributed.py --batch 64 --threads 1 --json out.json

Runs ``torchrun --standalone --nproc_per_node=P -m caloforge train`` (gloo on the CPU,
``--threads`` torch threads per process) on synthetic showers of the geometry, and reads
the run's ``log.jsonl``: throughput = showers trained between the end of step
``--warmup`` and the last step, divided by the wall time between them (start-up, data
reading and warm-up excluded). Three runs:

- 1 process x B, 1 process x 2B, 2 processes x B (same global batch as the second);
- weak scaling: (2 x B) / (1 x B); strong scaling at global batch 2B: (2 x B) / (1 x 2B).

The ideal ratio is 2 only when two idle cores are free; on a shared or hyperthreaded
machine expect less (the load average at the start is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def synthetic_file(path: Path, geometry_name: str, n: int) -> None:
    import numpy as np

    from caloforge.data import ShowerSet, write_showers
    from caloforge.geometry import get_geometry

    geometry = get_geometry(geometry_name)
    rng = np.random.default_rng(0)
    energy = rng.uniform(1e3, 1e5, n).astype(np.float32)
    mask = rng.random((n, geometry.n_voxels)) < 0.3
    voxels = rng.exponential(1.0, (n, geometry.n_voxels)) * mask
    voxels = voxels / np.maximum(voxels.sum(axis=1, keepdims=True), 1e-9) * energy[:, None]
    angle = (rng.uniform(60, 120, n).astype(np.float32)
             if "angle" in geometry.conditions else None)
    write_showers(path, ShowerSet(geometry, voxels.astype(np.float32), energy, angle=angle,
                                  meta={"particle": "eplus", "generator": "synthetic"}))


def throughput(rundir: Path, warmup: int) -> float:
    records = [json.loads(line) for line in (rundir / "log.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["step"] == warmup)
    last = records[-1]
    showers = (last["step"] - first["step"]) * last["effective_batch_size"]
    return showers / (last["time_s"] - first["time_s"])


def run(nproc: int, batch: int, args, data: Path, root: Path) -> float:
    out = root / f"p{nproc}_b{batch}"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--standalone", "-m", "caloforge", "train", args.family, "--data", str(data),
           "--out", str(out), "--batch-size", str(batch), "--max-steps", str(args.steps),
           "--checkpoint-every", str(10 * args.steps), "--device", "cpu",
           "--num-threads", str(args.threads), "-q"]
    if args.config:
        cmd += ["--config", args.config]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return throughput(out, args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="calogan")
    parser.add_argument("--geometry", default="calogan")
    parser.add_argument("--config", help="YAML run config (default: the family's defaults)")
    parser.add_argument("--batch", type=int, default=64, help="showers per process (64)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--showers", type=int, default=4096)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="caloforge-bench-ddp-") as tmp:
        root = Path(tmp)
        data = root / "train.h5"
        synthetic_file(data, args.geometry, args.showers)
        load = os.getloadavg()[0]
        one = run(1, args.batch, args, data, root)
        one_big = run(1, 2 * args.batch, args, data, root)
        two = run(2, args.batch, args, data, root)
    result = {
        "family": args.family, "geometry": args.geometry, "threads_per_process": args.threads,
        "cpus": os.cpu_count(), "load_average_1min_at_start": round(load, 2),
        "steps": args.steps, "warmup_steps": args.warmup,
        "showers_per_s": {f"1x{args.batch}": round(one, 1),
                          f"1x{2 * args.batch}": round(one_big, 1),
                          f"2x{args.batch}": round(two, 1)},
        "weak_scaling_ratio": round(two / one, 3),
        "strong_scaling_ratio": round(two / one_big, 3),
    }
    print(f"{args.family} on {args.geometry}, {args.threads} thread(s) per process, "
          f"{os.cpu_count()} CPUs, load {load:.2f} at start, steps {args.warmup}-{args.steps}")
    print(f"  1 process  x {args.batch:4d}: {one:8.1f} showers/s")
    print(f"  1 process  x {2 * args.batch:4d}: {one_big:8.1f} showers/s")
    print(f"  2 processes x {args.batch:3d}: {two:8.1f} showers/s")
    print(f"  ratio 2 procs / 1 proc, same batch per process (weak):  {two / one:.3f}")
    print(f"  ratio 2 procs / 1 proc, same global batch (strong):     {two / one_big:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
