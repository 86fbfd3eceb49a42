// Links and bits shared by the views.

import { h, shortId } from "../dom.js";

/** Step statuses a step does not leave on its own. */
export const FINAL = new Set(["Succeeded", "Failed", "Skipped", "Cancelled", "TimedOut"]);

export function runHref(runId) {
  return `#/runs/${encodeURIComponent(runId)}`;
}

export function flowHref(flowId) {
  return `#/flows/${encodeURIComponent(flowId)}`;
}

export function runLink(run) {
  return h("a", { href: runHref(run.run_id), class: "mono", title: run.run_id }, shortId(run.run_id));
}

export function flowLink(flowId) {
  return h("a", { href: flowHref(flowId) }, flowId);
}
