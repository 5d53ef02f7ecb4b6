"""The port report: ``report.json`` (machine-readable), ``report.md`` and ``report.html`` (tables and
plots people can read). Written from one dict so the three never disagree.

Report dict (what ``yoloport.analysis.port`` produces)::

    {"model": {...}, "data": {...}, "img_hw": [h, w], "max_drop": 1.0, "simulated": [...notes],
     "targets": [ {"name": "onnxruntime-int8", "backend": "onnxruntime", "precision": "int8",
                   "artifact": "...", "size_mb": 1.9, "build_s": 3.2,
                   "lint": {"errors": 0, "warnings": 1, "findings": [...]},
                   "val": {"precision":..., "recall":..., "mAP50":..., "mAP50_95":...},
                   "drop": 0.4 (mAP50-95 points vs fp32), "passed": true,
                   "compare": {"outputs": [{"name", "cosine", "sqnr_db"}], "images": [...]},
                   "profile": {"rows": [{"layer", "count", "time_us", "ratio"}], "total_us": ...},
                   "bench": [{"batch": 1, "latency_ms_median":, "latency_ms_p90":, "throughput_ips":}],
                   "error": null | "message"} ... ],
     "stages": [{"name", "seconds"}], "failed": ["rknn-int8: drop 2.3 > 1.0"] }
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from ..io.paths import write_text_atomic


def _fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def summary_rows(report: dict) -> list[dict]:
    """One row per target (fp32 reference first): accuracy, drop, size, speed."""
    rows = []
    ref_lat = _latency(report.get("reference") or {}, 1)
    interleaved = (report.get("speed") or {}).get("speedups") or {}
    for t in [report.get("reference")] + list(report.get("targets", [])):
        if not t:
            continue
        v = t.get("val") or {}
        lat = _latency(t, 1)
        rows.append(
            {
                "target": t["name"],
                "backend": t.get("backend"),
                "precision": t.get("precision"),
                "mAP50": v.get("mAP50"),
                "mAP50_95": v.get("mAP50_95"),
                "drop": t.get("drop"),
                "size_mb": t.get("size_mb"),
                "latency_b1_ms": lat,
                "speedup": interleaved.get(t["name"]) or ((ref_lat / lat) if ref_lat and lat else None),
                "throughput_ips": _throughput(t),
                "status": "error" if t.get("error") else ("FAIL" if t.get("passed") is False else "ok"),
            }
        )
    return rows


def _latency(t: dict, batch: int):
    for b in t.get("bench") or []:
        if b.get("batch") == batch:
            return b.get("latency_ms_median")
    return None


def _throughput(t: dict):
    best = None
    for b in t.get("bench") or []:
        v = b.get("throughput_ips")
        if v is not None and (best is None or b.get("batch", 0) > best[0]):
            best = (b.get("batch", 0), v)
    return best[1] if best else None


SUMMARY_COLUMNS = [
    ("target", "target"),
    ("precision", "precision"),
    ("mAP50", "mAP@0.5"),
    ("mAP50_95", "mAP@0.5:0.95"),
    ("drop", "drop (pts)"),
    ("size_mb", "size (MB)"),
    ("latency_b1_ms", "latency b1 (ms)"),
    ("speedup", "speed-up vs fp32"),
    ("throughput_ips", "throughput (img/s)"),
    ("status", "status"),
]


def markdown_table(rows: list[dict], columns) -> str:
    head = "| " + " | ".join(c[1] for c in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def profile_rows(t: dict) -> list[dict]:
    p = t.get("profile") or {}
    return [dict(r, ratio=r.get("ratio")) for r in p.get("rows", [])]


def to_markdown(report: dict) -> str:
    m = report.get("model", {})
    lines = [
        f"# yoloport port report: {m.get('name', '?')}",
        "",
        f"- model: {m.get('name')} ({m.get('parameters', 0):,} parameters, {m.get('source', '')})",
        f"- data: {report.get('data', {}).get('yaml')} ({report.get('data', {}).get('n_images', '?')} images)",
        f"- input: {report['img_hw'][1]}x{report['img_hw'][0]} (W x H), max mAP@0.5:0.95 drop {report.get('max_drop')} points",
        "",
        "## Accuracy and speed",
        "",
        markdown_table(summary_rows(report), SUMMARY_COLUMNS),
        "",
    ]
    speed = report.get("speed")
    if speed:
        lb, la = speed.get("load_before") or {}, speed.get("load_after") or {}
        share = speed.get("other_cpu_share")
        lines += [f"Speed: batch 1 timed {speed.get('order')}, {speed.get('repeat')} rounds after {speed.get('warmup')}, "
                  f"threads {speed.get('threads') or 'default'}; speed-up = {speed.get('speedup_basis') or 'ratio of minimum times'} "
                  f"(load average {lb.get('load1', '?')} -> {la.get('load1', '?')}"
                  + (f", other processes {share:.0%} of the CPUs" if share is not None else "") + ")"
                  + (" - the machine was BUSY" if speed.get("busy") else ""), ""]
    if report.get("failed"):
        lines += ["**Failed:** " + "; ".join(report["failed"]), ""]
    for note in report.get("notes", []):
        lines.append(f"> {note}")
    for t in report.get("targets", []):
        rows = profile_rows(t)
        if rows:
            lines += ["", f"## Time per layer type: {t['name']}", "",
                      markdown_table(rows + [{"layer": "total", "time_us": t["profile"].get("total_us"), "ratio": 1.0}],
                                     [("layer", "layer type"), ("count", "count"), ("time_us", "time (us)"), ("ratio", "ratio")])]
        lint = t.get("lint") or {}
        if lint.get("findings"):
            lines += ["", f"## Lint ({t.get('lint_target', t['backend'])}): {t['name']}", ""]
            for f in lint["findings"]:
                lines.append(f"- **{f.get('severity')}** `{f.get('rule_id')}` {f.get('message')} ({f.get('hint')})")
        cmp_ = t.get("compare") or {}
        if cmp_.get("outputs"):
            lines += ["", f"## Float vs {t['name']} outputs", "",
                      markdown_table(cmp_["outputs"], [("name", "output"), ("cosine", "cosine"), ("sqnr_db", "SQNR (dB)")])]
        if t.get("error"):
            lines += ["", f"## {t['name']}: error", "", f"`{t['error']}`"]
    if report.get("stages"):
        lines += ["", "## Stages", "", markdown_table(report["stages"], [("name", "stage"), ("seconds", "seconds")])]
    return "\n".join(lines) + "\n"


def _plots(report: dict) -> dict[str, str]:
    """PNG plots as base64 strings: mAP per target, speed-up, per-layer-type time, size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary_rows(report)
    out = {}

    def save(fig, key):
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        out[key] = base64.b64encode(buf.getvalue()).decode()

    names = [r["target"] for r in rows]
    if names:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.bar(names, [r["mAP50_95"] or 0 for r in rows], color="#3b7dd8", label="mAP@0.5:0.95")
        ax.bar(names, [r["mAP50"] or 0 for r in rows], color="#3b7dd8", alpha=0.25, label="mAP@0.5")
        ax.set_ylabel("mAP")
        ax.set_title("Accuracy per target")
        ax.legend(fontsize=8)
        ax.tick_params(axis="x", rotation=20, labelsize=8)
        save(fig, "map")
        for key, field_, color, ylabel, title, baseline in (
            ("speedup", "speedup", "#2a9d5c", "x fp32 (batch 1)", "Speed-up over the fp32 reference", 1.0),
            ("size", "size_mb", "#c77d2e", "MB", "Artifact size", None),
        ):
            bars = [(r["target"], r[field_]) for r in rows if r[field_]]
            if not bars:
                continue
            fig, ax = plt.subplots(figsize=(7, 3.2))
            ax.bar([b[0] for b in bars], [b[1] for b in bars], color=color)
            if baseline is not None:
                ax.axhline(baseline, color="grey", lw=1, ls="--")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            ax.tick_params(axis="x", rotation=20, labelsize=8)
            save(fig, key)
    prof = [(t["name"], profile_rows(t)) for t in report.get("targets", []) if profile_rows(t)]
    if prof:
        types = []
        for _, rs in prof:
            for r in rs[:8]:
                if r["layer"] not in types:
                    types.append(r["layer"])
        fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * len(prof) + 1.5))
        left = [0.0] * len(prof)
        cmap = plt.get_cmap("tab20")
        for k, ty in enumerate(types + ["other"]):
            vals = []
            for _, rs in prof:
                if ty == "other":
                    vals.append(sum(r["ratio"] for r in rs if r["layer"] not in types))
                else:
                    vals.append(sum(r["ratio"] for r in rs if r["layer"] == ty))
            ax.barh([p[0] for p in prof], vals, left=left, color=cmap(k % 20), label=ty)
            left = [a + b for a, b in zip(left, vals)]
        ax.set_xlabel("share of model time")
        ax.set_title("Time per layer type")
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.35))
        save(fig, "profile")
    return out


