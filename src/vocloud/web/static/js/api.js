// The one way the page talks to the daemon: fetch() to /api/v1 with the bearer token.
// The token lives in this tab's sessionStorage only (never a cookie, never a URL): it is not
// sent by the browser on its own (no CSRF), and closing the tab or logging out forgets it.

const KEY = "vocloud.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() { return sessionStorage.getItem(KEY); }
export function setToken(t) { sessionStorage.setItem(KEY, t); }
export function forget() { sessionStorage.clear(); }

export async function api(path, { method = "GET", body, query } = {}) {
  const url = new URL("/api/v1" + path, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(url, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit", cache: "no-store", redirect: "error",
  });
  if (resp.status === 204) return null;
  let doc = null;
  try { doc = await resp.json(); } catch { doc = null; }
  if (!resp.ok) {
    const code = (doc && doc.error) || "HTTP" + resp.status;
    const msg = (doc && doc.message) || resp.statusText;
    throw new ApiError(resp.status, code, msg);
  }
  return doc;
}

let routes = null;

/** Whether the daemon serves a route (from its OpenAPI document), so that the page does not
 *  call a route an older daemon lacks (accounting and audit come with the operations work). */
export async function hasRoute(path) {
  if (routes === null) {
    try {
      const resp = await fetch("/openapi.json", { credentials: "omit", cache: "no-store" });
      routes = resp.ok ? new Set(Object.keys((await resp.json()).paths || {})) : undefined;
    } catch {
      routes = undefined;
    }
  }
  // without a document, try the route: the pages treat its 404 the same way
  return routes === undefined || routes.has("/api/v1" + path);
}
