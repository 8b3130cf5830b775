"""Pictures of what lmforge.interpret computes: attention heatmaps (one head, or a grid of
all), a self-contained HTML page to pick stack, layer and head, the logit lens as a table of
top tokens, its loss by layer, token-level attribution (PNG and HTML) and the activation
patching heatmap. Each function takes tensors and token labels, writes its file atomically
and returns its path. matplotlib draws through its object API (no pyplot state)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lmforge.fileio import atomic_path, write_text
from lmforge.tokenizers import Tokenizer

DPI = 100


def token_labels(tokenizer: Tokenizer, ids: Sequence[int]) -> list[str]:
    """Each token as text to print under a picture: a leading space as '·', newlines as
    '\\n', other control characters escaped, a piece of a UTF-8 character (a byte-level
    token) or nothing as <id>, so every token stays visible."""
    out = []
    for i in ids:
        text = tokenizer.decode([int(i)])
        if text.startswith(" "):
            text = "·" + text[1:]
        text = text.replace("\n", "\\n").replace("\t", "\\t")
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
        out.append(text if text and "\ufffd" not in text else f"<{int(i)}>")
    return out


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(min(width, 40.0), min(height, 40.0)), dpi=DPI)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _array(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _ticks(ax, axis: str, labels: Sequence[str], limit: int = 64) -> None:
    """Token labels on an axis, when there are few enough to read."""
    if len(labels) > limit:
        return
    size = max(5, min(9, 360 // max(1, len(labels))))
    if axis == "x":
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=size)
    else:
        ax.set_yticks(range(len(labels)), labels, fontsize=size)


def attention_heatmap(
    weights,
    queries: Sequence[str],
    keys: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """One head's weights (t_q, t_k): rows are the attending tokens, columns the attended."""
    w = _array(weights)
    side = 2.5 + 0.28 * max(len(queries), len(keys))
    fig = _figure(side + 1, side)
    ax = fig.add_subplot()
    image = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=max(float(w.max()), 1e-9))
    _ticks(ax, "x", keys)
    _ticks(ax, "y", queries)
    ax.set_xlabel("attended token (key)")
    ax.set_ylabel("attending token (query)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def attention_grid(
    weights,
    queries: Sequence[str],
    keys: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """Every head of every layer, weights (layers, heads, t_q, t_k), one small map each."""
    w = _array(weights)
    layers, heads = w.shape[:2]
    cell = 1.6 if max(len(queries), len(keys)) <= 24 else 2.4
    fig = _figure(0.6 + cell * heads, 0.8 + cell * layers)
    axes = fig.subplots(layers, heads, squeeze=False)
    for i in range(layers):
        for h in range(heads):
            ax = axes[i][h]
            ax.imshow(w[i, h], cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"head {h}", fontsize=8)
            if h == 0:
                ax.set_ylabel(f"layer {i}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def attention_html(
    groups: dict[str, torch.Tensor],
    labels: dict[str, tuple[Sequence[str], Sequence[str]]],
    path: str | Path,
    title: str = "attention",
) -> Path:
    """One self-contained page (no network): pick the stack ("encoder", "decoder", "cross"),
    layer and head (or the mean of heads) and see the weights over the tokens; hover a cell
    for its value. groups[name]: (layers, heads, t_q, t_k) of one sequence; labels[name]:
    (query tokens, key tokens)."""
    data = {
        name: {
            "weights": np.round(_array(w), 4).tolist(),
            "queries": list(labels[name][0]),
            "keys": list(labels[name][1]),
        }
        for name, w in groups.items()
    }
    page = _ATTENTION_PAGE.replace("__TITLE__", html.escape(title)).replace(
        "__DATA__", json.dumps(data).replace("</", "<\\/")
    )
    write_text(path, page)
    return Path(path)


_ATTENTION_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font-family: sans-serif; margin: 1em; }
table { border-collapse: collapse; font-size: 12px; }
td { width: 22px; height: 22px; border: 1px solid #eee; }
th { font-weight: normal; padding: 2px 4px; white-space: pre; }
th.key { writing-mode: vertical-rl; transform: rotate(180deg); vertical-align: bottom; }
th.query { text-align: right; }
#controls select { margin-right: 1em; }
</style></head><body>
<h2>__TITLE__</h2>
<div id="controls">
stack <select id="stack"></select>
layer <select id="layer"></select>
head <select id="head"></select>
<span id="shown"></span>
</div>
<p>Rows attend (queries), columns are attended (keys); darker is more weight.</p>
<table id="map"></table>
<script>
const DATA = __DATA__;
const $ = (id) => document.getElementById(id);
function options(select, values, labels) {
  const keep = select.value;
  select.innerHTML = "";
  values.forEach((v, i) => {
    const o = document.createElement("option");
    o.value = v; o.textContent = labels ? labels[i] : v; select.appendChild(o);
  });
  if (values.map(String).includes(keep)) select.value = keep;
}
function pick() {
  const g = DATA[$("stack").value];
  const layers = g.weights.length, heads = g.weights[0].length;
  options($("layer"), [...Array(layers).keys()]);
  options($("head"), ["mean", ...Array(heads).keys()], ["mean of heads",
    ...[...Array(heads).keys()].map(String)]);
  draw();
}
function draw() {
  const g = DATA[$("stack").value];
  const per = g.weights[+$("layer").value];
  const h = $("head").value;
  const w = h === "mean"
    ? per[0].map((row, q) => row.map((_, k) => per.reduce((s, m) => s + m[q][k], 0) / per.length))
    : per[+h];
  const t = $("map");
  t.innerHTML = "";
  const top = t.insertRow();
  top.appendChild(document.createElement("th"));
  g.keys.forEach((k) => { const c = document.createElement("th"); c.className = "key";
    c.textContent = k; top.appendChild(c); });
  w.forEach((row, q) => {
    const r = t.insertRow();
    const c = document.createElement("th"); c.className = "query";
    c.textContent = g.queries[q]; r.appendChild(c);
    row.forEach((v, k) => { const d = r.insertCell();
      d.style.background = `rgba(40, 70, 200, ${v})`;
      d.title = `${g.queries[q]} -> ${g.keys[k]}: ${v.toFixed(4)}`;
      d.dataset.weight = v; });
  });
  $("shown").textContent = `${$("stack").value} layer ${$("layer").value} head ${h}`;
}
options($("stack"), Object.keys(DATA));
$("stack").onchange = pick; $("layer").onchange = draw; $("head").onchange = draw;
pick();
</script></body></html>
"""


def lens_table(
    probs,
    top: Sequence[Sequence[str]],
    inputs: Sequence[str],
    path: str | Path,
    title: str = "logit lens: likeliest next token after each layer",
) -> Path:
    """The logit lens as a table: a row per layer (0 = embeddings, bottom), a column per
    position, each cell the top next token colored by its probability. probs (layers, t)."""
    p = _array(probs)
    layers, t = p.shape
    fig = _figure(2.0 + 0.75 * t, 1.2 + 0.42 * layers)
    ax = fig.add_subplot()
    image = ax.imshow(p, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", origin="lower")
    for i in range(layers):
        for j in range(t):
            ax.text(
                j,
                i,
                top[i][j][:8],
                ha="center",
                va="center",
                fontsize=7,
                color="white" if p[i, j] > 0.6 else "black",
            )
    _ticks(ax, "x", inputs, limit=200)
    ax.set_yticks(range(layers), ["embed"] + [f"after {i}" for i in range(layers - 1)])
    ax.set_xlabel("input token (the table shows the prediction for the token after it)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02, label="probability")
    return _save(fig, path)


def loss_by_layer(
    losses: dict[str, Sequence[float]] | Sequence[float],
    path: str | Path,
    title: str = "logit lens: loss by layer",
) -> Path:
    """Per-layer lens loss (nats/token): one line, or one per named text."""
    series = losses if isinstance(losses, dict) else {"": losses}
    fig = _figure(6, 3.8)
    ax = fig.add_subplot()
    for name, values in series.items():
        v = _array(values)
        ax.plot(range(len(v)), v, "o-", label=name or None)
    n = max(len(_array(v)) for v in series.values())
    ax.set_xticks(range(n), ["embed"] + [str(i) for i in range(n - 1)])
    ax.set_xlabel("residual stream after layer")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if any(series):
        ax.legend()
    return _save(fig, path)


def attribution_png(
    scores,
    tokens: Sequence[str],
    path: str | Path,
    title: str = "",
    per_row: int = 16,
) -> Path:
    """Token-level scores as colored cells in reading order (red: for, blue: against),
    `per_row` tokens a row."""
    s = _array(scores).astype(float)
    per_row = max(1, min(per_row, len(s)))  # a short text is one row of its own length
    rows = max(1, math.ceil(len(s) / per_row))
    grid = np.full((rows, per_row), np.nan)
    grid.flat[: len(s)] = s
    bound = max(float(np.abs(s).max()), 1e-12)
    fig = _figure(1.0 + 0.85 * per_row, 0.9 + 0.5 * rows)
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    for k, tok in enumerate(tokens):
        dark = abs(s[k]) > 0.6 * bound
        ax.text(
            k % per_row,
            k // per_row,
            tok[:9],
            ha="center",
            va="center",
            fontsize=7,
            color="white" if dark else "black",
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02, label="attribution")
    return _save(fig, path)


def attribution_html(scores, tokens: Sequence[str], path: str | Path, title: str = "") -> Path:
    """The same scores as highlighted text; hover a token for its score."""
    s = [float(v) for v in _array(scores)]
    bound = max(max((abs(v) for v in s), default=0.0), 1e-12)
    spans = []
    for tok, v in zip(tokens, s, strict=True):
        a = abs(v) / bound
        color = f"rgba(220,40,40,{a:.3f})" if v >= 0 else f"rgba(40,80,220,{a:.3f})"
        text = html.escape(tok.replace("·", " ").replace("\\n", "\u21b5"))
        spans.append(f'<span title="{v:+.5f}" style="background:{color}">{text}</span>')
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:1em}}"
        "p{white-space:pre-wrap;line-height:1.8;font-size:16px}span{padding:1px 0}</style>"
        f"</head><body><h3>{html.escape(title)}</h3><p>{''.join(spans)}</p>"
        "<small>red: pushes the prediction up, blue: down</small></body></html>\n"
    )
    write_text(path, page)
    return Path(path)


def patching_heatmap(
    effects,
    tokens: Sequence[str],
    path: str | Path,
    title: str = "activation patching: share of the clean-corrupt gap restored",
    label: str = "restored",
) -> Path:
    """Effects (layers, t): which layer and position carry what the corruption destroyed."""
    e = _array(effects)
    layers, t = e.shape
    fig = _figure(2.5 + 0.4 * t, 1.5 + 0.45 * layers)
    ax = fig.add_subplot()
    bound = max(float(np.nanmax(np.abs(e))), 1e-12)
    image = ax.imshow(e, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto", origin="lower")
    _ticks(ax, "x", tokens)
    ax.set_yticks(range(layers), [f"layer {i}" for i in range(layers)])
    ax.set_xlabel("patched position")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02, label=label)
    return _save(fig, path)


def exposure_png(
    alternatives,
    secrets: dict[str, float],
    path: str | Path,
    title: str = "canary exposure: the secrets among sampled alternatives",
) -> Path:
    """A histogram of the alternatives' log-perplexities -log p(s | prefix) (nats) with each
    secret's marked; `secrets` maps a label (the secret and its exposure) to its value. A
    memorised secret sits far left of the pile, an unseen one inside it."""
    a = _array(alternatives).astype(float)
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    ax.hist(a, bins=min(60, max(10, len(a) // 20)), color="#9aa7b8", label="alternatives")
    colors = ["#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    for k, (label, value) in enumerate(secrets.items()):
        ax.axvline(value, color=colors[k % len(colors)], linewidth=2, label=label)
    ax.set_xlabel("-log p(secret | prefix) (nats); lower is likelier")
    ax.set_ylabel("alternatives")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)
