"""An interactive attention viewer that works offline.

``attention_view(attentions, src_tokens, tgt_tokens)`` draws the queries (left) and the keys
(right) of one example as two columns of tokens joined by lines whose opacity is the attention
weight. Choose a layer and a head (or all heads overlaid, one colour per head); hover a query
to see where it attends (the keys are shaded by their weight), hover a key to see who attends
to it; click a token to keep it selected.

Everything is in the returned HTML: the weights as JSON, the drawing as SVG, the behaviour as a
few lines of JavaScript. Nothing is loaded from the network (no CDN, no web fonts), so it works
in a classroom behind a firewall, in JupyterLab (where an output's JavaScript runs once you have
executed the cell yourself, i.e. the notebook is trusted) and on the course's worked-solution
site, whose pages keep the output HTML as it is.

Student side: a plotting helper, nothing here solves a graded exercise.
"""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Sequence

import numpy as np

__all__ = ["AttentionView", "attention_view", "HEAD_COLORS"]

#: One colour per head (matplotlib's tab10), reused cyclically beyond ten heads.
HEAD_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf")

ROW = 22          # pixels per token row
TOP = 34          # room for the column titles
TEXT_W = 150      # width of a token column
GAP = 170         # room for the lines between the columns


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _layers(attentions) -> np.ndarray:
    """Any accepted layout as one (L, H, Tq, Tk) array."""
    if isinstance(attentions, (list, tuple)):
        per_layer = []
        for i, a in enumerate(attentions):
            a = _array(a)
            if a.ndim == 4:
                if a.shape[0] != 1:
                    raise ValueError(f"attentions[{i}] has shape {a.shape}: pass one example, "
                                     "(H, Tq, Tk) or (1, H, Tq, Tk), e.g. weights[0]")
                a = a[0]
            if a.ndim == 2:
                a = a[None]
            if a.ndim != 3:
                raise ValueError(f"attentions[{i}] should be (H, Tq, Tk), got shape {a.shape}")
            per_layer.append(a)
        if not per_layer:
            raise ValueError("attentions is empty")
        shapes = {a.shape for a in per_layer}
        if len(shapes) != 1:
            raise ValueError(f"every layer needs the same (H, Tq, Tk) shape, got {sorted(shapes)}")
        return np.stack(per_layer)
    a = _array(attentions)
    if a.ndim == 2:
        return a[None, None]
    if a.ndim == 3:
        return a[None]
    if a.ndim == 4:
        return a
    raise ValueError(f"attentions should be (Tq, Tk), (H, Tq, Tk), (L, H, Tq, Tk) or a list of "
                     f"(H, Tq, Tk), got shape {a.shape}")


