// #/flows — the flows, with an enabled switch; #/flows/{id} — one flow: trigger, schedules, DAG, Mermaid.

import { api, query } from "../api.js";
import { badge, copyText, fmtAgo, fmtTime, h, notice, renderChanged, replace, serialized, unavailable } from "../dom.js";
import { dagSvg } from "../graph.js";
import { flowHref, runHref, runLink } from "./common.js";

function triggerList(triggers) {
  return Object.entries(triggers || {}).map(([name, t]) => {
    const what = t.kind === "cron" ? `cron ${t.expression}${t.timezone ? " " + t.timezone : ""}` : t.kind === "webhook" ? `webhook /${t.slug}` : t.kind;
    return h("span", { class: "chip", title: name }, name === t.kind ? what : `${name}: ${what}`);
  });
}

function enabledToggle(flow, onChange) {
  const box = h("input", { type: "checkbox", checked: flow.enabled, "aria-label": `enable ${flow.flow_id}` });
  const label = h("span", {}, flow.enabled ? "enabled" : "disabled");
  const status = h("span", { class: "error-text" });
  box.addEventListener("change", async () => {
    box.disabled = true;
    status.textContent = "";
    try {
      const want = box.checked;
      await api(`flows/${encodeURIComponent(flow.flow_id)}/${want ? "enable" : "disable"}`, { method: "POST" });
      label.textContent = want ? "enabled" : "disabled";
      if (onChange) onChange(want);
    } catch (err) {
      box.checked = !box.checked;
      status.textContent = err.detail || err.message;
    } finally {
      box.disabled = false;
    }
  });
  return h("label", { class: "toggle" }, box, label, status);
}

