"""Ship a trained run (coupling flow, CaloFlow, CaloGAN, WGAN-GP, 3DGAN) as a pretrained
model and measure its card.

Not a unit test: the recipe behind every card in ``src/caloforge/pretrained/``. It

1. stores the run under NAME (float16 weights unless ``--float32``, CaloGAN's large weight
   matrices as int8, training-only states and sub-modules that sampling does not need
   dropped),
2. simulates N fresh parametric showers (reference seed, the geometry's energy range, the
   simulator version of the training file),
   generates N showers from the stored model, and runs ``caloforge evaluate`` on the two
   (every command printed, the same ones the card gives to reproduce it),
3. measures the mean E_tot/E_inc of both samples in every 10-GeV bin,
4. writes ``card.json`` (the figures) and ``card.md`` (the card for people).

Speed is not measured here (a model is timed beside the others in one ``caloforge bench``
run); pass the measured figures with ``--ms-batch-10000`` / ``--ms-batch-1``.

    python benchmarks/pretrained_card.py runs/cpf_gamma calogan-gamma --particle gamma \\
        --train-file gamma_train.h5 --workdir /tmp/card_gamma
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.stats

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "src" / "caloforge" / "pretrained"
TARGET_AUC, TARGET_MS, TARGET_SEPARATION, TARGET_RESPONSE = 0.65, 0.1, 0.02, 0.01
#: WGAN-GP targets: mean E_tot/E_inc within 2% of the reference, its spread within 30%
TARGET_WGAN_MEAN, TARGET_WGAN_SPREAD = 0.02, 0.30


class Family(NamedTuple):
    """What a card says of a model family and which response target it is held to."""
    title: str  #: name in the card's title
    about: str  #: first paragraph of the card: what the model is, with its papers
    output: str  #: appended to "Output in MeV per voxel"
    schedule: str  #: appended to the config line
    #: "per_bin": mean E_tot/E_inc within ``per_bin_tolerance`` in every 10-GeV bin;
    #: "moments": overall mean and spread within TARGET_WGAN_* (seed WGAN-GP)
    response_target: str
    per_bin_tolerance: float = TARGET_RESPONSE


FAMILIES = {
    "coupling-flow": Family(
        "coupling flow",
        "A conditional coupling-block spline flow (`coupling-flow`, see docs/coupling-flow.md;\n"
        "architecture after CaloINN, arXiv:2312.09290, on CaloFlow's factorisation, "
        "arXiv:2106.05285)",
        "; sampled voxels below\nthe config's `threshold_mev` are set to 0",
        ", cosine learning-rate decay", "per_bin"),
    "wgan": Family(
        "WGAN-GP",
        "A conditional Wasserstein GAN with gradient penalty (`wgan`, see docs/wgan.md;\n"
        "Gulrajani et al., arXiv:1704.00028; the dense model of J. Klein's 2017 talk\n"
        "\"Generative modeling - electromagnetic shower of a calorimeter\", with the shower's\n"
        "response as one more coordinate)",
        "", ", constant learning rates", "moments"),
    # the 3DGAN target: ECAL sum within 10% of the reference per 10-GeV bin (Carminati et
    # al. report agreement with Geant4 within about 10%)
    "3dgan": Family(
        "3DGAN",
        "A conditional 3D-convolutional GAN (`3dgan`, see docs/3dgan.md; Khattak, Vallecorsa,\n"
        "Carminati, ICIP 2018; Carminati et al., J. Phys.: Conf. Ser. 1525 (2020) 012064),\n"
        "CPU-sized: a 25 x 25 window, resize-convolutions, the image rescaled to a drawn ECAL\n"
        "sum (response normalisation), conditioned on energy and polar angle (60-120 degrees)",
        "", ", RMSprop at constant learning rates", "per_bin", 0.10),
    "caloflow": Family(
        "CaloFlow student",
        "CaloFlow (`caloflow`, see docs/caloflow.md; Krause and Shih, arXiv:2106.05285 and\n"
        "arXiv:2110.11377): Flow I for the layer energies and the IAF student distilled from\n"
        "a MAF teacher; shipped without the teacher (the student samples alone; `--sampler\n"
        "teacher` needs the training run)",
        "; sampled voxels below\nthe config's `threshold_mev` are set to 0",
        ", cosine learning-rate decay per stage", "per_bin"),
    # the seed's target for CaloGAN: response within 5% in every energy bin
    "calogan": Family(
        "CaloGAN",
        "CaloGAN (`calogan`, see docs/training.md; Paganini, de Oliveira, Nachman,\n"
        "arXiv:1705.02355 and arXiv:1712.10321): three locally connected generator streams\n"
        "with in-painting attention, CPU-sized (`latent_size` 128); shipped without its\n"
        "discriminator (the generator samples alone)",
        "", ", constant learning rates", "per_bin", 0.05),
}
#: sub-modules each family's pretrained copy leaves out (the size limit: 8 MB a model)
DROP = {"caloflow": ("teacher",), "calogan": ("discriminator",)}
#: families whose large weight matrices are stored as int8 (CaloGAN's generator is
#: 8.0 MB in float16)
INT8 = {"calogan"}
#: particle name -> (as a noun, attributive): "for photons", "photon showers"
PARTICLE_WORDS = {"eplus": ("e+", "e+"), "gamma": ("photons", "photon"),
                  "piplus": ("pi+", "pi+"), "eminus": ("e-", "e-")}


def speed_figures(ms_batch_10000: float | None, ms_batch_1: float | None,
                  ms_onnx_batch_10000: float | None = None) -> dict[str, float]:
    """A card's speed figures (ms per shower, 2 threads) for ``card.json``; the ones not
    timed are left out."""
    keys = {"ms_per_shower_batch_10000_torch_2_threads": ms_batch_10000,
            "ms_per_shower_batch_1_torch_2_threads": ms_batch_1,
            "ms_per_shower_batch_10000_onnxruntime_2_threads": ms_onnx_batch_10000}
    return {k: v for k, v in keys.items() if v is not None}


def speed_line(ms_batch_10000: float, ms_batch_1: float | None, note: str) -> str:
    """The card's ``- speed:`` line (no newline): ``note`` says how it was timed."""
    return (f"- speed: {ms_batch_10000:.3f} ms per shower at batch 10,000"
            + (f", {ms_batch_1:.1f} ms at batch 1" if ms_batch_1 else "")
            + f" ({note}); Geant4 11.4 (electromagnetic physics, data-free models) takes "
            "1093 ms per calogan e+ shower on this machine class")


