// The JSON API, by relative URL: the page is served at {mount}/, so "api/runs" is {mount}/api/runs.

const TOKEN_KEY = "floworchestrator.token";

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage refused (private mode): the token lasts until the page is left
  }
}

/** Called with the challenge when the API says 401 to a bearer-token scheme (the page shows a token field). */
let onBearerChallenge = () => {};
export function onAuthRequired(fn) {
  onBearerChallenge = fn;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

/**
 * fetch("api/" + path). `body` is sent as JSON when given (`undefined` sends nothing).
 * Resolves to the parsed JSON; rejects with ApiError (status, code, detail) on an error answer.
 */
export async function api(path, { method = "GET", body, raw } = {}) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload;
  if (raw !== undefined) {
    payload = raw;
    headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(`api/${path}`, { method, headers, body: payload, credentials: "same-origin", cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, "network", `the server did not answer (${err.message})`);
  }
  let data = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    if (response.status === 401 && /^bearer/i.test(response.headers.get("www-authenticate") || "")) onBearerChallenge();
    throw new ApiError(response.status, data && data.error, data && data.detail);
  }
  return data;
}

/** True for an answer meaning "this endpoint is not there (yet)" rather than "this thing failed". */
export function isMissingEndpoint(err) {
  return err instanceof ApiError && (err.status === 404 || err.status === 405 || err.status === 400);
}
