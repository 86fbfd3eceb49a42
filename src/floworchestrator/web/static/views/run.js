// #/runs/{id} — one run: header and actions, DAG / timeline / Gantt tabs, the step panel and signal forms.

import { api } from "../api.js";
import { ganttChart } from "../charts.js";
import { badge, compact, fmtClock, fmtDuration, fmtTime, h, jsonBlock, notice, parseTime, pretty, replace, serialized, unavailable } from "../dom.js";
import { dagSvg } from "../graph.js";
import { FINAL, flowLink, runHref } from "./common.js";
import { stepPanel } from "./step.js";

const TABS = ["DAG", "Timeline", "Gantt"];

const isWaiting = (step) => Boolean(step.waiting_signal) && !FINAL.has(step.status);

/** The manifest entry of a step key, ForEach children ("loop.3.child") included. */
function manifestStep(steps, key) {
  if (steps[key]) return steps[key];
  const [loop, , child] = key.split(".");
  return steps[loop] && steps[loop].steps ? steps[loop].steps[child] : undefined;
}

function loopLabel(children) {
  if (!children.length) return null;
  const ok = children.filter((c) => c.status === "Succeeded").length;
  const failed = children.filter((c) => c.status === "Failed" || c.status === "TimedOut").length;
  const items = new Set(children.map((c) => c.step_key.split(".")[1])).size;
  return `${items} item(s): ${ok} ok${failed ? `, ${failed} failed` : ""}`;
}

