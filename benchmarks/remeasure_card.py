"""Re-measure a shipped model's classifier AUCs after a change to the classifier test.

Not a unit test. Runs the card's own ``evaluation_command`` (the same fresh reference
seed and generation seed, so the two samples are the ones the card was measured on) in
WORKDIR, checks that the sample-level figures (FPD, worst separation power) came out as
the card has them, and rewrites the AUCs in ``card.json`` and ``card.md`` (table, summary,
the targets line), with a line saying when and why they were re-measured. Everything else
on the card stays as ``benchmarks/pretrained_card.py`` wrote it. With ``--other-sample``
(the sampler changed, so the same commands draw another sample) the figures stay and a
dated line gives the new sample's AUCs, FPD and worst separation power.

    python benchmarks/remeasure_card.py calogan-eplus --workdir /tmp/re_eplus \\
        --why "the classifier's inputs standardised on the reference showers alone"
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
from pathlib import Path

from pretrained_card import PRETRAINED, TARGET_AUC

KINDS = ("low", "normed", "high")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="shipped model, e.g. calogan-eplus")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--why", required=True, help="why the AUCs were re-measured, for the card")
    ap.add_argument("--skip-measure", action="store_true",
                    help="reuse WORKDIR/eval/metrics.json")
    ap.add_argument("--other-sample", action="store_true",
                    help="the sampler changed, so the card's commands now draw another "
                         "sample: keep the card's figures and add a dated line with this "
                         "sample's AUCs, FPD and worst separation power")
    args = ap.parse_args()

    folder = PRETRAINED / args.name
    card = json.loads((folder / "card.json").read_text())
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not args.skip_measure:
        for path in ("ref.h5", "gen.h5"):
            (work / path).unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(work / "eval")], check=True)
        print(card["evaluation_command"], flush=True)
        subprocess.run(card["evaluation_command"], shell=True, cwd=work, check=True)
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    figures = card["figures"]
    if args.other_sample:
        add_other_sample(args.name, folder, card, metrics, args.why)
        return

    # the samples must be the card's: FPD and separation power do not involve the classifier
    fpd, sep = metrics["fpd"][0], max(metrics["separation_power"].values())
    if (abs(fpd - figures["fpd"]) > 1e-3 * abs(figures["fpd"]) + 1e-6
            or abs(sep - figures["worst_separation_power"]) > 1e-4):
        raise SystemExit(f"{args.name}: FPD {fpd:.4g} / separation {sep:.4f} differ from the "
                         f"card's {figures['fpd']} / {figures['worst_separation_power']}: not "
                         "the card's samples, nothing rewritten")

    kinds = [k for k in KINDS if f"auc_{k}" in figures]
    old = {k: figures[f"auc_{k}"] for k in kinds}
    for k in kinds:
        figures[f"auc_{k}"] = round(metrics["classifier"][k]["auc"], 4)
        figures[f"auc_{k}_raw"] = round(metrics["classifier"][k]["auc_uncalibrated"], 4)
    new_text = " / ".join(f"{figures[f'auc_{k}']:.3f}" for k in kinds)
    card["summary"] = re.sub(r"(AUC [a-z/]+) [0-9./ ]+? on", rf"\g<1> {new_text} on",
                             card["summary"])
    date = datetime.date.today().isoformat()
    note = f"AUCs re-measured {date} on the same samples: {args.why}"
    card["classifier_remeasured"] = note
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")

    text = (folder / "card.md").read_text()
    row = "| |" + "".join(f" {figures[f'auc_{k}']:.4f} / {figures[f'auc_{k}_raw']:.4f} |"
                          for k in kinds)
    text, n = re.subn(r"^\| \|.*\|$", row, text, count=1, flags=re.M)
    if n != 1:
        raise SystemExit(f"{args.name}: no AUC row in card.md")
    text = re.sub(r"^- AUCs re-measured .*\n", "", text, flags=re.M)
    text = text.replace(row + "\n\n", row + "\n\n- " + note + "\n", 1)

    def targets(match: re.Match) -> str:
        items = [i for i in match.group(1).split("; ")
                 if i != "none" and not i.startswith("classifier AUC")]
        auc = [f"classifier AUC <= {TARGET_AUC} ({k} {figures[f'auc_{k}']:.3f})"
               for k in kinds if figures[f"auc_{k}"] > TARGET_AUC]
        moments = [i for i in items if i.startswith(("mean E_tot", "spread of"))]
        rest = [i for i in items if i not in moments]
        return f"- Targets not yet met: {'; '.join(moments + auc + rest) or 'none'}."

    text, n = re.subn(r"^- Targets not yet met: (.*)\.$", targets, text, count=1, flags=re.M)
    if n != 1:
        raise SystemExit(f"{args.name}: no targets line in card.md")
    (folder / "card.md").write_text(text)
    print(f"{args.name}: AUC " + ", ".join(f"{k} {old[k]:.4f} -> {figures[f'auc_{k}']:.4f}"
                                           for k in kinds))


def add_other_sample(name: str, folder: Path, card: dict, metrics: dict, why: str) -> None:
    """Keep the card's figures and say, in a dated line of ``card.md`` (after the AUC
    table) and ``card.json`` (``other_sample``), what the sample the card's commands
    draw now gives."""
    kinds = [k for k in KINDS if f"auc_{k}" in card["figures"]]
    auc = " / ".join(f"{metrics['classifier'][k]['auc']:.3f}" for k in kinds)
    fpd, fpd_error = metrics["fpd"][0], metrics["fpd"][1]
    worst = max(metrics["separation_power"], key=metrics["separation_power"].get)
    line = (f"{datetime.date.today().isoformat()}: {why}; the card's commands now draw "
            f"another sample, on which AUC {'/'.join(kinds)} {auc}, FPD {fpd:.4f} ± "
            f"{fpd_error:.4f}, worst separation power "
            f"{metrics['separation_power'][worst]:.4f} ({worst})")
    card["other_sample"] = line
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    text = re.sub(r"^- [0-9-]{10}: .*the card's commands now draw another sample.*\n", "",
                  (folder / "card.md").read_text(), flags=re.M)
    text, n = re.subn(r"^(\| \|.*\|\n\n)", rf"\g<1>- {line}\n", text, count=1,
                      flags=re.M)
    if n != 1:
        raise SystemExit(f"{name}: no AUC row in card.md")
    (folder / "card.md").write_text(text)
    print(f"{name}: {line}")


if __name__ == "__main__":
    main()
