"""The cleaning report: report.json (everything), report.html (a readable summary with
examples) and report.png (documents removed per rule, step by step)."""

from __future__ import annotations

import html
from pathlib import Path

from lmforge.fileio import atomic_path, write_json, write_text


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


def render_html(report: dict) -> str:
    e = html.escape
    rows, details = [], []
    for st in report["steps"]:
        removed = ", ".join(f"{e(r)}: {n:,}" for r, n in st["removed"].items()) or "-"
        counts = ", ".join(f"{e(k)}: {n:,}" for k, n in st["counts"].items()) or "-"
        rows.append(
            f"<tr><td>{e(st['step'])}</td><td>{st['docs_in']:,}</td><td>{st['docs_out']:,}</td>"
            f"<td>{_mb(st['bytes_in'])}</td><td>{_mb(st['bytes_out'])}</td><td>{removed}</td>"
            f"<td>{counts}</td></tr>"
        )
        for rule, shown in st["examples"].items():
            items = "".join(
                f"<li><code>{e(x['source'])}</code><pre>{e(x['text'])}</pre></li>" for x in shown
            )
            details.append(f"<h3>{e(st['step'])}: {e(rule)}</h3><ul>{items}</ul>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lmforge data clean: {e(report["recipe"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
pre{{white-space:pre-wrap;background:#f6f6f6;padding:4px;max-width:60em}}</style></head><body>
<h1>Cleaning report: recipe {e(report["recipe"])}</h1>
<p>{report["docs_in"]:,} documents ({_mb(report["bytes_in"])}) in,
{report["docs_out"]:,} documents ({_mb(report["bytes_out"])}) out in {report["shards"]} shards;
{report["seconds"]:.1f} s, {report["docs_per_s"]:,.0f} docs/s, {report["mb_per_s"]:.2f} MB/s.</p>
<img src="report.png" alt="documents removed per rule">
<table><tr><th>step</th><th>docs in</th><th>docs out</th><th>bytes in</th><th>bytes out</th>
<th>removed per rule</th><th>counts</th></tr>
{"".join(rows)}</table>
<h2>Examples of removed documents</h2>{"".join(details) or "<p>none</p>"}
</body></html>
"""


def render_png(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = [], []
    for st in report["steps"]:
        for rule, n in st["removed"].items():
            labels.append(f"{st['step']}: {rule}")
            values.append(n)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * max(1, len(labels))))
    if labels:
        ax.barh(range(len(labels)), values, color="#c0504d")
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "no document removed", ha="center", va="center")
        ax.set_yticks([])
    ax.set_xlabel("documents removed")
    ax.set_title(
        f"recipe {report['recipe']}: {report['docs_in']:,} docs in, {report['docs_out']:,} out"
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_report(report: dict, folder: Path) -> None:
    write_json(folder / "report.json", report)
    write_text(folder / "report.html", render_html(report))
    render_png(report, folder / "report.png")
