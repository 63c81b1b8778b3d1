"""Give a trained coupling-flow run the training range its sampling resamples against.

Not a unit test. A run trained before ``resample_outliers`` existed (or with it off) has no
record of the largest value each Flow II variable took in its training showers; this
writes a copy of the run whose config has ``resample_outliers: ROUNDS`` and whose weights
carry that maximum, computed from the training file exactly as ``prepare`` does when the
setting is on at training time (docs/coupling-flow.md). The flows' weights are untouched.

    python benchmarks/add_resampling.py runs/cpf_eplus --data eplus_train.h5 \\
        --out runs/cpf_eplus_resampled --rounds 20
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="trained coupling-flow run directory")
    ap.add_argument("--data", type=Path, required=True, help="the run's training file")
    ap.add_argument("--out", type=Path, required=True, help="new run directory")
    ap.add_argument("--rounds", type=int, default=20, help="resample_outliers (default 20)")
    args = ap.parse_args()

    import torch

    from caloforge.data import read_showers
    from caloforge.train.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(args.run)
    if ckpt["family"] != "coupling-flow":
        raise SystemExit(f"{args.run} is a {ckpt['family']} run, not a coupling-flow one")
    showers = read_showers(args.data)
    if len(showers) != ckpt["data"]["n"]:
        raise SystemExit(f"{args.data} has {len(showers)} showers, the run was trained on "
                         f"{ckpt['data']['n']}")
    ckpt["model_config"]["resample_outliers"] = args.rounds
    model = model_from_checkpoint({**ckpt, "model_state": {
        **ckpt["model_state"], "flow2_max": torch.zeros(showers.geometry.n_voxels)}})
    maximum = model.prep.flow2_maximum(showers)
    ckpt["model_state"]["flow2_max"] = maximum
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.run.iterdir():  # log and config travel with the copy
        if path.is_file() and path.name != "checkpoint.pt":
            shutil.copy2(path, args.out / path.name)
    torch.save(ckpt, args.out / "checkpoint.pt")
    print(f"{args.out}: resample_outliers {args.rounds}; Flow II maximum over "
          f"{len(showers):,} training showers, {float(maximum.min()):.2f} to "
          f"{float(maximum.max()):.2f}")


if __name__ == "__main__":
    main()