export function flowsView(root) {
  const list = h("div");
  replace(root, h("h1", {}, "Flows"), list);

  const refresh = serialized(async () => {
    let data;
    try {
      data = await api("flows");
    } catch (err) {
      replace(list, unavailable("The flow list", err));
      return;
    }
    const flows = data.flows || [];
    renderChanged(list, flows, () => replace(list, flows.length
      ? h("table", { class: "table" },
        h("thead", {}, h("tr", {}, ...["Flow", "Description", "Triggers", "Steps", "Enabled", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...flows.map((f) => h("tr", { dataset: { flow: f.flow_id } },
          h("td", {}, h("a", { href: flowHref(f.flow_id), class: "strong" }, f.flow_id), f.registered ? null : h("span", { class: "chip chip-warn", title: "not registered in this process" }, "not registered")),
          h("td", { class: "muted" }, f.description || ""),
          h("td", {}, ...triggerList(f.triggers)),
          h("td", { class: "num" }, String(f.step_count)),
          h("td", {}, enabledToggle(f)),
          h("td", { class: "links" }, h("a", { href: flowHref(f.flow_id) }, "trigger"), " · ",
            h("a", { href: `#/runs?flow_id=${encodeURIComponent(f.flow_id)}` }, "runs"))))))
      : h("p", { class: "muted" }, "No flow is registered.")));
  });

  return { refresh, onEvent: () => false };
}

// -- one flow ---------------------------------------------------------------------------------

function triggerForm(flowId) {
  const editor = h("textarea", { class: "json-editor", rows: 8, spellcheck: "false", "aria-label": "trigger body (JSON)" });
  editor.value = sessionStorage.getItem(`floworchestrator.body.${flowId}`) || "{}";
  const message = h("div", { class: "form-message" });
  const button = h("button", { class: "primary", type: "submit" }, "Trigger");
  const validate = () => {
    const text = editor.value.trim();
    if (!text) return { ok: true, raw: "" };
    try {
      JSON.parse(text);
      return { ok: true, raw: text };
    } catch (err) {
      return { ok: false, error: err.message };
    }
  };
  editor.addEventListener("input", () => {
    sessionStorage.setItem(`floworchestrator.body.${flowId}`, editor.value);
    const v = validate();
    editor.classList.toggle("invalid", !v.ok);
    replace(message, v.ok ? null : h("span", { class: "error-text" }, `Not valid JSON: ${v.error}`));
    button.disabled = !v.ok;
  });
  const form = h("form", {
    class: "trigger-form",
    on: {
      submit: async (e) => {
        e.preventDefault();
        const v = validate();
        if (!v.ok) {
          replace(message, h("span", { class: "error-text" }, `Not valid JSON: ${v.error}`));
          return;
        }
        button.disabled = true;
        replace(message, h("span", { class: "muted" }, "Starting…"));
        try {
          const started = await api(`flows/${encodeURIComponent(flowId)}/trigger`, { method: "POST", raw: v.raw || "null" });
          location.hash = runHref(started.run_id);
        } catch (err) {
          replace(message, notice("error", `Could not start a run (${err.status || "error"}): ${err.detail || err.message}`));
        } finally {
          button.disabled = false;
        }
      },
    },
  },
  h("label", {}, "Trigger body (JSON; empty means null)"), editor, h("div", { class: "row" }, button, message));
  return form;
}

function scheduleRow(sch, refresh) {
  const base = `schedules/${encodeURIComponent(sch.flow_id)}/${encodeURIComponent(sch.trigger)}`;
  const message = h("span", { class: "error-text" });
  const expr = h("input", { type: "text", value: sch.expression, class: "mono cron-input", "aria-label": `cron expression of ${sch.trigger}` });
  const act = (path, options) => async () => {
    message.textContent = "";
    try {
      await api(`${base}/${path}`, options);
      await refresh();
    } catch (err) {
      message.textContent = err.detail || err.message;
    }
  };
  return h("tr", { dataset: { trigger: sch.trigger } },
    h("td", {}, sch.trigger),
    h("td", {}, h("form", { class: "inline", on: { submit: (e) => { e.preventDefault(); act("cron", { method: "PUT", body: { expression: expr.value.trim() } })(); } } },
      expr, h("button", { type: "submit" }, "Save"),
      sch.overridden ? h("button", { type: "button", on: { click: act("cron", { method: "PUT", body: { expression: null } }) }, title: "back to the flow's own expression" }, "Reset") : null),
    message),
    h("td", {}, sch.timezone || "UTC"),
    h("td", {}, sch.paused ? badge("Paused", "paused") : badge("Running", "active")),
    h("td", { class: "mono small" }, (sch.next_fires || []).map(fmtTime).join(", ") || "—"),
    h("td", {}, sch.paused
      ? h("button", { on: { click: act("resume", { method: "POST" }) } }, "Resume")
      : h("button", { on: { click: act("pause", { method: "POST" }) } }, "Pause"),
    h("button", { on: { click: act("trigger", { method: "POST" }) }, title: "start a run of this trigger now" }, "Fire now")));
}

export function flowView(root, flowId) {
  const head = h("div");
  const schedules = h("div");
  const graph = h("div");
  const runs = h("div");
  const copied = h("span", { class: "muted", "aria-live": "polite" });
  let mermaid = "";
  const copyButton = h("button", {
    on: {
      click: async () => {
        copied.textContent = (await copyText(mermaid)) ? "Copied." : "Copy failed: select the text below.";
        setTimeout(() => { copied.textContent = ""; }, 3000);
      },
    },
  }, "Copy Mermaid");
  const mermaidText = h("pre", { class: "json small" });
  replace(root,
    h("p", { class: "crumbs" }, h("a", { href: "#/flows" }, "Flows"), " / ", flowId),
    head,
    h("div", { class: "grid-2" },
      h("section", { class: "panel" }, h("h2", {}, "Trigger a run"), triggerForm(flowId)),
      h("section", { class: "panel" }, h("h2", {}, "Recent runs"), runs)),
    h("section", { class: "panel" }, h("div", { class: "panel-head" }, h("h2", {}, "Graph"), h("div", {}, copyButton, " ", copied)), graph,
      h("details", {}, h("summary", {}, "Mermaid text"), mermaidText)),
    h("section", { class: "panel" }, h("h2", {}, "Cron schedules"), schedules));

  const refresh = serialized(async () => {
    const [flow, sch, recent] = await Promise.allSettled([
      api(`flows/${encodeURIComponent(flowId)}`),
      api("schedules"),
      api(`runs${query({ flow_id: flowId, limit: 8 })}`),
    ]);
    if (flow.status === "fulfilled") {
      const f = flow.value;
      mermaid = f.mermaid || "";
      mermaidText.textContent = mermaid;
      renderChanged(head, f, () => replace(head,
        h("div", { class: "title-row" }, h("h1", {}, f.flow_id), enabledToggle(f, () => refresh())),
        f.description ? h("p", {}, f.description) : null,
        h("p", { class: "muted" }, `version ${f.version ?? "—"} · ${f.step_count} steps · manifest `, h("span", { class: "mono" }, f.manifest_id || "—"),
          f.timeout ? ` · timeout ${f.timeout} s` : ""),
        h("div", {}, ...triggerList(f.triggers))));
      renderChanged(graph, f.steps, () => replace(graph, dagSvg(f.steps || {}, { maxWidth: graph.clientWidth || 1150 })));
    } else {
      renderChanged(head, null, () => replace(head, h("h1", {}, flowId), unavailable("This flow", flow.reason)));
      renderChanged(graph, null, () => replace(graph));
    }
    if (sch.status === "fulfilled") {
      const mine = (sch.value.schedules || []).filter((x) => x.flow_id === flowId);
      renderChanged(schedules, mine, () => replace(schedules, mine.length
        ? h("table", { class: "table" },
          h("thead", {}, h("tr", {}, ...["Trigger", "Expression", "Timezone", "State", "Next fires", ""].map((t) => h("th", {}, t)))),
          h("tbody", {}, ...mine.map((x) => scheduleRow(x, refresh))))
        : h("p", { class: "muted" }, "This flow has no cron trigger.")));
    } else {
      renderChanged(schedules, null, () => replace(schedules, unavailable("Schedules", sch.reason, "are")));
    }
    if (recent.status === "fulfilled") {
      const list = recent.value.runs || [];
      replace(runs, list.length
        ? h("table", { class: "table compact" }, h("tbody", {}, ...list.map((r) => h("tr", {},
          h("td", {}, runLink(r)), h("td", {}, badge(r.status)), h("td", { class: "muted" }, fmtAgo(r.created_at))))))
        : h("p", { class: "muted" }, "No run yet."),
      h("a", { href: `#/runs?flow_id=${encodeURIComponent(flowId)}` }, "all runs of this flow"));
    } else {
      replace(runs, unavailable("Runs", recent.reason, "are"));
    }
  });

  return { refresh, onEvent: (ev) => /^Run/.test(ev.kind || "") };
}
