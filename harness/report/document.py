"""A run's figures and its report (Markdown, and HTML with the figures embedded), regenerated
from the files of the run directory; and a comparison of several runs."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
from scipy.stats import gmean

from harness.report import plots
from harness.errors import HarnessError
from harness.kernels import modelled_method
from harness.models.analysis import ZERO_SHOT_KINDS, zero_shot_text
from harness.models.fitted import held_out_text
from harness.models.paper import PaperModel
from harness.store.files import StoreError
from harness.store.runs import MODEL_FIT, RunStore, read_model_fit
from harness.sweep.results import load_results, noise_note, summary_table


def _load(run_dir: Path) -> dict:
    """A run's files: its results rebuilt from points.jsonl, the model's outputs when the run
    has them, its metadata."""
    data = {"frame": load_results(run_dir)}
    for name, key in (("sweet_spots.csv", "spots"), ("model_points.csv", "points")):
        data[key] = _csv(run_dir / name)
    try:
        data["fit"] = read_model_fit(run_dir / MODEL_FIT)
    except StoreError as exc:  # a fit of another version: the report goes on without it
        print(f"warning: {exc}; `spconv refit {run_dir}` fits the run again", file=sys.stderr)
        data["fit"] = None
    store = RunStore(run_dir, readonly=True)
    try:
        data["meta"] = store.read_metadata()
    finally:
        store.close()
    return data


def _csv(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path} is damaged ({type(exc).__name__}); rebuild it with "
                           f"`spconv refit {path.parent}`") from None


def _caps_line(caps: dict, profile: str, host: str) -> str:
    """What a sweep of another machine's profile measured: its ISA reproduced on this host,
    the dense libraries held to it, and what is not reproduced."""
    if not caps.get("not_reproduced"):
        return "The profile describes this host."
    held = " ".join(f"`{k}={v}`" for k, v in caps.get("env", {}).items())
    return (f"A projection of `{profile}` measured on {host}: its instruction set "
            f"({caps.get('profile_isa')}) is reproduced, "
            + (f"the dense libraries capped to it ({held}); " if held else
               "at the host's own level; ")
            + f"not reproduced: {', '.join(caps['not_reproduced'])}. Rows marked `uncapped` ran "
              "above the profile's level and are no baseline.")


def _paper_model(fit: dict | None, meta: dict | None):
    if not fit:
        return None
    numbers = fit["paper_model_on_host"]
    profile = SimpleNamespace(name="host", alpha=numbers["alpha_fitted"],
                              beta=(meta or {}).get("profile", {}).get("beta", 2.0),
                              peak_sgemm_gflops=numbers["sgemm_gflops"],
                              stream_gbps=numbers["stream_gbps"])
    return PaperModel(profile)


def figures(run_dir: Path) -> dict[str, Path]:
    """Draw every figure the run's files support into run_dir/figures; returns name -> PNG."""
    d = _load(run_dir)
    out = run_dir / "figures"
    made = {}
    frame = d["frame"]
    if frame["speedup"].notna().any():
        made["speedup_vs_sparsity"] = plots.save(plots.speedup_vs_sparsity(
            frame, d["spots"], d["fit"], _paper_model(d["fit"], d["meta"])), out,
            "speedup_vs_sparsity")[0]
    if d["spots"] is not None and not d["spots"].empty:
        made["sweet_spots"] = plots.save(plots.sweet_spot_dumbbell(d["spots"]), out, "sweet_spots")[0]
    if d["fit"] is not None:
        made["roofline"] = plots.save(plots.roofline(frame, d["fit"]["calibration"]), out, "roofline")[0]
    if d["points"] is not None and not d["points"].empty:
        made["model_error"] = plots.save(plots.model_error(d["points"]), out, "model_error")[0]
    if (frame["status"] == "ok").any():
        made["time_per_method"] = plots.save(plots.time_per_method(frame), out, "time_per_method")[0]
    return made


