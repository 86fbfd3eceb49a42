// A flow's DAG drawn as SVG: layered layout (left to right) from the manifest's steps and run_after.

import { h, s, statusClass } from "./dom.js";

const NODE_W = 168;
const NODE_H = 48;
const GAP_X = 120;
const GAP_Y = 22;
const PAD = 16;
const GAP_RANK = 64; // top to bottom: between ranks
const GAP_SIDE = 150; // top to bottom: between nodes of a rank (room for edge labels)

function predecessors(step) {
  return Object.keys((step && step.run_after) || {});
}

function edgeInfo(entry) {
  const statuses = Array.isArray(entry) ? entry : (entry && entry.statuses) || [];
  const when = Array.isArray(entry) ? null : entry && entry.when;
  return { statuses, when };
}

/** Layer of each step: the longest path from an entry step (cycles cannot occur in a valid flow, but are cut). */
function layers(steps) {
  const layer = new Map();
  const visiting = new Set();
  const visit = (key) => {
    if (layer.has(key)) return layer.get(key);
    if (visiting.has(key)) return 0;
    visiting.add(key);
    let depth = 0;
    for (const pred of predecessors(steps[key])) {
      if (pred in steps) depth = Math.max(depth, visit(pred) + 1);
    }
    visiting.delete(key);
    layer.set(key, depth);
    return depth;
  };
  for (const key of Object.keys(steps)) visit(key);
  return layer;
}

/**
 * Positions of the nodes: ranks by layer, each rank ordered by the mean position of the node's
 * predecessors. Left to right while that fits `maxWidth`, top to bottom otherwise (long flows).
 */
export function layout(steps, maxWidth = 1150) {
  const layer = layers(steps);
  const ranks = [];
  for (const key of Object.keys(steps)) {
    const l = layer.get(key);
    (ranks[l] ||= []).push(key);
  }
  const order = new Map();
  ranks.forEach((rank, l) => {
    if (l > 0) {
      const score = (key) => {
        const preds = predecessors(steps[key]).filter((p) => order.has(p));
        return preds.length ? preds.reduce((a, p) => a + order.get(p), 0) / preds.length : Infinity;
      };
      const scores = new Map(rank.map((k) => [k, score(k)]));
      rank.sort((a, b) => scores.get(a) - scores.get(b));
    }
    rank.forEach((key, i) => order.set(key, i));
  });
  const widest = Math.max(1, ...ranks.map((r) => r.length));
  const depth = Math.max(1, ranks.length);
  const lrWidth = PAD * 2 + depth * NODE_W + (depth - 1) * GAP_X;
  const vertical = lrWidth > maxWidth && depth > widest;
  const nodes = new Map();
  if (!vertical) {
    const height = PAD * 2 + widest * NODE_H + (widest - 1) * GAP_Y;
    ranks.forEach((rank, l) => {
      const top = (height - (rank.length * NODE_H + (rank.length - 1) * GAP_Y)) / 2;
      rank.forEach((key, i) => nodes.set(key, { x: PAD + l * (NODE_W + GAP_X), y: top + i * (NODE_H + GAP_Y) }));
    });
    return { nodes, width: lrWidth, height, vertical };
  }
  const width = PAD * 2 + widest * NODE_W + (widest - 1) * GAP_SIDE;
  ranks.forEach((rank, l) => {
    const left = (width - (rank.length * NODE_W + (rank.length - 1) * GAP_SIDE)) / 2;
    rank.forEach((key, i) => nodes.set(key, { x: left + i * (NODE_W + GAP_SIDE), y: PAD + l * (NODE_H + GAP_RANK) }));
  });
  return { nodes, width, height: PAD * 2 + depth * NODE_H + (depth - 1) * GAP_RANK, vertical };
}

function tail(text, max) {
  const t = String(text);
  return t.length > max ? "…" + t.slice(t.length - max + 1) : t;
}

function clip(text, max) {
  const t = String(text);
  return t.length > max ? t.slice(0, max - 1) + "…" : t;
}

const LABEL_X = 10; // a node's labels start here and end LABEL_X before its right edge

/** A node's label: clipped by characters at first, fitted to the box by `fitLabels` once drawn (the node's tooltip has it in full). */
function label(text, max, cls, y) {
  const full = String(text);
  return s("text", { x: LABEL_X, y, class: cls, dataset: { full } }, clip(full, max));
}

/**
 * Shortens (with an ellipsis) the node labels wider than their box: their width depends on the font and the
 * letters ("WWW…" is three times "iii…"), so it is measured. Needs the graph in the document and shown.
 */