def _script_json(value) -> str:
    """JSON that is safe inside a <script> element."""
    return (json.dumps(value, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


_SCRIPT = r"""
(function () {
  var root = document.getElementById(__ID__);
  if (!root || root.getAttribute("data-ready")) { return; }
  root.setAttribute("data-ready", "1");
  var D = __DATA__;
  var NS = "http://www.w3.org/2000/svg";
  var svg = root.querySelector("svg.attn-view-svg");
  var layerSel = root.querySelector("select.attn-view-layer");
  var headSel = root.querySelector("select.attn-view-head");
  var readout = root.querySelector(".attn-view-readout");
  var fallback = root.querySelector(".attn-view-fallback");
  if (fallback) { fallback.style.display = "none"; }
  var ROW = D.row, TOP = D.top, TW = D.textWidth, GAP = D.gap;
  var xq = TW, xk = TW + GAP;
  var lines = document.createElementNS(NS, "g");
  svg.appendChild(lines);

  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function title(text, x, anchor) {
    var t = el("text", {x: x, y: 14, "text-anchor": anchor, "font-size": 12,
                        "font-weight": "bold", fill: "#333"}, svg);
    t.textContent = text;
  }
  title(D.queryTitle, xq - 4, "end");
  title(D.keyTitle, xk + 4, "start");

  function column(tokens, side) {
    return tokens.map(function (tok, i) {
      var y = TOP + i * ROW;
      var g = el("g", {"class": "attn-view-token attn-view-" + side, "data-index": i,
                       "data-weight": "", cursor: "pointer"}, svg);
      var x = side === "q" ? 2 : xk + 2;
      var rect = el("rect", {x: x, y: y - ROW / 2 + 1, width: TW - 6, height: ROW - 2, rx: 3,
                             fill: "#f58518", "fill-opacity": 0, stroke: "none"}, g);
      var t = el("text", {x: side === "q" ? xq - 8 : xk + 8, y: y + 4,
                          "text-anchor": side === "q" ? "end" : "start",
                          "font-family": "monospace", "font-size": 13, fill: "#111"}, g);
      t.textContent = tok;
      g.addEventListener("mouseenter", function () { hover({side: side, index: i}); });
      g.addEventListener("click", function (ev) {
        ev.stopPropagation();
        pinned = (pinned && pinned.side === side && pinned.index === i) ? null
                 : {side: side, index: i};
        render(pinned);
      });
      return {g: g, rect: rect, text: t};
    });
  }
  var Q = column(D.queries, "q");
  var K = column(D.keys, "k");
  var pinned = null;
  svg.addEventListener("mouseleave", function () { render(pinned); });
  svg.addEventListener("click", function () { pinned = null; render(null); });
  layerSel.addEventListener("change", function () { render(pinned); });
  headSel.addEventListener("change", function () { render(pinned); });

  function hover(focus) { if (!pinned) { render(focus); } }
  function heads() {
    if (headSel.value === "all") {
      var all = [];
      for (var h = 0; h < D.heads; h++) { all.push(h); }
      return all;
    }
    return [parseInt(headSel.value, 10)];
  }
  function meanWeight(l, hs, i, j) {
    var s = 0;
    for (var n = 0; n < hs.length; n++) { s += D.w[l][hs[n]][i][j]; }
    return s / hs.length;
  }
  function fmt(x) { return x.toFixed(3); }

  function render(focus) {
    var l = parseInt(layerSel.value, 10), hs = heads();
    while (lines.firstChild) { lines.removeChild(lines.firstChild); }
    hs.forEach(function (h) {
      for (var i = 0; i < D.queries.length; i++) {
        if (focus && focus.side === "q" && focus.index !== i) { continue; }
        for (var j = 0; j < D.keys.length; j++) {
          if (focus && focus.side === "k" && focus.index !== j) { continue; }
          var w = D.w[l][h][i][j];
          if (w < 0.005) { continue; }
          el("line", {x1: xq, y1: TOP + i * ROW, x2: xk, y2: TOP + j * ROW,
                      stroke: D.colors[h % D.colors.length],
                      "stroke-opacity": focus ? Math.min(1, 0.15 + w) : 0.6 * w,
                      "stroke-width": focus ? 1 + 4 * w : 1.5}, lines);
        }
      }
    });
    var shade = hs.length === 1 ? D.colors[hs[0] % D.colors.length] : "#f58518";
    function paint(items, weightOf) {
      items.forEach(function (item, n) {
        var w = weightOf(n);
        item.rect.setAttribute("fill", shade);
        item.rect.setAttribute("fill-opacity", w === null ? 0 : Math.min(1, w));
        item.g.setAttribute("data-weight", w === null ? "" : fmt(w));
      });
    }
    var none = function () { return null; };
    if (focus && focus.side === "q") {
      paint(K, function (j) { return meanWeight(l, hs, focus.index, j); });
      paint(Q, none);
      Q[focus.index].rect.setAttribute("fill", "#999");
      Q[focus.index].rect.setAttribute("fill-opacity", 0.35);
    } else if (focus && focus.side === "k") {
      paint(Q, function (i) { return meanWeight(l, hs, i, focus.index); });
      paint(K, none);
      K[focus.index].rect.setAttribute("fill", "#999");
      K[focus.index].rect.setAttribute("fill-opacity", 0.35);
    } else {
      paint(Q, none);
      paint(K, none);
    }
    var which = (hs.length === 1 ? "head " + (hs[0] + 1) : "mean of " + hs.length + " heads")
                + ", " + D.layers[l];
    if (focus && focus.side === "q") {
      var order = D.keys.map(function (_, j) { return j; });
      order.sort(function (a, b) { return meanWeight(l, hs, focus.index, b)
                                          - meanWeight(l, hs, focus.index, a); });
      readout.textContent = "\u201c" + D.queries[focus.index] + "\u201d (query "
        + (focus.index + 1) + ") attends to: " + order.slice(0, 3).map(function (j) {
          return "\u201c" + D.keys[j] + "\u201d " + fmt(meanWeight(l, hs, focus.index, j));
        }).join(", ") + "  (" + which + ")";
    } else if (focus && focus.side === "k") {
      var total = 0;
      for (var i = 0; i < D.queries.length; i++) { total += meanWeight(l, hs, i, focus.index); }
      readout.textContent = "\u201c" + D.keys[focus.index] + "\u201d (key " + (focus.index + 1)
        + ") receives " + fmt(total) + " in total from the " + D.queries.length
        + " queries  (" + which + ")";
    } else {
      readout.textContent = "Hover over a token to see where it attends (left) or who attends "
        + "to it (right); click to keep it selected. Showing " + which + ".";
    }
  }
  render(null);
})();
"""


class AttentionView:
    """An interactive attention view: displays itself in Jupyter (``_repr_html_``); ``html``
    is the fragment, ``page()`` a standalone HTML document, ``save(path)`` writes it."""

    def __init__(self, weights: np.ndarray, queries: list[str], keys: list[str], *,
                 layer_names: list[str], title: str, query_title: str, key_title: str):
        self.weights = weights
        self.queries, self.keys = queries, keys
        self.layer_names = layer_names
        self.title = title
        self.query_title, self.key_title = query_title, key_title
        self.id = f"attn-view-{uuid.uuid4().hex[:12]}"

    @property
    def html(self) -> str:
        n_layers, n_heads = self.weights.shape[:2]
        rows = max(len(self.queries), len(self.keys))
        width = 2 * TEXT_W + GAP
        height = TOP + rows * ROW
        data = {
            "layers": self.layer_names, "heads": n_heads,
            "queries": self.queries, "keys": self.keys,
            "w": np.round(self.weights, 4).tolist(),
            "colors": list(HEAD_COLORS), "row": ROW, "top": TOP, "textWidth": TEXT_W,
            "gap": GAP, "queryTitle": self.query_title, "keyTitle": self.key_title,
        }
        layer_options = "".join(f'<option value="{i}">{html.escape(name)}</option>'
                                for i, name in enumerate(self.layer_names))
        head_options = ('<option value="all">all heads</option>' if n_heads > 1 else "") + "".join(
            f'<option value="{h}" style="color:{HEAD_COLORS[h % len(HEAD_COLORS)]}">head {h + 1}'
            "</option>" for h in range(n_heads))
        legend = "".join(
            f'<span style="display:inline-block;width:10px;height:10px;margin:0 2px 0 8px;'
            f'background:{HEAD_COLORS[h % len(HEAD_COLORS)]}"></span>{h + 1}'
            for h in range(n_heads)) if n_heads > 1 else ""
        title = (f'<div class="attn-view-title" style="font-weight:bold;margin-bottom:4px">'
                 f"{html.escape(self.title)}</div>" if self.title else "")
        script = _SCRIPT.replace("__ID__", json.dumps(self.id)).replace("__DATA__",
                                                                       _script_json(data))
        return (
            f'<div class="attn-view" id="{self.id}" style="font-family:sans-serif;font-size:13px;'
            'color:#111;background:#fff;padding:6px;border:1px solid #ddd;border-radius:4px;'
            'display:inline-block;max-width:100%">'
            f"{title}"
            '<div class="attn-view-controls" style="margin-bottom:4px">'
            f'<label>layer <select class="attn-view-layer">{layer_options}</select></label> '
            f'<label style="margin-left:8px">head <select class="attn-view-head">{head_options}'
            f'</select></label><span class="attn-view-legend" style="margin-left:8px">{legend}'
            "</span></div>"
            f'<svg class="attn-view-svg" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" style="display:block"></svg>'
            '<div class="attn-view-readout" style="min-height:1.4em;max-width:'
            f'{width + 40}px;color:#333"></div>'
            '<div class="attn-view-fallback" style="color:#a33">This interactive view needs '
            "JavaScript: run the cell (in JupyterLab, a notebook's outputs run their JavaScript "
            "once you have executed them yourself).</div>"
            f"</div><script>{script}</script>"
        )

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        L, H, Tq, Tk = self.weights.shape
        return (f"<attention view: {L} layer(s) x {H} head(s), {Tq} queries x {Tk} keys; "
                "display it in a notebook or save(path) it as HTML>")

    def page(self) -> str:
        """A standalone HTML document holding the view (open it in any browser, offline)."""
        return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title or 'attention')}</title></head>"
                f"<body>{self.html}</body></html>\n")

    def save(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.page())


