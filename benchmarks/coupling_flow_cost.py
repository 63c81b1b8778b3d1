"""Where a coupling flow's sampling time goes, against this CPU's dense matmul rate.

Not a unit test and not the speed figure (that is `caloforge bench`): CPU time
(``time.process_time``, one thread), so it is less sensitive than wall time to other jobs
on the machine, though they share the caches. Prints

- the dense matmul rate of one thread on the shape of a block's output layer
  (a piece of 500 showers x hidden times hidden x (3K - 1) n_b),
- a whole sampled shower (``model.sample``, batch N decoded in the model's CPU pieces),
- Flow II's networks alone, on the same pieces,
- the model's network cost in MFLOP per shower and the time it would take at the
  measured matmul rate.

    python benchmarks/coupling_flow_cost.py calogan-eplus
    python benchmarks/coupling_flow_cost.py runs/cpf_gamma -n 20000
"""

from __future__ import annotations

import argparse
import time

import torch


def cpu_seconds(fn, min_seconds: float = 2.0) -> float:
    """CPU seconds per call of ``fn`` (repeated for at least ``min_seconds``)."""
    fn()
    start, calls = time.process_time(), 0
    while calls == 0 or time.process_time() - start < min_seconds:
        fn()
        calls += 1
    return (time.process_time() - start) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run directory or pretrained name")
    ap.add_argument("-n", type=int, default=10_000, help="showers per sampled batch")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from caloforge.models.coupling_flow import _CPU_CHUNK
    from caloforge.pretrained import resolve_run
    from caloforge.train import load_run

    model = load_run(resolve_run(args.run))
    model.eval()
    block = model.flow2.blocks[0]
    hidden, out = block.net[-1].in_features, block.net[-1].out_features
    a, b = torch.randn(_CPU_CHUNK, hidden), torch.randn(hidden, out)
    rate = 2 * _CPU_CHUNK * hidden * out / cpu_seconds(lambda: a @ b) / 1e9
    print(f"dense matmul {_CPU_CHUNK}x{hidden} times {hidden}x{out}, 1 thread: "
          f"{rate:.1f} GFLOP/s")

    lo, hi = model.conditioning.energy
    conditions = torch.rand(args.n, 1) * (hi - lo) + lo  # MeV
    if model.conditioning.angle is not None:
        conditions = torch.cat([conditions, torch.full_like(conditions,
                                                            sum(model.conditioning.angle) / 2)], 1)
    with torch.inference_mode():
        whole = cpu_seconds(lambda: model.sample(conditions), 0.0) / args.n * 1e3
        context = torch.rand(_CPU_CHUNK, block.net[0].in_features - block.n_a)
        x = torch.randn(_CPU_CHUNK, model.flow2.features)

        def networks():
            for blk in model.flow2.blocks:
                blk.net(torch.cat([x[:, :blk.n_a], context], -1))

        nets = cpu_seconds(networks) / _CPU_CHUNK * 1e3
    mflop = model.mflop_per_shower()  # Flow I and Flow II
    mflop2 = model.mflop_by_flow()["flow2"]
    print(f"whole shower (sample, batch {args.n}): {whole:.3f} ms CPU per shower")
    print(f"Flow II networks alone: {nets:.3f} ms CPU per shower "
          f"({mflop2:.2f} MFLOP, {mflop2 / nets:.1f} GFLOP/s)")
    print(f"network cost {mflop:.2f} MFLOP per shower: {mflop / rate:.3f} ms at the matmul "
          f"rate; the whole shower takes {whole / (mflop / rate):.1f}x that")


if __name__ == "__main__":
    main()
