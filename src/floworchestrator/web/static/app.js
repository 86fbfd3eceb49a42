// The dashboard: hash routing between the views, and live updates.

import { h, notice, replace } from "./dom.js";
import { Live } from "./live.js";
import { flowsView, flowView } from "./views/flows.js";
import { overviewView } from "./views/overview.js";
import { runView } from "./views/run.js";
import { runsView } from "./views/runs.js";

function decode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text; // a malformed escape: use it as it is
  }
}

// [pattern, nav item, title, view]
const ROUTES = [
  [/^\/?$/, "overview", () => "Overview", (root) => overviewView(root)],
  [/^\/flows\/?$/, "flows", () => "Flows", (root) => flowsView(root)],
  [/^\/flows\/(.+)$/, "flows", (m) => `Flow ${decode(m[1])}`, (root, m) => flowView(root, decode(m[1]))],
  [/^\/runs\/?$/, "runs", () => "Runs", (root, m, params) => runsView(root, params)],
  [/^\/runs\/(.+)$/, "runs", (m) => `Run ${decode(m[1]).slice(0, 13)}`, (root, m) => runView(root, decode(m[1]))],
];

const root = document.getElementById("view");
const live = new Live(document.getElementById("live"));
let current = 0;
let currentView = null;

async function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search] = hash.split("?", 2);
  const params = new URLSearchParams(search || "");
  const token = ++current;
  for (const [pattern, nav, title, make] of ROUTES) {
    const m = path.match(pattern);
    if (!m) continue;
    document.title = `${title(m)} · floworchestrator`;
    for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
    if (currentView && currentView.destroy) currentView.destroy();
    const view = (currentView = make(root, m, params));
    live.setView(view);
    try {
      await view.refresh();
    } catch (err) {
      if (token === current) root.append(notice("error", `Something went wrong: ${err.message}`));
    }
    return;
  }
  if (currentView && currentView.destroy) currentView.destroy();
  currentView = null;
  live.setView(null);
  replace(root, h("h1", {}, "Not found"), h("p", {}, "No page here. ", h("a", { href: "#/" }, "Back to the overview")));
}

window.addEventListener("hashchange", route);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) live.refreshView();
});
live.start();
route();