def _table(df: pd.DataFrame) -> str:
    """A Markdown table (no extra dependency)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{v:.3g}"
    return str(v)


def headline(frame: pd.DataFrame) -> list[str]:
    d = frame[(frame["method"] == modelled_method()) & (frame["status"] == "ok")].dropna(subset=["speedup"])
    lines = []
    if d.empty:
        return ["No direct sparse point with a dense baseline in this run."]
    best = d.loc[d["speedup"].idxmax()]
    lines.append(f"Best direct sparse speedup: **{best['speedup']:.2f}x** over "
                 f"{best['best_dense_method']} ({best['layer']}, sparsity {best['sparsity']:.2f}, "
                 f"batch {best['batch']}, {best['threads']} thread(s)).")
    at90 = d[np.isclose(d["target_sparsity"], 0.9)]
    if len(at90):
        gm = float(gmean(at90["speedup"]))
        lines.append(f"At 90% sparsity: geometric-mean speedup **{gm:.2f}x** over {len(at90)} "
                     f"points; useful throughput median {at90['useful_gflops'].median():.1f} GFLOP/s.")
    return lines


def write_report(run_dir: Path) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    d = _load(run_dir)
    made = figures(run_dir)
    frame, meta, fit = d["frame"], d["meta"] or {}, d["fit"]
    host = meta.get("host", {})
    md = [f"# Sparse convolution run `{run_dir.name}`", ""]
    md += [f"- {line}" for line in headline(frame)]
    if fit:
        v = fit["validation"]
        md.append(f"- Fitted model: median error {v['median_rel_error']:.1%}, worst "
                  f"{v['worst_rel_error']:.1%}, worst leave-one-layer-out median "
                  f"{held_out_text(v['worst_lolo_median'])}, worst leave-one-class-out median "
                  f"{held_out_text(v['worst_loco_median'])}.")
        md += [f"- The {what} from the calibration alone (zero-shot): {zero_shot_text(fit[key])}."
               for key, what in ZERO_SHOT_KINDS.items() if key in fit]
    md += ["", "## Machine", "",
           f"{host.get('cpu_model', '?')}, {host.get('physical_cores', '?')} cores, ISA "
           f"features {', '.join(host.get('features', []))}; caches {host.get('caches_kib', {})} KiB.",
           f"Profile `{meta.get('profile', {}).get('name', '?')}`, build "
           f"`{meta.get('build', {}).get('isa', '?')}`"
           f"{' (fallback build)' if meta.get('build', {}).get('emulated') else ''}; compiler "
           f"{meta.get('build', {}).get('compiler_version', '?')}.",
           _caps_line(meta.get("dense_caps") or {}, meta.get("profile", {}).get("name", "?"),
                      host.get("cpu_model", "?")),
           f"BLAS: {json.dumps(meta.get('blas', {}).get('libraries', []))}; environment "
           f"{meta.get('blas', {}).get('env', {})}.",
           f"Load average {meta.get('load_average_start')} at start, {meta.get('load_average_end')} "
           f"at end; git {meta.get('git', {})}.", ""]
    summary = summary_table(d["frame"])
    if len(summary):
        md += ["## Best speedup per layer", "", _table(summary), ""]
    if d["spots"] is not None:
        cols = [c for c in ("layer", "batch", "threads", "measured_crossover", "fitted_crossover",
                            "zero_shot_crossover", "paper_lower", "measured_upper",
                            "fitted_upper", "paper_upper")
                if c in d["spots"]]
        md += ["## Sweet spots (sparsity)", "", _table(d["spots"][cols]), ""]
    projection = _csv(run_dir / "projection.csv")
    if projection is not None and len(projection):
        md += ["## The paper's machines", "",
               "The paper's model at 9% non-zeros (AlexNet conv2-5) next to the paper's measured "
               "speedups, and how far this host is from each machine:", "",
               _table(projection), ""]
    uncapped = frame[frame["uncapped"] == True]  # noqa: E712
    if len(uncapped):
        md += [f"{len(uncapped)} rows ran above the profile's instruction set (`uncapped`: "
               f"{', '.join(sorted(set(uncapped['method'])))}); they are no baseline.", ""]
    if fit:
        held = [pd.DataFrame([{"left out": k, **v} for k, v in fit["validation"][key].items()])
                for key in ("leave_one_layer_out", "leave_one_class_out")]
        md += ["## Model errors", "", "The fitted model's relative time error on what it was "
               "not fitted to, leaving out each layer:", "", _table(held[0]), "",
               "and each layer class (kernel size and stride):", "", _table(held[1]), ""]
    bad = frame[frame["status"] != "ok"]
    md += ["## Warnings", ""]
    md += [f"- {noise_note(frame)}"]
    md += [f"- {r['layer']} {r['method']} s={r['sparsity']}: {r['status']} ({r['reason']})"
           for _, r in bad.iterrows()]
    md += ["", "## Figures", ""]
    md += [f"![{name}](figures/{path.name})" for name, path in made.items()]
    text = "\n".join(md) + "\n"
    md_path = run_dir / "report.md"
    md_path.write_text(text)
    html_path = run_dir / "report.html"
    html_path.write_text(_html(text, made))
    return md_path, html_path


def _html(markdown: str, made: dict[str, Path]) -> str:
    """A self-contained page: the Markdown's lines as simple HTML, figures inlined."""
    body = []
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            name = line[2:line.index("]")]
            data = base64.b64encode(made[name].read_bytes()).decode()
            body.append(f'<figure><img alt="{name}" src="data:image/png;base64,{data}"></figure>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{line.lstrip('#').strip()}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<p>• {_inline(line[2:])}</p>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
             "font-size:13px}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>" \
           + "\n".join(body) + "</body></html>\n"


def _inline(text: str) -> str:
    import html
    import re
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def compare(run_dirs: list[Path], out_dir: Path) -> Path:
    """Several runs on the same axes and in one table."""
    frames = {}
    for rd in run_dirs:
        frames[Path(rd).name] = _load(Path(rd))["frame"]
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plots.save(plots.compare_runs(frames), out_dir / "figures", "compare_speedup")[0]
    rows = []
    for label, f in frames.items():
        d = f[(f["method"] == modelled_method()) & (f["status"] == "ok")].dropna(subset=["speedup"])
        for layer, g in d.groupby("layer"):
            rows.append({"run": label, "layer": layer, "profile": g["profile"].iloc[0],
                         "host": g["host"].iloc[0], "best_speedup": g["speedup"].max(),
                         "median_s_at_0.9": g.loc[np.isclose(g["target_sparsity"], 0.9), "median_s"].median()})
    table = pd.DataFrame(rows)
    table.to_csv(out_dir / "compare.csv", index=False)
    text = "# Comparison of runs\n\n" + _table(table) + f"\n\n![compare](figures/{png.name})\n"
    (out_dir / "compare.md").write_text(text)
    (out_dir / "compare.html").write_text(_html(text, {"compare": png}))
    return out_dir / "compare.md"
