"""CaloGAN generation speed: milliseconds per shower at batch 1, 128 and 1024.

Not a unit test: run it by hand on the machine whose figure you want to quote.

    python benchmarks/bench_calogan.py                          # untrained default model
    python benchmarks/bench_calogan.py --run runs/eplus         # a trained run
    python benchmarks/bench_calogan.py --threads 2 --batch 1 10 128 1024 10000 --json out.json

Times ``model.sample`` (latent draw, generator, inverse preprocessing; no file writing),
warm-up calls excluded, median over repeats, torch intra-op threads as stated. Speed does
not depend on the weights, so an untrained model of the same config gives the same
figure. "CPU ms" is process CPU time per shower over all threads: on a busy shared
machine wall time grows, CPU time much less. The CaloGAN paper (Paganini, de Oliveira,
Nachman, arXiv:1712.10321) quotes 13.1 / 2.19 / 2.03 ms at batch 1 / 128 / 1024 on an Intel
Xeon CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

_PAPER = "CaloGAN (paper, arXiv:1712.10321; Intel Xeon CPU)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="run directory (default: an untrained default CaloGAN)")
    parser.add_argument("--config", help="YAML run config for the untrained model")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 128, 1024])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    import torch

    from caloforge.bench import REFERENCE_FIGURES, hardware, markdown_table, time_per_shower
    from caloforge.geometry import CALOGAN
    from caloforge.models import Conditioning, build_model
    from caloforge.train import load_run, load_run_config

    torch.set_num_threads(args.threads)
    if args.run:
        model = load_run(args.run, args.device)
        label = f"calogan ({args.run}, step {model.run_info.get('step')})"
    else:
        _, model_cfg = load_run_config(args.config)
        torch.manual_seed(0)
        model = build_model("calogan", CALOGAN, model_cfg, Conditioning(energy=(1e3, 1e5)))
        model = model.to(args.device).eval()
        label = "calogan (untrained, same speed)"
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    lo, hi = model.conditioning.energy

    def sample(batch: int) -> None:
        energy = torch.empty(batch, 1, device=device).uniform_(lo, hi)
        model.sample(energy)

    cpu_ms = {}
    timings = []
    for batch in args.batch:
        repeats = args.repeats if batch < 1024 else max(args.repeats // 2, 5)
        timings += time_per_shower(sample, [batch], name=label, backend="torch",
                                   device=str(device), threads=torch.get_num_threads(),
                                   repeats=repeats, warmup=3, sync=sync)
        start = time.process_time()
        for _ in range(repeats):
            sample(batch)
        cpu_ms[batch] = (time.process_time() - start) * 1e3 / (repeats * batch)

    print(f"hardware: {json.dumps(hardware())}")
    print(f"latent size {model.config.latent_size}, "
          f"{sum(p.numel() for p in model.generator.parameters()) / 1e6:.2f}M generator "
          f"weights, torch threads {torch.get_num_threads()}")
    print(markdown_table(timings, args.batch,
                         {_PAPER: REFERENCE_FIGURES[_PAPER]}))
    print("CPU ms per shower: " + ", ".join(f"batch {b}: {v:.3g}" for b, v in cpu_ms.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"hardware": hardware(), "timings": [t.to_dict() for t in timings],
                       "cpu_ms_per_shower": cpu_ms,
                       "median_ms": statistics.median(t.ms_per_shower for t in timings)},
                      f, indent=2)


if __name__ == "__main__":
    main()
