// #/ — counts per status, the active runs, and runs over time.

import { api, isMissingEndpoint, query } from "../api.js";
import { RUN_STATUSES, runsChart } from "../charts.js";
import { badge, fmtAgo, h, replace, serialized, unavailable } from "../dom.js";
import { flowLink, runLink } from "./common.js";

const BUCKETS = { minute: 60, hour: 24, day: 30 };

async function activeRuns() {
  try {
    return await api(`runs/active${query({ limit: 20 })}`);
  } catch (err) {
    if (!isMissingEndpoint(err)) throw err;
    return await api(`runs${query({ status: "Running", limit: 20 })}`); // before /runs/active existed
  }
}

export function overviewView(root) {
  let bucket = sessionStorage.getItem("floworchestrator.bucket") || "hour";
  const counts = h("div", { class: "cards" });
  const active = h("div");
  const chart = h("div", { class: "chart-wrap" });
  const bucketSelect = h("select", {
    "aria-label": "bucket",
    on: {
      change: () => {
        bucket = bucketSelect.value;
        sessionStorage.setItem("floworchestrator.bucket", bucket);
        refresh();
      },
    },
  }, ...Object.keys(BUCKETS).map((b) => h("option", { value: b, selected: b === bucket }, `per ${b}`)));

  replace(root,
    h("h1", {}, "Overview"),
    counts,
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Runs over time"), bucketSelect), chart),
    h("section", { class: "panel" }, h("h2", {}, "Active runs"), active));

  const refresh = serialized(async () => {
    const [stats, running] = await Promise.allSettled([
      api(`runs/stats${query({ bucket, buckets: BUCKETS[bucket] })}`),
      activeRuns(),
    ]);
    if (stats.status === "fulfilled") {
      const totals = stats.value.totals || {};
      replace(counts,
        h("a", { class: "card", href: "#/runs" }, h("div", { class: "card-n" }, String(stats.value.total ?? 0)), h("div", {}, "runs")),
        ...RUN_STATUSES.map((st) => h("a", { class: ["card", `card-${st}`], href: `#/runs?status=${st}` },
          h("div", { class: "card-n" }, String(totals[st] ?? 0)), badge(st))));
      replace(chart, runsChart(stats.value.series, stats.value.bucket || bucket), legend());
    } else {
      replace(counts, unavailable("Run counts", stats.reason, "are"));
      replace(chart, unavailable("The runs-over-time chart", stats.reason));
    }
    if (running.status === "fulfilled") {
      const runs = running.value.runs || [];
      replace(active, runs.length
        ? h("table", { class: "table" },
          h("thead", {}, h("tr", {}, h("th", {}, "Run"), h("th", {}, "Flow"), h("th", {}, "Status"), h("th", {}, "Started"))),
          h("tbody", {}, ...runs.map((r) => h("tr", {},
            h("td", {}, runLink(r)), h("td", {}, flowLink(r.flow_id)), h("td", {}, badge(r.status)), h("td", {}, fmtAgo(r.created_at))))))
        : h("p", { class: "muted" }, "No run is running."),
      (running.value.total ?? 0) > runs.length ? h("a", { href: "#/runs?status=Running" }, `all ${running.value.total} running runs`) : null);
    } else {
      replace(active, unavailable("Active runs", running.reason, "are"));
    }
  });

  return {
    refresh,
    onEvent: (ev) => /^Run/.test(ev.kind || ""),
  };
}

function legend() {
  return h("div", { class: "legend" }, ...RUN_STATUSES.map((st) => h("span", {}, h("i", { class: ["swatch", `st-${st}`] }), st)));
}