export function fitLabels(svg) {
  const room = NODE_W - 2 * LABEL_X;
  for (const text of svg.querySelectorAll(".node text[data-full]")) {
    const full = text.dataset.full;
    const set = (t) => { text.textContent = t; };
    set(full);
    if (text.getComputedTextLength() <= room) continue;
    let lo = 0; // the longest prefix that fits with the ellipsis
    let hi = full.length - 1;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      set(full.slice(0, mid) + "…");
      if (text.getComputedTextLength() <= room) lo = mid;
      else hi = mid - 1;
    }
    set(full.slice(0, lo) + "…");
  }
}

/**
 * The DAG of `steps` (manifest steps). Options:
 *  - status(key) -> {status, label} | null: colours a node by a run's step status and adds a second line;
 *  - onSelect(key): called when a node is clicked (or Enter on it);
 *  - selected: the key drawn highlighted;
 *  - maxWidth: wider than this left to right, the graph is drawn top to bottom.
 */
export function dagSvg(steps, { status, onSelect, selected, maxWidth } = {}) {
  const keys = Object.keys(steps || {});
  if (!keys.length) return h("p", { class: "muted" }, "This flow has no steps.");
  const { nodes, width, height, vertical } = layout(steps, maxWidth || 1150);
  const svg = s("svg", {
    class: "dag",
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": "flow graph",
  });
  svg.append(
    s("defs", {},
      s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }))),
  );
  for (const key of keys) {
    const to = nodes.get(key);
    for (const [pred, entry] of Object.entries(steps[key].run_after || {})) {
      const from = nodes.get(pred);
      if (!from) continue;
      const { statuses, when } = edgeInfo(entry);
      const [x1, y1, x2, y2] = vertical
        ? [from.x + NODE_W / 2, from.y + NODE_H, to.x + NODE_W / 2, to.y - 2]
        : [from.x + NODE_W, from.y + NODE_H / 2, to.x - 2, to.y + NODE_H / 2];
      const d = vertical
        ? `M ${x1} ${y1} C ${x1} ${(y1 + y2) / 2}, ${x2} ${(y1 + y2) / 2}, ${x2} ${y2}`
        : `M ${x1} ${y1} C ${(x1 + x2) / 2} ${y1}, ${(x1 + x2) / 2} ${y2}, ${x2} ${y2}`;
      const onlySucceeded = statuses.length === 1 && statuses[0] === "Succeeded";
      const failurePath = statuses.length > 0 && !statuses.includes("Succeeded");
      const edge = s("g", { class: ["edge", when && "edge-when", failurePath && "edge-failure"] },
        s("title", {}, `${pred} → ${key}: ${statuses.join(", ") || "any"}${when ? " if " + when : ""}`),
        s("path", { d, "marker-end": "url(#arrow)" }));
      const parts = [];
      if (!onlySucceeded) parts.push(statuses.join("/") || "any");
      if (when) parts.push(`if ${tail(when, 22)}`);
      if (parts.length) {
        // At the middle of the curve, where edges sharing an end are furthest apart.
        edge.append(s("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 + 4, class: "edge-label", "text-anchor": "middle" }, clip(parts.join(" "), 26)));
      }
      svg.append(edge);
    }
  }
  for (const key of keys) {
    const step = steps[key];
    const { x, y } = nodes.get(key);
    const st = status ? status(key) : null;
    const isLoop = step.type === "ForEach";
    const node = s("g", {
      class: ["node", st ? statusClass(st.status) : "st-none", isLoop && "node-loop", selected === key && "node-selected", onSelect && "clickable"],
      transform: `translate(${x},${y})`,
      tabindex: onSelect ? 0 : null,
      role: onSelect ? "button" : null,
      dataset: { step: key },
    });
    node.append(
      s("title", {}, `${key} (${step.type})${st ? " — " + st.status : ""}${st && st.label && st.label !== st.status ? ` (${st.label})` : ""}`
        + `${step.description ? "\n" + step.description : ""}`),
      s("rect", { width: NODE_W, height: NODE_H, rx: 7, ry: 7 }),
      label(key, 22, "node-key", 20),
      label(st && st.label ? st.label : isLoop ? `ForEach × ${Object.keys(step.steps || {}).length} step(s)` : step.type, 26, "node-type", 37),
    );
    if (onSelect) {
      node.addEventListener("click", () => onSelect(key));
      node.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          onSelect(key);
        }
      });
    }
    svg.append(node);
  }
  // Drawn (in the document) before the next frame is painted: fit the labels then.
  requestAnimationFrame(() => {
    if (svg.isConnected) fitLabels(svg);
  });
  return h("div", { class: "dag-wrap" }, svg);
}