def speed_target(ms_batch_10000: float) -> str | None:
    """The targets line's speed item, ``None`` when the target is met."""
    if ms_batch_10000 <= TARGET_MS:
        return None
    return f"{TARGET_MS} ms per shower ({ms_batch_10000:.3f} ms)"


def run(cmd: list[str], cwd: Path) -> None:
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def response_per_bin(ref, gen, lo: float, hi: float):
    """``[(bin_lo, bin_hi, ref mean, gen mean, relative difference, its error)]`` of
    E_tot/E_inc in 10-GeV bins of the incident energy over ``[lo, hi]`` GeV, for two
    ``ShowerSet``s (:func:`response_rows`)."""
    return response_rows(*((s.incident_energy, s.voxels.sum(1) / s.incident_energy)
                           for s in (ref, gen)), lo, hi)


def response_rows(ref: tuple[np.ndarray, np.ndarray], gen: tuple[np.ndarray, np.ndarray],
                  lo: float, hi: float):
    """:func:`response_per_bin` from ``(incident energy in MeV, E_tot/E_inc)`` arrays of
    each sample; the error is the statistical one of the ratio of the two means (standard
    errors of both samples)."""
    rows = []
    edges = np.arange(np.floor(lo / 10) * 10, hi + 1e-9, 10.0)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        means, rel_errors = [], []
        for energy_mev, response in (ref, gen):
            e = energy_mev / 1000.0  # GeV
            r = response[(e >= max(a, lo)) & (e < b)]
            means.append(float(r.mean()))
            rel_errors.append(float(r.std(ddof=1)) / np.sqrt(len(r)) / means[-1])
        ratio = means[1] / means[0]
        rows.append((a, b, means[0], means[1], ratio - 1, ratio * np.hypot(*rel_errors)))
    return rows


