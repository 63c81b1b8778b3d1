"""Throughput of the parametric reference simulator (showers per second).

Not a unit test: run it by hand on the machine whose figure you want to quote.

    python benchmarks/bench_simulate.py                 # all cases, default threads
    python benchmarks/bench_simulate.py --threads 2 --n 50000 --case calogan-eplus
    python benchmarks/bench_simulate.py --write         # also time writing the HDF5 file

The figure is generation only (``simulate_chunks``), from the first shower to the last,
warm-up excluded, in showers per wall-clock second; "/ CPU s" is showers per second of
CPU time used by the process (all threads), which a busy shared machine does not
inflate. ``--write`` adds the end-to-end time of ``simulate_to_file`` (which also pays
for gzip compression of the file).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

CASES = {
    # name: (geometry, particle, energy range GeV, angle range deg, default n)
    "calogan-eplus": ("calogan", "eplus", (1.0, 100.0), None, 50_000),
    "calogan-gamma": ("calogan", "gamma", (1.0, 100.0), None, 50_000),
    "calogan-piplus": ("calogan", "piplus", (1.0, 100.0), None, 50_000),
    "atlas89-gamma": ("atlas89", "gamma", (10.0, 100.0), None, 50_000),
    "clic51-eminus": ("clic51", "eminus", (100.0, 200.0), (60.0, 120.0), 500),
}


def bench(case: str, n: int | None, threads: int | None, repeat: int, write: bool,
          version: str | None = None) -> dict:
    from caloforge.simulate import simulate_to_file
    from caloforge.simulate.parametric import simulate_chunks

    geometry, particle, energy, angle, default_n = CASES[case]
    n = n or default_n
    # Warm-up: imports, allocator, thread pool.
    for _ in simulate_chunks(geometry, particle, min(n, 2000), energy, angle, 0, 10_000,
                             threads=threads, version=version):
        pass
    rates, cpu_rates = [], []
    for r in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        count = 0
        for chunk in simulate_chunks(geometry, particle, n, energy, angle, r + 1, 10_000,
                                     threads=threads, version=version):
            count += len(chunk)
        rates.append(count / (time.perf_counter() - start))
        cpu_rates.append(count / (time.process_time() - cpu_start))
    result = {"case": case, "n": n, "best": max(rates), "median": sorted(rates)[len(rates) // 2],
              "per_cpu_second": max(cpu_rates)}
    if write:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            simulate_to_file(Path(tmp) / "bench.h5", geometry, particle, n, progress=False,
                             energy_range=energy, angle_range=angle, seed=1,
                             version=version)
            result["to_file"] = n / (time.perf_counter() - start)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), action="append",
                        help="case(s) to run (default: all)")
    parser.add_argument("--n", type=int, default=None, help="showers per run")
    parser.add_argument("--threads", type=int, default=None,
                        help="worker threads (default: usable cores, up to 4)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; best reported")
    parser.add_argument("--write", action="store_true", help="also time writing the file")
    parser.add_argument("--simulator-version", action="append", default=None,
                        help="version(s) to time, each case in turn (default: the newest)")
    args = parser.parse_args()

    from caloforge.simulate.parametric import SIMULATOR_VERSION, _threads, check_version

    for version in args.simulator_version or []:
        try:
            check_version(version)
        except Exception as err:  # one line, no traceback
            raise SystemExit(f"error: {err}") from None

    threads = args.threads or _threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"# parametric simulator, {threads} thread(s), {cores} usable core(s), "
          f"{platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.2f}")
    header = (f"{'case':<16} {'version':<13} {'n':>7} {'best /s':>10} {'median /s':>10} "
              f"{'/ CPU s':>9}")
    print(header + (f" {'to file /s':>11}" if args.write else ""))
    for case in args.case or list(CASES):
        for version in args.simulator_version or [SIMULATOR_VERSION]:
            r = bench(case, args.n, threads, args.repeat, args.write, version)
            line = (f"{r['case']:<16} {version:<13} {r['n']:>7} {r['best']:>10.0f} "
                    f"{r['median']:>10.0f} {r['per_cpu_second']:>9.0f}")
            if args.write:
                line += f" {r['to_file']:>11.0f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