def to_html(report: dict) -> str:
    plots = _plots(report)
    md = to_markdown(report)
    body = []
    in_table = False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set(line.replace("|", "").strip()) <= {"-"}:
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{c}</th>" for c in cells) + "</tr>")
            else:
                cls = ' class="fail"' if "FAIL" in cells or "error" in cells else ""
                body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            body.append(f"<p class='li'>{html.escape(line[2:])}</p>")
        elif line.startswith("> "):
            body.append(f"<p class='note'>{html.escape(line[2:])}</p>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
        if line.startswith("## Accuracy and speed"):
            pass
    if in_table:
        body.append("</table>")
    figs = "".join(
        f"<figure><img alt='{k}' src='data:image/png;base64,{v}'/></figure>" for k, v in plots.items()
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}"
        "table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:right}"
        "th{background:#f0f3f7}td:first-child,th:first-child{text-align:left}tr.fail td{background:#fde8e8}"
        ".note{color:#8a5a00;background:#fff7e0;padding:6px 10px;border-left:3px solid #e0a800}"
        ".plots{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}img{max-width:540px;border:1px solid #eee}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>yoloport port report</title><style>{style}</style></head>"
        f"<body>{''.join(body[:1])}<div class='plots'>{figs}</div>{''.join(body[1:])}</body></html>"
    )


def write_report(run_dir, report: dict) -> dict[str, Path]:
    """Write report.json, report.md and report.html into ``run_dir``; returns their paths."""
    run_dir = Path(run_dir)
    paths = {
        "json": write_text_atomic(run_dir / "report.json", json.dumps(report, indent=1, default=str)),
        "md": write_text_atomic(run_dir / "report.md", to_markdown(report)),
        "html": write_text_atomic(run_dir / "report.html", to_html(report)),
    }
    return paths