def response_moments(showers) -> tuple[float, float]:
    """Mean and standard deviation of E_tot/E_inc of a ``ShowerSet``."""
    response = showers.voxels.sum(1) / showers.incident_energy
    return float(response.mean()), float(response.std(ddof=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="trained run directory")
    ap.add_argument("name", help="pretrained name, e.g. calogan-gamma")
    ap.add_argument("--particle", required=True)
    ap.add_argument("--train-file", required=True, help="the training file (read for its "
                    "size, seed and simulator version)")
    ap.add_argument("--train-seconds", type=float, default=None,
                    help="training wall time (s) (default: the checkpoint's elapsed_s)")
    ap.add_argument("--config", default=None, help="config path as given to train "
                    "(default: configs/<family>_<geometry>.yaml)")
    ap.add_argument("-n", type=int, default=50_000, help="showers a side (default 50000)")
    ap.add_argument("--ref-seed", type=int, default=13)
    ap.add_argument("--gen-seed", type=int, default=4)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--root", type=Path, default=PRETRAINED,
                    help="where to store the model (default: the package's pretrained "
                    "folder; another folder, to judge a run before it replaces a shipped "
                    "model, is passed to the commands as $CALOFORGE_PRETRAINED_DIR)")
    ap.add_argument("--threads", type=int, default=None,
                    help="generate's and evaluate's threads (default: their own, all cores)")
    ap.add_argument("--ms-batch-10000", type=float, default=None)
    ap.add_argument("--ms-batch-1", type=float, default=None)
    ap.add_argument("--ms-onnx-batch-10000", type=float, default=None,
                    help="ONNX Runtime's ms per shower at batch 10,000 (card.json; say it in "
                         "--speed-note too)")
    ap.add_argument("--speed-note", default="torch, 2 threads, shared 2-core AMD EPYC, one "
                    "`caloforge bench` run beside the other models")
    ap.add_argument("--config-note", default="", help="appended to the card's config line, "
                    "e.g. '; the file at commit X'")
    ap.add_argument("--cost-note", default="two trainings side by side",
                    help="how the training time was taken, for the card")
    ap.add_argument("--float32", action="store_true",
                    help="store float32 weights (small models; a GAN's sparsity can move "
                         "with float16 weights)")
    ap.add_argument("--skip-measure", action="store_true",
                    help="reuse WORKDIR's ref.h5, gen.h5 and eval/ (only rewrite the card)")
    args = ap.parse_args()

    import torch

    from caloforge.pretrained import PRETRAINED_ENV, save_pretrained

    ckpt = torch.load(args.run / "checkpoint.pt", weights_only=True, map_location="cpu")
    geometry, family = ckpt["geometry"]["name"], ckpt["family"]
    if family not in FAMILIES:
        raise SystemExit(f"no card recipe for family {family!r}; known: {', '.join(FAMILIES)}")
    kind = FAMILIES[family]
    from caloforge.data import read_showers

    train = read_showers(args.train_file)
    meta = train.meta
    e_train = train.incident_energy / 1000.0  # GeV
    n_train = len(e_train)
    sim_version = str(meta.get("generator_version", "unknown"))
    train_seed = int(meta.get("seed", -1))
    config = args.config or f"configs/{family}_{geometry}.yaml"
    from caloforge.geometry import get_geometry

    lo, hi = get_geometry(geometry).energy_range
    word, adjective = PARTICLE_WORDS.get(args.particle, (args.particle, args.particle))
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)

    root = args.root.resolve()
    os.environ[PRETRAINED_ENV] = str(root)
    half = not args.float32
    drop = DROP.get(family, ())
    int8 = family in INT8
    save_pretrained(args.run, args.name, {"summary": "figures pending"}, root=root, half=half,
                    drop=drop, int8=int8)
    energy = f"{lo:g}:{hi:g}"
    # fresh showers of the simulator version the model learned
    simulate = ["caloforge", "simulate", "--simulator-version", sim_version, "-g", geometry,
                "--particle", args.particle, "-n", str(args.n), "--energy", energy, "--seed",
                str(args.ref_seed), "-o", "ref.h5", "-q"]
    generate = ["caloforge", "generate", args.name, "-n", str(args.n), "--energy", energy,
                "--seed", str(args.gen_seed), "-o", "gen.h5", "-q"]
    evaluate = ["caloforge", "evaluate", "ref.h5", "gen.h5", "-o", "eval", "--no-plots", "-q"]
    if args.threads:
        generate += ["--threads", str(args.threads)]
        evaluate += ["--threads", str(args.threads)]
    if not args.skip_measure:
        for path in ("ref.h5", "gen.h5"):
            (work / path).unlink(missing_ok=True)
        run(simulate, work)
        run(generate, work)
        subprocess.run(["rm", "-rf", str(work / "eval")], check=True)
        run(evaluate, work)
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    auc = {k: metrics["classifier"][k] for k in ("low", "normed", "high")
           if k in metrics["classifier"]}
    sep = metrics["separation_power"]
    worst = max(sep, key=lambda k: sep[k])
    ref, gen = read_showers(work / "ref.h5"), read_showers(work / "gen.h5")
    rows = response_per_bin(ref, gen, lo, hi)
    worst_row = max(rows, key=lambda r: abs(r[4]))
    worst_response, worst_error = abs(worst_row[4]), worst_row[5]
    pulls = np.array([r[4] / r[5] for r in rows])
    worst_pull, chi2 = float(np.abs(pulls).max()), float((pulls ** 2).sum())
    chi2_p = float(scipy.stats.chi2.sf(chi2, len(rows)))
    for a, b, r, g, d, err in rows:
        print(f"{a:5.0f}-{b:3.0f} GeV  E_tot/E_inc ref {r:.5f}  gen {g:.5f}  "
              f"{100 * d:+.3f} +- {100 * err:.3f}%")

    figures = {}
    for k, v in auc.items():
        figures[f"auc_{k}"] = round(v["auc"], 4)
    for k, v in auc.items():
        figures[f"auc_{k}_raw"] = round(v["auc_uncalibrated"], 4)
    figures.update({
        "fpd": float(f"{metrics['fpd'][0]:.4g}"),
        "fpd_error": float(f"{metrics['fpd'][1]:.2g}"),
        "kpd": float(f"{metrics['kpd'][0]:.4g}"),
        "kpd_error": float(f"{metrics['kpd'][1]:.4g}"),
        "worst_separation_power": round(sep[worst], 4),
        "response_max_rel_dev_10gev_bins_percent": round(100 * worst_response, 3),
        "response_max_rel_dev_error_percent": round(100 * worst_error, 3),
        "response_max_pull": round(worst_pull, 2),
        "response_chi2": round(chi2, 2),
        "response_bins": len(rows),
        "response_chi2_p": float(f"{chi2_p:.3g}"),
    })
    figures.update(speed_figures(args.ms_batch_10000, args.ms_batch_1,
                                 args.ms_onnx_batch_10000))
    figures.update({"n_generated": metrics["n_generated"], "n_reference": metrics["n_reference"],
                    "threshold_MeV": metrics["threshold_MeV"]})

    auc_text = " / ".join(f"{figures[f'auc_{k}']:.3f}" for k in auc)
    train_cmd = (f"caloforge train {family} --data {Path(args.train_file).name} --out "
                 f"{args.run.name} --config {config} --num-threads 1")
    from caloforge.models import get_model_class

    if get_model_class(family).stages:  # trained in stages: all of them
        train_cmd += " --stage all"
    sim_cmd = (f"caloforge simulate --simulator-version {sim_version} -g {geometry} "
               f"--particle {args.particle} -n {n_train} "
               f"--energy {energy} --seed {train_seed} -o {Path(args.train_file).name}")
    seconds = args.train_seconds or ckpt["elapsed_s"]
    heading = (f"{metrics['n_generated']} generated vs {metrics['n_reference']} fresh "
               f"parametric showers of seed {args.ref_seed}, readout threshold "
               f"{metrics['threshold_MeV']:g} MeV")
    response = figures["response_max_rel_dev_10gev_bins_percent"]
    card = {
        "summary": (f"{kind.title}, {geometry} {word} {lo:g}-{hi:g} GeV, learnt from the "
                    f"parametric simulator ({sim_version}, not Geant4): AUC "
                    f"{'/'.join(auc)} {auc_text} on {args.n // 1000}k a side"),
        "figures": figures,
        "training_data": (f"{n_train:,} parametric {adjective} showers, generator_version "
                          f"{sim_version}, seed {train_seed}, {e_train.min():.0f}-"
                          f"{e_train.max():.0f} GeV uniform ({sim_cmd})"),
        "simulator_version": sim_version,
        "config": f"{config} ({ckpt['step']} steps{args.config_note})",
        "training_cost": (f"{seconds:.0f} s of training on one CPU thread of the shared "
                          f"2-core build machine ({args.cost_note})"),
        "command": train_cmd,
        "evaluation_command": " && ".join(shlex.join(c) for c in (simulate, generate,
                                                                  evaluate)),
        "speed_command": (f"caloforge bench {args.name} --threads 2 --batch-sizes "
                          "1,100,1000,10000 --repeats 3"),
    }
    missed, unresolved = [], []
    moments = ""
    if kind.response_target == "moments":
        (ref_mean, ref_spread), (gen_mean, gen_spread) = map(response_moments, (ref, gen))
        figures.update({"response_mean_ref": round(ref_mean, 5),
                        "response_mean_gen": round(gen_mean, 5),
                        "response_spread_ref": round(ref_spread, 5),
                        "response_spread_gen": round(gen_spread, 5)})
        if abs(gen_mean / ref_mean - 1) > TARGET_WGAN_MEAN:
            missed.append(f"mean E_tot/E_inc within {100 * TARGET_WGAN_MEAN:g}% "
                          f"({gen_mean:.4f} vs {ref_mean:.4f})")
        if abs(gen_spread / ref_spread - 1) > TARGET_WGAN_SPREAD:
            missed.append(f"spread of E_tot/E_inc within {100 * TARGET_WGAN_SPREAD:g}% "
                          f"({gen_spread:.4f} vs {ref_spread:.4f})")
        moments = (f"- E_tot/E_inc mean {figures['response_mean_gen']} (reference "
                   f"{figures['response_mean_ref']}), spread {figures['response_spread_gen']} "
                   f"(reference {figures['response_spread_ref']})\n")
    missed += [f"classifier AUC <= {TARGET_AUC} ({k} {figures[f'auc_{k}']:.3f})"
               for k in auc if figures[f"auc_{k}"] > TARGET_AUC]
    if sep[worst] > TARGET_SEPARATION:
        missed.append(f"worst separation power <= {TARGET_SEPARATION} ({worst} {sep[worst]:.3f})")
    # (for the other families the per-bin figure is on the card, but not a target)
    tolerance = kind.per_bin_tolerance
    per_bin_missed = kind.response_target == "per_bin" and worst_response > tolerance
    if per_bin_missed and chi2_p < 0.05:
        missed.append(f"response within {100 * tolerance:g}% in every 10-GeV bin "
                      f"({100 * worst_response:.2f} ± {100 * worst_error:.2f}%)")
    elif per_bin_missed:
        unresolved.append(
            f"response within {100 * tolerance:g}% in every 10-GeV bin: the "
            f"deviations (at most {100 * worst_response:.2f}%) are consistent with zero "
            f"(chi2 {chi2:.1f} for {len(rows)} bins, p = {chi2_p:.2f}), but with "
            f"{args.n:,} showers a side one bin's statistical error is "
            f"±{100 * worst_error:.1f}%, so {100 * tolerance:g}% is not resolved")
    if args.ms_batch_10000 is not None and (slow := speed_target(args.ms_batch_10000)):
        missed.append(slow)
    n_params = sum(v.numel() for k, v in ckpt["model_state"].items()  # those shipped
                   if v.is_floating_point() and "gather" not in k and "scatter" not in k
                   and k.split(".")[0] not in drop)
    card["storage"] = (f"{'float16 weights (float32 once loaded)' if half else 'float32 weights'}"
                       f", {n_params / 1e6:.2f}M parameters")
    if int8:
        card["storage"] += (", the weight matrices of at least 65,536 entries as int8 with "
                            "one float32 scale per row (dequantised when loaded)")
    speed = ""
    if args.ms_batch_10000 is not None:
        speed = speed_line(args.ms_batch_10000, args.ms_batch_1, args.speed_note) + "\n"
    table = "| " + " | ".join(["classifier AUC (calibrated / raw)", *auc]) + " |\n"
    table += "|" + "---|" * (len(auc) + 1) + "\n| |" + "".join(
        f" {figures[f'auc_{k}']:.4f} / {figures[f'auc_{k}_raw']:.4f} |" for k in auc) + "\n"
    response_detail = (
        f"that bin: {response} ± {figures['response_max_rel_dev_error_percent']}% "
        f"statistical; the largest deviation over its error in any bin "
        f"{figures['response_max_pull']}; chi2 {figures['response_chi2']} for "
        f"{figures['response_bins']} bins, p = {figures['response_chi2_p']}")
    limits = "".join(f"- Not resolved at this sample size: {u}.\n" for u in unresolved)
    text = f"""# {args.name}: {kind.title} for {word} in the {geometry} calorimeter

{kind.about}
for {word} of {lo:g}-{hi:g} GeV in the {geometry} geometry
({get_geometry(geometry).n_voxels} voxels). Output in MeV per voxel{kind.output}.

**It learnt the embedded parametric simulator ({sim_version}), not Geant4.** Its figures
are against fresh parametric showers; against Geant4 it can be no better than the simulator
itself (docs/simulator.md).

## Training
- data: {card['training_data']}
- config: {card['config']}{kind.schedule}, seed 0
- cost: {card['training_cost']}
- command: `{train_cmd}`
- caloforge version {ckpt['caloforge_version']}; storage: {card['storage']}

## Measured (this stored model, {heading})
{table}
- FPD {figures['fpd']} ± {figures['fpd_error']}; KPD {figures['kpd']} ± {figures['kpd_error']}
- worst separation power {figures['worst_separation_power']} ({worst})
- mean E_tot/E_inc in every 10-GeV bin within {response}% of the reference ({response_detail})
{moments}{speed}
Reproduce: `{card['evaluation_command']}`; speed: `{card['speed_command']}`.

## Limits
- Targets not yet met: {'; '.join(missed) if missed else 'none'}.
{limits}- Energies outside {lo:g}-{hi:g} GeV are refused.
"""
    save_pretrained(args.run, args.name, card, root=root, card_text=text, half=half,
                    drop=drop, int8=int8)
    print(text)


if __name__ == "__main__":
    main()
