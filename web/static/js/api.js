// HTTP API client: bearer token, JSON, problem documents as errors.

/** ApiError is a failed API call: status and the problem document's text. */
export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
  }
}

/** Api calls the hub's HTTP API with an operator token. */
export class Api {
  constructor(token) {
    this.token = token;
    /** onUnauthorized is called once a call answers 401 (revoked or wrong token). */
    this.onUnauthorized = () => {};
  }

  /** request sends a call and returns the decoded JSON (null for 204). */
  async request(method, path, body, signal, extra) {
    const headers = { Authorization: "Bearer " + this.token, ...extra };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, "hub unreachable", e.message);
    }
    if (res.status === 204) return null;
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!res.ok) {
      if (res.status === 401) this.onUnauthorized();
      throw new ApiError(res.status, data?.title || res.statusText || "error " + res.status, data?.detail || "");
    }
    return data;
  }

  get(path, signal) { return this.request("GET", path, undefined, signal); }
  post(path, body) { return this.request("POST", path, body ?? {}); }
  put(path, body, headers) { return this.request("PUT", path, body, undefined, headers); }

  /**
   * optional GETs an endpoint that may not exist in this hub version: it
   * returns undefined on 404 (no such endpoint) or 405, so the caller hides
   * the panel that needs it.
   */
  async optional(path, signal) {
    try {
      return await this.get(path, signal);
    } catch (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 405)) return undefined;
      throw e;
    }
  }
}

/** enc encodes a path segment. */
export const enc = encodeURIComponent;
