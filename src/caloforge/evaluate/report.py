"""The HTML report: one self-contained page next to its PNG figures.

The page names the generator of each file in a banner (from the file's ``generator``
attribute): showers of the parametric simulator are always called parametric, never
Geant4.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

__all__ = ["generator_label", "write_report"]


def generator_label(meta: dict) -> str:
    """How a file's generator is named in reports, from its attributes."""
    generator = str(meta.get("generator", "") or "").strip()
    if not generator:
        return "unknown (the file has no 'generator' attribute)"
    if generator.lower() == "parametric":
        version = str(meta.get("generator_version", "") or "").strip()
        return (f"parametric{' ' + version if version else ''} (caloforge's GFlash-style "
                "reference simulator, not Geant4)")
    if generator.lower() == "geant4":
        return "Geant4"
    return generator


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return html.escape(str(value))


def _value_error(pair) -> str:
    if not pair:
        return "–"
    value, error = pair
    return f"{_fmt(value)} ± {_fmt(error, 2)}"


def _with_error(result: dict, key: str) -> str:
    error = result.get(f"{key}_error")
    return _fmt(result.get(key)) + (f" ± {_fmt(error, 2)}" if error is not None else "")


def _threshold_text(metrics: dict) -> str:
    value = metrics.get("threshold_MeV")
    if value is None:
        return "none"
    source = html.escape(str(metrics.get("threshold_source", "")))
    return (f"{value:.6g} MeV per cell ({source}), applied to both samples before every "
            f"observable, histogram, classifier input and distance; cells below it count "
            f"as empty")


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em;
       color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em;
     border-bottom: 1px solid #ccc; }
