// Building the page without innerHTML: every value from the API goes in as text.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function setProps(el, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (name === "text") {
      el.textContent = String(value);
    } else if (name === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name === "value" || name === "checked" || name === "disabled" || name === "selected") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  return el;
}

/** An HTML element: h("a", {href: "#/runs", class: "x", on: {click}}, "text", child, ...). */
export function h(tag, props, ...children) {
  return append(setProps(document.createElement(tag), props), children);
}

/** An SVG element, same shape as h(). */
export function s(tag, props, ...children) {
  return append(setProps(document.createElementNS(SVG_NS, tag), props), children);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

export function pretty(value) {
  if (value === undefined) return "";
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

export function compact(value, max = 160) {
  let text = value === undefined ? "" : JSON.stringify(value);
  if (text === undefined) text = String(value);
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

/** A monospace JSON block. */
export function jsonBlock(value, cls = "") {
  return h("pre", { class: ["json", cls] }, pretty(value));
}

const STATUS_CLASS = /^[A-Za-z]+$/;

export function statusClass(status) {
  return STATUS_CLASS.test(String(status)) ? `st-${status}` : "st-unknown";
}

export function badge(status, extra) {
  return h("span", { class: ["badge", statusClass(status)] }, extra || status);
}

export function parseTime(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** Local time, "2026-11-24 08:12:03". */
export function fmtTime(iso) {
  const t = parseTime(iso);
  if (t === null) return "—";
  const d = new Date(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Local time of day with milliseconds, "08:12:03.120". */
export function fmtClock(iso) {
  const t = parseTime(iso);
  if (t === null) return "—";
  const d = new Date(t);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  const hours = Math.floor(m / 60);
  return hours < 48 ? `${hours} h ${m % 60} min` : `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function fmtAgo(iso) {
  const t = parseTime(iso);
  if (t === null) return "—";
  const s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function shortId(id) {
  return String(id).length > 12 ? String(id).slice(0, 12) + "…" : String(id);
}

/** A small notice: kind is "error", "info" or "muted". */
export function notice(kind, ...children) {
  return h("div", { class: ["notice", `notice-${kind}`], role: kind === "error" ? "alert" : null }, ...children);
}

/** "<what> is unavailable (<why>)"; `verb` is "are" for a plural `what` ("Schedules"). */
export function unavailable(what, err, verb = "is") {
  const reason = err && err.status ? ` (${err.status}${err.detail ? ": " + err.detail : ""})` : err ? ` (${err.message})` : "";
  return notice("muted", `${what} ${verb} unavailable${reason}`);
}

/** Wraps fn so that it runs once, `wait` ms after the last call. */
export function debounce(fn, wait) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), wait);
  };
}

/** Copies text: the async clipboard where allowed (secure contexts), a selected textarea otherwise. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // permission refused: fall through to the old way
    }
  }
  const area = h("textarea", { class: "offscreen", readonly: true, "aria-hidden": "true" });
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

/** Wraps an async fn so that calls never overlap: a call made while one runs makes it run once more after. */
export function serialized(fn) {
  let running = null;
  let again = false;
  const run = async () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await fn();
        } while (again);
      } finally {
        running = null;
      }
    })();
    return running;
  };
  return run;
}

const shown = new WeakMap();

/** Renders into `el` only when `data` differs from what it last showed, so typing and messages survive refreshes. */
export function renderChanged(el, data, render) {
  const key = JSON.stringify(data) ?? "undefined";
  if (shown.get(el) === key) return;
  shown.set(el, key);
  render();
}