export function runView(root, runId) {
  const enc = encodeURIComponent(runId);
  let run = null;
  let steps = [];
  let events = [];
  let lastEventId = 0;
  let manifest = null;
  let manifestNote = "";
  let selected = null;
  let tab = TABS.includes(sessionStorage.getItem("floworchestrator.tab")) ? sessionStorage.getItem("floworchestrator.tab") : "DAG";
  let panelShown = null;
  let waitingShown = "";

  const header = h("div", { class: "run-header" });
  const actions = h("div", { class: "actions" });
  const actionMessage = h("div", { class: "form-message", "aria-live": "polite" });
  const waiting = h("div");
  const tabBar = h("div", { class: "tabs", role: "tablist" });
  const tabBody = h("div", { class: "tab-body" });
  const panel = h("aside", { class: "step-panel", "aria-live": "polite" });
  replace(root,
    h("p", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), " / ", h("span", { class: "mono" }, runId)),
    header, h("div", { class: "row" }, actions, actionMessage), waiting,
    h("div", { class: "run-body" }, h("section", { class: "panel grow" }, tabBar, tabBody), panel));

  const act = (label, path, after) => h("button", {
    on: {
      click: async (e) => {
        const button = e.currentTarget;
        button.disabled = true;
        replace(actionMessage);
        try {
          const answer = await api(path, { method: "POST" });
          if (after) after(answer);
          await refresh();
        } catch (err) {
          replace(actionMessage, notice("error", `${label} failed (${err.status || "error"}): ${err.detail || err.message}`));
        } finally {
          button.disabled = false;
        }
      },
    },
  }, label);

  function select(key) {
    selected = selected === key ? null : key;
    panelShown = null;
    renderPanel(); // first: opening the panel narrows the graph's room
    renderTab();
  }

  function renderHeader() {
    replace(header,
      h("div", { class: "title-row" }, h("h1", { class: "mono" }, runId), badge(run.status)),
      h("dl", { class: "facts" },
        h("dt", {}, "Flow"), h("dd", {}, flowLink(run.flow_id)),
        h("dt", {}, "Trigger"), h("dd", {}, run.trigger || "—"),
        h("dt", {}, "Created"), h("dd", {}, fmtTime(run.created_at)),
        h("dt", {}, "Finished"), h("dd", {}, fmtTime(run.finished_at)),
        h("dt", {}, "Duration"), h("dd", { class: run.finished_at ? null : "ticking" }, durationText()),
        run.idempotency_key ? [h("dt", {}, "Idempotency key"), h("dd", { class: "mono" }, run.idempotency_key)] : null,
        run.deadline ? [h("dt", {}, "Deadline"), h("dd", {}, fmtTime(run.deadline))] : null),
      h("details", { class: "trigger-body", open: true }, h("summary", {}, "Trigger body"), jsonBlock(run.trigger_body)),
      run.trigger_headers && Object.keys(run.trigger_headers).length
        ? h("details", {}, h("summary", {}, "Trigger headers"), jsonBlock(run.trigger_headers)) : null);
    replace(actions,
      run.status === "Running" ? act("Cancel run", `runs/${enc}/cancel`) : null,
      act("Re-run", `runs/${enc}/rerun`, (answer) => { location.hash = runHref(answer.run_id); }));
  }

  function durationText() {
    return run.finished_at ? fmtDuration(run.duration_seconds) : `${fmtDuration((Date.now() - parseTime(run.created_at)) / 1000)} so far`;
  }

  // A running run's duration counts up between refreshes.
  const ticker = setInterval(() => {
    const el = header.querySelector(".ticking");
    if (el && run && !run.finished_at) el.textContent = durationText();
  }, 1000);

  function renderWaiting() {
    const list = steps.filter(isWaiting);
    const key = list.map((s) => `${s.step_key}:${s.waiting_signal}`).join("|");
    if (key === waitingShown) return; // keep what the user typed
    waitingShown = key;
    replace(waiting, ...list.map(signalForm));
  }

  function signalForm(step) {
    const name = step.waiting_signal;
    const editor = h("textarea", { class: "json-editor", rows: 4, spellcheck: "false", "aria-label": `payload of signal ${name}` });
    editor.value = pretty({ by: "dashboard", comment: "" });
    const message = h("div", { class: "form-message" });
    const send = (approved) => async () => {
      let payload;
      try {
        payload = editor.value.trim() ? JSON.parse(editor.value) : null;
      } catch (err) {
        replace(message, h("span", { class: "error-text" }, `Not valid JSON: ${err.message}`));
        return;
      }
      if (approved !== null && payload !== null && typeof payload === "object" && !Array.isArray(payload)) payload = { ...payload, approved }; // the button wins over the editor's "approved"
      replace(message, h("span", { class: "muted" }, "Sending…"));
      try {
        await api(`runs/${enc}/signals/${encodeURIComponent(name)}`, { method: "POST", body: payload });
        replace(message, h("span", { class: "ok-text" }, `Signal ${name} sent.`));
        await refresh();
      } catch (err) {
        replace(message, notice("error", `The signal was refused (${err.status || "error"}): ${err.detail || err.message}`));
      }
    };
    return h("section", { class: "panel waiting", dataset: { step: step.step_key } },
      h("h2", {}, "Step ", h("span", { class: "mono" }, step.step_key), " waits for signal ", h("span", { class: "mono" }, name)),
      h("p", { class: "muted" }, "Payload (JSON). Approve and Reject set \"approved\" to true or false in an object (whatever the text says); Send sends it as it is."),
      editor,
      h("div", { class: "row" },
        h("button", { class: "primary", on: { click: send(true) } }, "Approve"),
        h("button", { class: "danger", on: { click: send(false) } }, "Reject"),
        h("button", { on: { click: send(null) } }, "Send"),
        message));
  }

  function renderTabs() {
    replace(tabBar, ...TABS.map((t) => h("button", {
      role: "tab",
      class: ["tab", t === tab && "active"],
      "aria-selected": String(t === tab),
      on: { click: () => { tab = t; sessionStorage.setItem("floworchestrator.tab", t); renderTabs(); renderTab(); } },
    }, t)));
  }

  function statusOf(key) {
    const step = steps.find((s) => s.step_key === key);
    const children = steps.filter((s) => s.step_key.startsWith(`${key}.`));
    if (!step) return { status: "Pending", label: "not started" };
    const label = isWaiting(step) ? `waiting for ${step.waiting_signal}` : loopLabel(children) || `${step.status}${step.attempt_count > 1 ? ` · ${step.attempt_count} attempts` : ""}`;
    return { status: isWaiting(step) ? "Waiting" : step.status, label };
  }

  function renderTab() {
    if (tab === "DAG") {
      const shape = manifest || Object.fromEntries(steps.filter((s) => !s.step_key.includes(".")).map((s) => [s.step_key, { type: "", run_after: {} }]));
      replace(tabBody, dagSvg(shape, { status: statusOf, onSelect: select, selected, maxWidth: tabBody.clientWidth || 1150 }),
        manifestNote ? h("p", { class: "muted small" }, manifestNote) : null, hint(), stepsTable());
    } else if (tab === "Timeline") {
      replace(tabBody, timeline());
    } else {
      replace(tabBody, ganttChart(run, steps, { onSelect: select, selected, width: tabBody.clientWidth }), hint());
    }
  }

  function hint() {
    return selected ? null : h("p", { class: "muted small" }, "Click a step for its inputs, output, error and attempts.");
  }

  function stepsTable() {
    return h("div", { class: "table-wrap" }, h("table", { class: "table compact steps-table" },
      h("thead", {}, h("tr", {}, ...["Step", "Status", "Attempts", "Started", "Duration"].map((t) => h("th", {}, t)))),
      h("tbody", {}, ...steps.map((st) => h("tr", {
        class: ["clickable", selected === st.step_key && "row-selected"],
        dataset: { step: st.step_key },
        tabindex: 0,
        on: { click: () => select(st.step_key), keydown: (e) => { if (e.key === "Enter") select(st.step_key); } },
      },
      h("td", { class: "mono" }, st.step_key),
      h("td", {}, isWaiting(st) ? badge("Waiting", `waiting for ${st.waiting_signal}`) : badge(st.status)),
      h("td", { class: "num" }, String(st.attempt_count ?? 0)),
      h("td", {}, fmtClock(st.started_at)),
      h("td", { class: "num" }, st.finished_at ? fmtDuration(st.duration_seconds) : st.started_at ? "…" : "—"))))));
  }

  function timeline() {
    if (!events.length) return h("p", { class: "muted" }, "No event yet.");
    const t0 = parseTime(run.created_at) ?? parseTime(events[0].at);
    return h("ol", { class: "timeline" }, ...events.map((ev) => h("li", { class: "event", dataset: { kind: ev.kind } },
      h("span", { class: "mono time", title: fmtTime(ev.at) }, fmtClock(ev.at)),
      h("span", { class: "mono offset" }, `+${fmtDuration(Math.max(0, (parseTime(ev.at) - t0) / 1000))}`),
      h("span", { class: ["kind", /Failed|TimedOut|Expired|Interrupted/.test(ev.kind) ? "kind-bad" : /Succeeded/.test(ev.kind) ? "kind-good" : ""] }, ev.kind),
      ev.step_key ? h("a", { href: "#", class: "mono", on: { click: (e) => { e.preventDefault(); select(ev.step_key); } } }, ev.step_key) : h("span"),
      ev.data !== null && ev.data !== undefined && !(typeof ev.data === "object" && !Object.keys(ev.data).length)
        ? h("span", { class: "mono data", title: pretty(ev.data) }, compact(ev.data, 140)) : null)));
  }

  function renderPanel() {
    const step = selected && steps.find((s) => s.step_key === selected);
    const shown = selected ? JSON.stringify([selected, step || null]) : "";
    if (shown === panelShown) return;
    panelShown = shown;
    panel.classList.toggle("open", Boolean(selected));
    if (!selected) {
      replace(panel);
      return;
    }
    const retry = (key) => act("Retry", `runs/${enc}/steps/${encodeURIComponent(key)}/retry`);
    replace(panel, ...stepPanel({ key: selected, step, steps, def: manifest ? manifestStep(manifest, selected) : undefined, select, retry }));
  }

  async function loadManifest() {
    // The run's own (pinned) definition: the flow may have changed since the run started.
    try {
      const pinned = await api(`manifests/${encodeURIComponent(run.manifest_id)}`);
      manifest = pinned.steps || {};
      manifestNote = "";
      return;
    } catch {
      // an older server without the endpoint: fall back to the flow as registered now
    }
    try {
      const flow = await api(`flows/${encodeURIComponent(run.flow_id)}`);
      manifest = flow.steps || {};
      manifestNote = flow.manifest_id && run.manifest_id && flow.manifest_id !== run.manifest_id
        ? `Drawn from the flow's current definition (${flow.manifest_id}); this run started on manifest ${run.manifest_id}.` : "";
    } catch {
      manifest = null;
      manifestNote = "The flow is not available: steps are shown without their links.";
    }
  }

  const refresh = serialized(async () => {
    let fresh;
    try {
      fresh = await api(`runs/${enc}`);
    } catch (err) {
      replace(header, h("h1", { class: "mono" }, runId), err.status === 404 ? notice("error", "No such run.") : unavailable("This run", err));
      return;
    }
    const [stepData, eventData] = await Promise.allSettled([
      api(`runs/${enc}/steps`),
      api(`runs/${enc}/events?after=${Math.max(0, lastEventId - 64)}&limit=1000`),
    ]);
    const first = run === null;
    run = fresh;
    if (first) await loadManifest();
    if (stepData.status === "fulfilled") steps = stepData.value.steps || [];
    if (eventData.status === "fulfilled") {
      // Re-read a few ids below the last one seen: with several writers an event can be committed late.
      const seen = new Set(events.map((e) => e.event_id));
      const more = (eventData.value.events || []).filter((e) => !seen.has(e.event_id));
      events = events.concat(more).sort((a, b) => a.event_id - b.event_id);
      if (events.length) lastEventId = events[events.length - 1].event_id;
    }
    renderHeader();
    renderWaiting();
    renderTabs();
    renderPanel();
    renderTab();
  });

  return { refresh, onEvent: (ev) => ev.run_id === runId, destroy: () => clearInterval(ticker) };
}
