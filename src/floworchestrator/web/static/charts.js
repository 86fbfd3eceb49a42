// SVG charts: runs over time (stacked bars) and a run's Gantt chart.

import { fmtDuration, fmtTime, h, parseTime, s, statusClass } from "./dom.js";

export const RUN_STATUSES = ["Succeeded", "Failed", "TimedOut", "Cancelled", "Running"];

function bucketLabel(iso, bucket) {
  const t = parseTime(iso);
  if (t === null) return "";
  const d = new Date(t);
  const p = (n) => String(n).padStart(2, "0");
  if (bucket === "day") return `${p(d.getMonth() + 1)}-${p(d.getDate())}`;
  return `${p(d.getHours())}:${p(d.getMinutes())}`;
}

function niceMax(n) {
  const step = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 4, 5, 10]) if (m * step >= n) return m * step;
  return 10 * step;
}

/** Runs per bucket, stacked by status: series = [{start, counts: {Succeeded: n, ...}}], oldest first. */
export function runsChart(series, bucket) {
  if (!series || !series.length) return h("p", { class: "muted" }, "No data.");
  const W = 1000;
  const H = 200;
  const left = 34;
  const bottom = 22;
  const top = 8;
  const plotH = H - bottom - top;
  const totals = series.map((b) => Object.values(b.counts || {}).reduce((a, n) => a + (Number(n) || 0), 0));
  const max = niceMax(Math.max(1, ...totals));
  const slot = (W - left - 4) / series.length;
  const barW = Math.max(2, slot * 0.72);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "runs over time" });
  for (const frac of [0, 0.5, 1]) {
    const y = top + plotH * (1 - frac);
    svg.append(
      s("line", { x1: left, x2: W, y1: y, y2: y, class: "grid" }),
      s("text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "axis" }, String(Math.round(max * frac))),
    );
  }
  const labelEvery = Math.ceil(series.length / 8);
  series.forEach((b, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    let y = top + plotH;
    const counts = b.counts || {};
    const statuses = [...RUN_STATUSES, ...Object.keys(counts).filter((k) => !RUN_STATUSES.includes(k))];
    const group = s("g", { class: "bar" },
      s("title", {}, `${fmtTime(b.start)}: ${totals[i]} run(s)` +
        statuses.filter((st) => counts[st]).map((st) => `\n${st}: ${counts[st]}`).join("")));
    for (const st of statuses) {
      const n = Number(counts[st]) || 0;
      if (!n) continue;
      const hgt = (n / max) * plotH;
      y -= hgt;
      group.append(s("rect", { x, y, width: barW, height: Math.max(hgt, 0.5), class: ["fill", statusClass(st)] }));
    }
    svg.append(group);
    if (i % labelEvery === 0) {
      svg.append(s("text", { x: x + barW / 2, y: H - 6, "text-anchor": "middle", class: "axis" }, bucketLabel(b.start, bucket)));
    }
  });
  return svg;
}

const FINAL = new Set(["Succeeded", "Failed", "Skipped", "Cancelled", "TimedOut"]);

function shownStatus(step) {
  return step.waiting_signal && !FINAL.has(step.status) ? "Waiting" : step.status;
}

/** Bars from each step's started_at to finished_at (now while it runs), on a shared time axis from the run's start. */
export function ganttChart(run, steps, { onSelect, selected, width } = {}) {
  const rows = steps
    .map((st) => ({ st, start: parseTime(st.started_at), end: parseTime(st.finished_at) }))
    .filter((r) => r.start !== null);
  if (!rows.length) return h("p", { class: "muted" }, "No step has started yet.");
  rows.sort((a, b) => a.start - b.start);
  const now = Date.now();
  const t0 = Math.min(parseTime(run.created_at) ?? rows[0].start, ...rows.map((r) => r.start));
  const t1 = Math.max(...rows.map((r) => r.end ?? now), parseTime(run.finished_at) ?? 0, t0 + 1);
  const span = t1 - t0;
  const W = Math.max(480, Math.round(width || 900));
  const labelW = Math.min(180, Math.round(W * 0.28));
  const rowH = 24;
  const top = 24;
  const plotW = W - labelW - 12;
  const H = top + rows.length * rowH + 8;
  const x = (t) => labelW + ((t - t0) / span) * plotW;
  const svg = s("svg", { class: "gantt", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "Gantt chart of the steps" });
  for (let i = 0; i <= 4; i++) {
    const t = t0 + (span * i) / 4;
    svg.append(
      s("line", { x1: x(t), x2: x(t), y1: top - 6, y2: H, class: "grid" }),
      s("text", { x: x(t), y: 14, "text-anchor": i === 4 ? "end" : i === 0 ? "start" : "middle", class: "axis" },
        `+${fmtDuration((t - t0) / 1000)}`),
    );
  }
  rows.forEach(({ st, start, end }, i) => {
    const y = top + i * rowH;
    const x1 = x(start);
    const x2 = Math.max(x(end ?? now), x1 + 2);
    const row = s("g", {
      class: ["gantt-row", onSelect && "clickable", selected === st.step_key && "row-selected"],
      dataset: { step: st.step_key },
    },
    s("title", {}, `${st.step_key}: ${shownStatus(st)}, ${fmtDuration(((end ?? now) - start) / 1000)}${st.attempt_count > 1 ? `, ${st.attempt_count} attempts` : ""}`),
    s("rect", { x: 0, y, width: W, height: rowH, class: "row-bg" }),
    s("text", { x: 6, y: y + 16, class: "row-label" }, st.step_key.length > 26 ? st.step_key.slice(0, 25) + "…" : st.step_key),
    s("rect", { x: x1, y: y + 5, width: x2 - x1, height: rowH - 10, rx: 3, class: ["fill", statusClass(shownStatus(st)), end === null && "bar-open"] }));
    for (const a of st.attempts || []) {
      const as = parseTime(a.started_at);
      if (as !== null && as > start) row.append(s("line", { x1: x(as), x2: x(as), y1: y + 3, y2: y + rowH - 3, class: "attempt-tick" }));
    }
    if (onSelect) row.addEventListener("click", () => onSelect(st.step_key));
    svg.append(row);
  });
  return svg;
}
