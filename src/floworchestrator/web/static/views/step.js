// The step panel of the run page: status, timings, error, why skipped, inputs, output, items, attempts.

import { badge, fmtClock, fmtDuration, fmtTime, h, jsonBlock } from "../dom.js";
import { FINAL } from "./common.js";

const RETRYABLE = new Set(["Failed", "TimedOut", "Cancelled"]);

function conditionTable(conditions) {
  return h("table", { class: "table compact" },
    h("thead", {}, h("tr", {}, h("th", {}, "Expression"), h("th", {}, "Evaluated"), h("th", {}, "Result"))),
    h("tbody", {}, ...conditions.map((c) => h("tr", {},
      h("td", { class: "mono" }, String(c.expression ?? "")),
      h("td", { class: "mono" }, c.error ? `error: ${c.error}` : String(c.evaluated ?? "")),
      h("td", {}, badge(c.result === true ? "Succeeded" : "Failed", String(c.result)))))));
}

/** A skip that came from the predecessors (no condition trace): what each one ended in, and what the step accepts. */
function predecessorTable(key, def, steps) {
  const entries = Object.entries(def.run_after || {});
  if (!entries.length) return null;
  const parts = key.split(".");
  const prefix = parts.length === 3 ? `${parts[0]}.${parts[1]}.` : ""; // a ForEach child's siblings share its item
  return h("table", { class: "table compact why-skipped" },
    h("thead", {}, h("tr", {}, h("th", {}, "After"), h("th", {}, "Accepts"), h("th", {}, "Ended"))),
    h("tbody", {}, ...entries.map(([pred, entry]) => {
      const accepts = Array.isArray(entry) ? entry : (entry && entry.statuses) || [];
      const other = steps.find((x) => x.step_key === prefix + pred);
      const ended = other ? other.status : "not run";
      return h("tr", {},
        h("td", { class: "mono" }, pred),
        h("td", {}, accepts.join(", ") || "any final status"),
        h("td", {}, badge(ended), accepts.length && !accepts.includes(ended) ? h("span", { class: "error-text small" }, " not accepted") : null));
    })));
}

/** The server's account of a predecessor skip (`skipped_because.run_after`), as the step was skipped. */
function skippedBecauseTable(rows) {
  return h("table", { class: "table compact why-skipped" },
    h("thead", {}, h("tr", {}, h("th", {}, "After"), h("th", {}, "Accepts"), h("th", {}, "Ended"))),
    h("tbody", {}, ...rows.map((r) => h("tr", {},
      h("td", { class: "mono" }, String(r.step_key)),
      h("td", {}, Array.isArray(r.accepts) && r.accepts.length ? r.accepts.join(", ") : "any final status"),
      h("td", {}, badge(r.status || "not run"), r.satisfied ? null : h("span", { class: "error-text small" }, " not accepted"))))));
}

function why(step, def, steps) {
  const conditions = step.trace && Array.isArray(step.trace.conditions) ? step.trace.conditions : [];
  const title = step.status === "Skipped" ? "Why skipped" : conditions.length ? "Conditions" : "Trace";
  if (conditions.length) return [h("h3", {}, title), conditionTable(conditions)];
  if (step.trace) return [h("h3", {}, title), jsonBlock(step.trace)];
  const server = step.skipped_because && Array.isArray(step.skipped_because.run_after) ? step.skipped_because.run_after : null;
  if (step.status === "Skipped" && server && server.length) return [h("h3", {}, title), skippedBecauseTable(server)];
  const table = step.status === "Skipped" && def ? predecessorTable(step.step_key, def, steps) : null;
  return table ? [h("h3", {}, title), table] : null;
}

function attemptsTable(attempts) {
  if (!attempts.length) return h("p", { class: "muted" }, "None.");
  return h("table", { class: "table compact" },
    h("thead", {}, h("tr", {}, ...["#", "Status", "Started", "Took"].map((t) => h("th", {}, t)))),
    h("tbody", {}, ...attempts.map((a) => [
      h("tr", { class: a.error ? "has-error" : null },
        h("td", { class: "num" }, String(a.attempt)),
        h("td", {}, badge(a.status)),
        h("td", {}, fmtClock(a.started_at)),
        h("td", { class: "num" }, fmtDuration(a.duration_seconds))),
      a.error ? h("tr", { class: "attempt-error" }, h("td", {}), h("td", { colspan: 3, class: "mono small error-text" }, a.error)) : null,
    ])));
}

/**
 * The panel's content for step `key`: `step` is its record (undefined if it has not started), `def` its
 * manifest entry, `steps` every step of the run; `select(key)` opens another step (or closes with the
 * same key) and `retry(key)` makes the Retry button.
 */
export function stepPanel({ key, step, steps, def, select, retry }) {
  const head = h("div", { class: "panel-head" }, h("h2", { class: "mono" }, key),
    h("button", { class: "close", "aria-label": "close", on: { click: () => select(key) } }, "×"));
  if (!step) return [head, h("p", { class: "muted" }, "This step has not started."), def ? [h("h3", {}, "Definition"), jsonBlock(def)] : null];
  const waiting = Boolean(step.waiting_signal) && !FINAL.has(step.status);
  const isChild = key.split(".").length === 3;
  const children = steps.filter((s) => s.step_key.startsWith(`${key}.`));
  return [
    head,
    h("p", {}, waiting ? badge("Waiting", `waiting for signal ${step.waiting_signal}`) : badge(step.status), " ",
      h("span", { class: "muted" }, def ? def.type : ""),
      RETRYABLE.has(step.status) && !isChild ? [" ", retry(key)] : null),
    RETRYABLE.has(step.status) && isChild ? h("p", { class: "muted small" }, "A ForEach child cannot be retried alone: retry its ForEach step.") : null,
    h("dl", { class: "facts" },
      h("dt", {}, "Started"), h("dd", {}, fmtTime(step.started_at)),
      h("dt", {}, "Finished"), h("dd", {}, fmtTime(step.finished_at)),
      h("dt", {}, "Duration"), h("dd", {}, fmtDuration(step.duration_seconds)),
      step.not_before ? [h("dt", {}, "Not before"), h("dd", {}, fmtTime(step.not_before))] : null),
    step.error ? [h("h3", {}, "Error"), h("pre", { class: "json error-block" }, step.error)] : null,
    why(step, def, steps),
    h("h3", {}, "Inputs"), jsonBlock(step.inputs, "step-inputs"),
    h("h3", {}, "Output"), jsonBlock(step.output, "step-output"),
    children.length ? [h("h3", {}, "Items"), h("ul", { class: "children" }, ...children.map((c) => h("li", {},
      h("a", { href: "#", class: "mono", on: { click: (e) => { e.preventDefault(); select(c.step_key); } } }, c.step_key), " ", badge(c.status))))] : null,
    h("h3", {}, `Attempts (${(step.attempts || []).length})`),
    attemptsTable(step.attempts || []),
  ];
}
