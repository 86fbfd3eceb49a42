// The JSON API, by relative URL: the page is served at {mount}/, so "api/runs" is {mount}/api/runs.

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

/**
 * With a bearer token the browser signs in once (the sign-in page keeps the token in an HttpOnly
 * cookie, sent with every request and the event stream); when the API says 401 with a Bearer
 * challenge the cookie has gone, so the page goes back to the sign-in form.
 */
function signInAgain() {
  location.assign("signin");
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
    if (response.status === 401 && /^bearer/i.test(response.headers.get("www-authenticate") || "")) signInAgain();
    throw new ApiError(response.status, data && data.error, data && data.detail);
  }
  return data;
}

/** True for an answer meaning "this endpoint is not there (yet)" rather than "this thing failed". */
export function isMissingEndpoint(err) {
  return err instanceof ApiError && (err.status === 404 || err.status === 405 || err.status === 400);
}
