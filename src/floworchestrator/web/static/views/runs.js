// #/runs?flow_id=&status=&since=&search=&offset= — the runs, filtered, searched and paged on the server.

import { api, query } from "../api.js";
import { RUN_STATUSES } from "../charts.js";
import { badge, fmtDuration, fmtTime, h, replace, serialized, unavailable } from "../dom.js";
import { flowLink, runLink } from "./common.js";

const PAGE = 25;

function toLocalInput(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "";
  const d = new Date(t - new Date(t).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

export function runsView(root, params) {
  const filters = {
    flow_id: params.get("flow_id") || "",
    status: params.get("status") || "",
    since: params.get("since") || "",
    search: params.get("search") || "",
    offset: Math.max(0, Number.parseInt(params.get("offset") || "0", 10) || 0),
  };
  const go = (changes) => {
    const next = { ...filters, ...changes };
    location.hash = `#/runs${query(next.offset ? next : { ...next, offset: "" })}`;
  };

  const flowSelect = h("select", { name: "flow_id", "aria-label": "flow" }, h("option", { value: "" }, "all flows"));
  if (filters.flow_id) flowSelect.append(h("option", { value: filters.flow_id, selected: true }, filters.flow_id));
  const statusSelect = h("select", { name: "status", "aria-label": "status" }, h("option", { value: "" }, "any status"),
    ...RUN_STATUSES.map((st) => h("option", { value: st, selected: st === filters.status }, st)));
  const since = h("input", { type: "datetime-local", name: "since", value: filters.since ? toLocalInput(filters.since) : "", "aria-label": "since" });
  const search = h("input", { type: "search", name: "search", value: filters.search, placeholder: "run id, flow or trigger body text", "aria-label": "search" });
  const form = h("form", {
    class: "filters",
    on: {
      submit: (e) => {
        e.preventDefault();
        go({
          flow_id: flowSelect.value,
          status: statusSelect.value,
          since: since.value ? new Date(since.value).toISOString() : "",
          search: search.value.trim(),
          offset: 0,
        });
      },
    },
  },
  flowSelect, statusSelect, h("label", { class: "inline-label" }, "since ", since), search,
  h("button", { type: "submit", class: "primary" }, "Apply"),
  h("button", { type: "button", on: { click: () => { location.hash = "#/runs"; } } }, "Clear"));
  for (const el of [flowSelect, statusSelect]) el.addEventListener("change", () => form.requestSubmit());

  const table = h("div");
  const pager = h("div", { class: "pager" });
  replace(root, h("h1", {}, "Runs"), form, table, pager);

  api("flows").then((data) => {
    for (const f of data.flows || []) {
      if (f.flow_id !== filters.flow_id) flowSelect.append(h("option", { value: f.flow_id }, f.flow_id));
    }
  }).catch(() => {});

  const refresh = serialized(async () => {
    let data;
    try {
      data = await api(`runs${query({ flow_id: filters.flow_id, status: filters.status, since: filters.since, search: filters.search, offset: filters.offset, limit: PAGE })}`);
    } catch (err) {
      replace(table, unavailable("The run list", err));
      replace(pager);
      return;
    }
    const runs = data.runs || [];
    replace(table, runs.length
      ? h("table", { class: "table runs-table" },
        h("thead", {}, h("tr", {}, ...["Run", "Flow", "Status", "Trigger", "Created", "Duration"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...runs.map((r) => h("tr", { dataset: { run: r.run_id } },
          h("td", {}, runLink(r)),
          h("td", {}, flowLink(r.flow_id)),
          h("td", {}, badge(r.status)),
          h("td", { class: "muted" }, r.trigger || ""),
          h("td", {}, fmtTime(r.created_at)),
          h("td", { class: "num" }, fmtDuration(r.duration_seconds))))))
      : h("p", { class: "muted" }, "No run matches."));
    const total = data.total ?? runs.length;
    const offset = data.offset ?? filters.offset;
    const limit = data.limit ?? PAGE;
    replace(pager,
      h("button", { disabled: offset <= 0, on: { click: () => go({ offset: Math.max(0, offset - limit) }) } }, "‹ Newer"),
      h("span", { class: "muted" }, total ? `${Math.min(offset + 1, total)}–${Math.min(offset + runs.length, total)} of ${total}` : "0 runs"),
      h("button", { disabled: offset + runs.length >= total, on: { click: () => go({ offset: offset + limit }) } }, "Older ›"));
  });

  return { refresh, onEvent: (ev) => /^Run/.test(ev.kind || "") };
}
