"""Rewrite the speed of shipped models' cards from one ``caloforge bench --json`` run.

Not a unit test. A card's speed is the figure of one bench run in which the model was
timed beside the others (``benchmarks/pretrained_card.py`` takes it as
``--ms-batch-10000`` / ``--ms-batch-1``); when the sampler gets faster the weights and
the other figures stay, and this rewrites the ``- speed:`` line, the speed figures of
``card.json`` and the 0.1 ms item of the targets line, with the bench run's note (when,
what else ran, the load). The models must have been timed by name (``caloforge bench
calogan-eplus ...``) at batch 10,000 and 1 with torch, 2 threads.

    caloforge bench calogan-eplus calogan-gamma --threads 2 --batch-sizes 1,1000,10000 \\
        --backend torch,onnxruntime --repeats 3 --json bench.json
    python benchmarks/card_speed.py bench.json calogan-eplus calogan-gamma \\
        --note "one caloforge bench run beside ..., load 1.6-1.9"
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from pretrained_card import PRETRAINED, TARGET_MS, speed_figures, speed_line, speed_target


def timing(rows: list[dict], name: str, batch: int, backend: str) -> float | None:
    """The bench run's ms per shower of pretrained ``name`` (2 threads), or ``None``."""
    for row in rows:
        if (row["name"].endswith(f"({name})") and row["batch_size"] == batch
                and row["backend"] == backend and row["threads"] == 2):
            return row["ms_per_shower"]
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path, help="JSON written by caloforge bench --json")
    ap.add_argument("names", nargs="+", help="shipped models timed in that run")
    ap.add_argument("--note", required=True,
                    help="the run, for the card: when, beside what, the machine's load")
    args = ap.parse_args()
    rows = json.loads(args.bench.read_text())["timings"]

    for name in args.names:
        ms, ms1 = timing(rows, name, 10_000, "torch"), timing(rows, name, 1, "torch")
        if ms is None or ms1 is None:
            raise SystemExit(f"{name}: not timed at batch 10,000 and 1 with torch on 2 "
                             f"threads in {args.bench}")
        rewrite(name, ms, ms1, timing(rows, name, 10_000, "onnxruntime"), args.note)


def rewrite(name: str, ms: float, ms1: float, onnx: float | None, note: str) -> None:
    """Write the speed figures (ms per shower at batch 10,000 and 1, torch, and ONNX
    Runtime's at batch 10,000 when timed) into the card of ``name``."""
    folder = PRETRAINED / name
    card = json.loads((folder / "card.json").read_text())
    card["figures"].update(speed_figures(round(ms, 4), round(ms1, 2),
                                         None if onnx is None else round(onnx, 4)))
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")

    onnx_text = f"; ONNX Runtime {onnx:.3f} ms at batch 10,000" if onnx is not None else ""
    line = speed_line(ms, ms1, f"torch, 2 threads, shared 2-core AMD EPYC, {note}{onnx_text}")
    text = (folder / "card.md").read_text()
    text, n = re.subn(r"^- speed: .*$", line.replace("\\", r"\\"), text, count=1,
                      flags=re.M)
    if n != 1:
        raise SystemExit(f"{name}: no speed line in card.md")

    def targets(match: re.Match) -> str:
        items = [i for i in match.group(1).split("; ")
                 if i != "none" and not i.startswith(f"{TARGET_MS} ms per shower")]
        if missed := speed_target(ms):
            items.append(missed)
        return f"- Targets not yet met: {'; '.join(items) or 'none'}."

    text, n = re.subn(r"^- Targets not yet met: (.*)\.$", targets, text, count=1, flags=re.M)
    if n != 1:
        raise SystemExit(f"{name}: no targets line in card.md")
    (folder / "card.md").write_text(text)
    print(f"{name}: {ms:.3f} ms per shower at batch 10,000, {ms1:.1f} at batch 1"
          + (f", ONNX Runtime {onnx:.3f}" if onnx is not None else ""))

if __name__ == "__main__":
    main()
