"""The port report: ``report.json`` (machine-readable), ``report.md`` and ``report.html`` (tables and
plots people can read). Written from one dict so the three never disagree.

Report dict (what ``yoloport.analysis.port`` produces)::

    {"model": {...}, "data": {...}, "img_hw": [h, w], "max_drop": 1.0, "simulated": [...notes],
     "targets": [ {"name": "onnxruntime-int8", "backend": "onnxruntime", "precision": "int8",
                   "artifact": "...", "size_mb": 1.9, "build_s": 3.2,
                   "lint": {"errors": 0, "warnings": 1, "findings": [...]},
                   "val": {"precision":..., "recall":..., "mAP50":..., "mAP50_95":...},
                   "drop": 0.4 (mAP50-95 points vs fp32), "passed": true,
                   "drop_ci": {"drop", "low", "high", "n_boot", "confidence", "within_noise", "n_images", "mAP50": {...}},
                   "gate": {"passed", "status", "max_drop"}, "gallery": [{"image", "score", "file" (run-relative)}],
                   "compare": {"outputs": [{"name", "cosine", "sqnr_db"}], "images": [...]},
                   "profile": {"rows": [{"layer", "count", "time_us", "ratio"}], "total_us": ...},
                   "bench": [{"batch": 1, "latency_ms_median":, "latency_ms_p90":, "throughput_ips":}],
                   "error": null | "message"} ... ],
     "protocol": {"calibration"|"selection"|"reporting": {"source", "n_images", "fingerprint", "note"},
                  "overlap": {"policy", "found": [...]}},
     "stages": [{"name", "seconds"}], "failed": ["rknn-int8: drop 2.3 > 1.0"] }
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from ..io.paths import write_text_atomic
from .bootstrap import gate_not_judged


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
                "interval": _interval_text(t.get("drop_ci")),
                "size_mb": t.get("size_mb"),
                "latency_b1_ms": lat,
                "speedup": interleaved.get(t["name"]) or ((ref_lat / lat) if ref_lat and lat else None),
                "throughput_ips": _throughput(t),
                "status": "error" if t.get("error") else ("FAIL" if t.get("passed") is False else "ok")
                + (" (within noise of the gate)" if "within noise" in (t.get("gate") or {}).get("status", "") else "")
                + (" (not judged)" if gate_not_judged(t.get("gate")) else ""),
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
    ("interval", "95% interval"),
    ("size_mb", "size (MB)"),
    ("latency_b1_ms", "latency b1 (ms)"),
    ("speedup", "speed-up vs fp32"),
    ("throughput_ips", "throughput (img/s)"),
    ("status", "status"),
]


def _interval_text(ci: dict | None) -> str | None:
    """``"[0.11, 0.80]"`` in points, ``" within noise"`` when it holds 0; None without an interval."""
    if not ci:
        return None
    return f"[{ci['low']:.2f}, {ci['high']:.2f}]" + (" within noise" if ci.get("within_noise") else "")


def protocol_lines(report: dict) -> list[str]:
    """One line per image set (calibration, selection, reporting): source, size, fingerprint; and the overlap found."""
    proto = report.get("protocol") or {}
    lines = []
    for role in ("calibration", "selection", "reporting"):
        r = proto.get(role)
        if not r:
            continue
        if r.get("source") is None:
            lines.append(f"{role} set: none ({r.get('note', 'not used')})")
        else:
            pool = f"; drawn from {r['pool_images']} disjoint candidates" if r.get("pool_images") else ""
            lines.append(f"{role} set: {r['source']}, {r['n_images']} images (fingerprint {r['fingerprint']}{pool})")
    for o in (proto.get("overlap") or {}).get("found") or []:
        lines.append(f"overlap: the {' and '.join(o['sets'])} sets shared {o['shared']} images "
                     f"({o['same_file']} same files, {o['same_content']} same content): {proto['overlap']['policy']}")
    return lines


def gate_lines(report: dict) -> list[str]:
    """One line per target: its drop with the paired-bootstrap interval and the --max-drop verdict."""
    lines = []
    for t in report.get("targets", []):
        ci, gate = t.get("drop_ci"), t.get("gate")
        if t.get("error") or gate is None:
            continue
        how = (f", {ci['confidence']:.0%} interval {_interval_text(ci)} (paired bootstrap over {ci['n_images']} "
               f"reporting images, {ci['n_boot']} resamples)") if ci else ""
        lines.append(f"gate {t['name']}: mAP@0.5:0.95 drop {t['drop']:.2f} points{how}; "
                     f"--max-drop {gate['max_drop']}: {gate['status']}")
    return lines


def class_loss_rows(report: dict, t: dict, top: int = 8) -> list[dict]:
    """The ``top`` classes whose AP@0.5:0.95 fell most from the fp32 reference to target ``t`` (reporting set)."""
    ref = {c["class"]: c for c in ((report.get("reference") or {}).get("val") or {}).get("per_class") or []}
    rows = []
    for c in (t.get("val") or {}).get("per_class") or []:
        r = ref.get(c["class"])
        if r is None:
            continue
        rows.append({"class": c["name"], "instances": c["instances"], "ap_fp32": r["mAP50_95"], "ap_int8": c["mAP50_95"],
                     "drop": round((r["mAP50_95"] - c["mAP50_95"]) * 100, 2)})
    rows.sort(key=lambda x: -x["drop"])
    return rows[:top]


CLASS_LOSS_COLUMNS = [("class", "class"), ("instances", "instances"), ("ap_fp32", "AP fp32"), ("ap_int8", "AP quantized"),
                      ("drop", "drop (pts)")]


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
    if report.get("protocol"):
        lines += ["## Image sets", "", *[f"- {x}" for x in protocol_lines(report)], ""]
    gates = gate_lines(report)
    if gates:
        lines += ["## Drop per target", "", *[f"- {x}" for x in gates], ""]
    if report.get("failed"):
        lines += ["**Failed:** " + "; ".join(report["failed"]), ""]
    for note in report.get("notes", []):
        lines.append(f"> {note}")
    for t in report.get("targets", []):
        lost = class_loss_rows(report, t)
        if lost:
            lines += ["", f"## Classes that lost most: {t['name']}", "",
                      "AP@0.5:0.95 per class on the reporting set; a class with few instances swings most", "",
                      markdown_table(lost, CLASS_LOSS_COLUMNS)]
        if t.get("gallery"):
            lines += ["", f"## Where fp32 and {t['name']} disagree most", "",
                      "fp32 left, quantized right; score = confident boxes (conf >= 0.25) without a same-class partner "
                      "at IoU >= 0.5 in the other model", ""]
            lines += [f"![{Path(g['image']).name}, score {g['score']}]({g['file']})" for g in t["gallery"]]
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

    drops = [(t["name"], t["drop"], t.get("drop_ci")) for t in report.get("targets", []) if t.get("drop") is not None]
    if drops:
        fig, ax = plt.subplots(figsize=(7, 1.6 + 0.45 * len(drops)))
        ys = list(range(len(drops)))[::-1]
        for y, (name, d, ci) in zip(ys, drops):
            col = "#2a9d5c" if d <= report.get("max_drop", float("inf")) else "#d33c3c"
            if ci:
                ax.errorbar(d, y, xerr=[[max(d - ci["low"], 0)], [max(ci["high"] - d, 0)]], fmt="o", color=col, capsize=4, lw=2)
            else:
                ax.plot(d, y, "o", color=col)
        if report.get("max_drop") is not None:
            ax.axvline(report["max_drop"], color="#d33c3c", ls="--", lw=1)
            ax.annotate(f"--max-drop {report['max_drop']}", (report["max_drop"], 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -10), textcoords="offset points", color="#d33c3c", fontsize=8)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(ys, [d[0] for d in drops], fontsize=8)
        ax.set_ylim(-0.7, len(drops) - 0.3)
        ax.set_xlabel("mAP@0.5:0.95 drop vs fp32 (points), 95% paired-bootstrap interval")
        ax.set_title("Drop per target (reporting set)")
        save(fig, "drop")
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
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            body.append(f"<figure class='pair'><img src='{html.escape(src.rstrip(')'))}' alt='{html.escape(alt)}'/>"
                        f"<figcaption>{html.escape(alt)}</figcaption></figure>")
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
        "figure.pair{margin:6px 0}figure.pair img{max-width:720px}figcaption{font-size:12px;color:#555}"
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