def attention_view(
    attentions,
    src_tokens: Sequence[str],
    tgt_tokens: Sequence[str] | None = None,
    *,
    layer_names: Sequence[str] | None = None,
    title: str = "",
    query_title: str | None = None,
    key_title: str | None = None,
) -> AttentionView:
    """An interactive view of the attention of one example.

    ``attentions``: a list with one ``(H, Tq, Tk)`` weight array per layer (an array of shape
    ``(1, H, Tq, Tk)``, one example of a batch, is accepted too), or one array of shape
    ``(Tq, Tk)``, ``(H, Tq, Tk)`` or ``(L, H, Tq, Tk)``; tensors or NumPy arrays.
    ``src_tokens``: the ``Tk`` labels of the keys; ``tgt_tokens``: the ``Tq`` labels of the
    queries, or ``None`` for self-attention (the queries are the keys).
    """
    weights = _layers(attentions)
    keys = [str(t) for t in src_tokens]
    queries = keys if tgt_tokens is None else [str(t) for t in tgt_tokens]
    L, H, Tq, Tk = weights.shape
    if Tk != len(keys):
        raise ValueError(f"{len(keys)} key labels for {Tk} keys (the last axis of attentions)")
    if Tq != len(queries):
        raise ValueError(f"{len(queries)} query labels for {Tq} queries "
                         "(the second-to-last axis of attentions)")
    if not np.isfinite(weights).all():
        raise ValueError("attentions contains NaN or inf")
    names = [f"layer {i + 1}" for i in range(L)] if layer_names is None else list(layer_names)
    if len(names) != L:
        raise ValueError(f"{len(names)} layer names for {L} layers")
    self_attention = tgt_tokens is None
    return AttentionView(
        weights, queries, keys, layer_names=names, title=title,
        query_title=query_title or ("query" if self_attention else "query (target)"),
        key_title=key_title or ("key" if self_attention else "key (source)"))