.banner { background: #f4f1ea; border-left: 6px solid #d9480f; padding: 0.8em 1.2em; }
.banner p { margin: 0.3em 0; }
.warn { background: #fff4e0; border-left: 6px solid #e8a200; padding: 0.6em 1.2em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: left; }
th { background: #f0f0f0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def _banner(metrics: dict) -> str:
    """Files, generators (parametric never called Geant4), geometry and threshold."""
    ref, gen = metrics["reference"], metrics["generated"]
    return (
        "<div class='banner'>"
        f"<p><b>Reference:</b> <code>{html.escape(ref['path'])}</code> — generator: "
        f"<b>{html.escape(ref['generator_label'])}</b>; particle "
        f"{html.escape(str(ref.get('particle')))}; {ref['n_used']} of {ref['n_file']} showers"
        "</p>"
        f"<p><b>Generated:</b> <code>{html.escape(gen['path'])}</code> — generator: "
        f"<b>{html.escape(gen['generator_label'])}</b>; particle "
        f"{html.escape(str(gen.get('particle')))}; {gen['n_used']} of {gen['n_file']} showers"
        "</p>"
        f"<p><b>Geometry:</b> {html.escape(metrics['geometry'])} "
        f"({metrics['n_voxels']} voxels) — caloforge {html.escape(metrics['caloforge_version'])}"
        "</p>"
        f"<p><b>Readout threshold:</b> {_threshold_text(metrics)}</p></div>")


def _summary_rows(metrics: dict) -> list[list]:
    """Rows of the summary table: classifier, FPD/KPD, separation power, neighbours."""
    rows = []
    for kind, res in (metrics.get("classifier") or {}).items():
        auc, raw, jsd = (_with_error(res, key) for key in ("auc", "auc_uncalibrated", "jsd"))
        rows.append([f"classifier AUC calibrated / raw, JSD ({html.escape(kind)})",
                     f"{auc} / {raw}, {jsd}",
                     f"{len(res['runs'])} run(s), {res['runs'][0]['n_test']} test showers per "
                     f"sample, {res['n_inputs']} inputs; raw: the network's output, "
                     f"calibrated: after isotonic regression (its ties can lower the AUC)"])
    if not metrics.get("classifier"):
        rows.append(["classifier", "not run", ""])
    if metrics.get("fpd") is None:
        rows.append(["FPD / KPD", "–", html.escape(str(metrics.get("distances", "")))])
    else:
        rows.append(["FPD (shower shapes)", _value_error(metrics.get("fpd")),
                     "Fréchet distance extrapolated to infinite N (0 = same Gaussian "
                     "moments)"])
        rows.append(["KPD (shower shapes)", _value_error(metrics.get("kpd")),
                     "kernel MMD², polynomial kernel of degree 4"])
    sep = metrics.get("separation_power", {})
    if sep:
        mean = sum(sep.values()) / len(sep)
        worst = max(sep, key=sep.get)
        rows.append(["separation power", f"mean {_fmt(mean)}, max {_fmt(sep[worst])}",
                     f"largest for {html.escape(worst)}; 0 = identical, 1 = disjoint"])
    nn = metrics.get("nearest_neighbours") or {}
    if nn:
        rows.append(["nearest-neighbour distance ratio", _fmt(nn.get("ratio")),
                     "median NN distance generated→reference over reference→reference "
                     "(≪ 1 suggests memorised showers)"])
    rows.append(["showers compared", f"{metrics['n_reference']} reference, "
                 f"{metrics['n_generated']} generated", ""])
    conditions = metrics.get("conditions", {})
    for key, unit in (("incident_energy_range_GeV", "GeV"), ("angle_range_deg", "deg")):
        if key in conditions:
            r, g = conditions[key]["reference"], conditions[key]["generated"]
            rows.append([key.split("_range")[0].replace("_", " ") + " range",
                         f"reference {r[0]:.4g}-{r[1]:.4g} {unit}, generated "
                         f"{g[0]:.4g}-{g[1]:.4g} {unit}", ""])
    rows.append(["evaluation time", f"{metrics['timing_s'].get('total', 0):.1f} s", ""])
    return rows


def write_report(metrics: dict, outdir: str | Path,
                 figures: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> Path:
    """Write ``outdir/report.html``.

    Args:
        metrics: the dict written to ``metrics.json`` (see
            :func:`caloforge.evaluate.pipeline.evaluate_files`).
        outdir: folder holding the figures; the report goes there.
        figures: ``[(section title, [(caption, PNG file name relative to outdir)])]``.

    Returns:
        The report's path.
    """
    outdir = Path(outdir)
    gen = metrics["generated"]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>caloforge evaluation: "
             f"{html.escape(Path(gen['path']).name)}</title><style>{_CSS}</style></head><body>",
             "<h1>caloforge evaluation</h1>", _banner(metrics)]
    for warning in metrics.get("warnings", []):
        parts.append(f"<p class='warn'>{html.escape(warning)}</p>")
    parts.append("<h2>Summary</h2>")
    parts.append(_table(["metric", "value", "note"], _summary_rows(metrics)))
    sep = metrics.get("separation_power", {})
    if metrics.get("classifier"):
        parts.append("<h2>Classifier test</h2><p>Label 1 = reference, 0 = generated; AUC of "
                     "the isotonic-calibrated output and of the raw output, and JSD of the "
                     "calibrated output, on the test split (AUC 0.5: indistinguishable, 1: "
                     "perfectly separated).</p>")
        rows = []
        for kind, res in metrics["classifier"].items():
            for k, run in enumerate(res["runs"]):
                rows.append([html.escape(kind), k + 1, _fmt(run["auc"]),
                             _fmt(run["auc_uncalibrated"]), _fmt(run["jsd"]), run["best_epoch"],
                             run["epochs_run"], run["n_train"], run["n_test"],
                             _fmt(run["seconds"], 3)])
        parts.append(_table(["input", "run", "AUC calibrated", "AUC raw", "JSD", "best epoch",
                             "epochs run", "train / sample", "test / sample", "seconds"], rows))

    if sep:
        parts.append("<h2>Separation power per observable</h2>")
        ordered = sorted(sep.items(), key=lambda kv: -kv[1])
        parts.append(_table(["observable", "separation power"],
                            [[html.escape(k), _fmt(v)] for k, v in ordered]))

    for title, items in figures:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for caption, name in items:
            parts.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(caption)}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    parts.append("<h2>Settings and timing</h2>")
    settings = metrics.get("settings", {})
    parts.append(_table(["setting", "value"],
                        [[html.escape(k), html.escape(str(v))] for k, v in settings.items()]))
    parts.append(_table(["step", "seconds"],
                        [[html.escape(k), f"{v:.1f}"] for k, v in metrics["timing_s"].items()]))
    parts.append("</body></html>")
    path = outdir / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
