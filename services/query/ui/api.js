// The query API as the page uses it, and the wording of its errors for people.
// The key travels only in the Authorization header; it is never put into a URL.

const BASE = "/api/b/v2";

export class ApiError extends Error {
  /** status: HTTP status (0 when the server could not be reached); code: the API's "error". */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Words for the machine codes we know; anything else shows the server's own message.
const FRIENDLY = {
  unauthorized: "This API key was not accepted. Check it and sign in again.",
  rate_limited: "Too many requests right now. Wait a moment and try again.",
  unavailable: "The data store is not answering right now. The page keeps what it shows and tries again.",
};

function detailToWords(detail) {
  // FastAPI's default 422 body: {"detail": [{"loc": [...], "msg": "..."}]}
  if (!Array.isArray(detail)) return String(detail);
  return detail.map((d) => {
    const where = (d.loc || []).filter((p) => p !== "body").join(".");
    return where ? `${where}: ${d.msg}` : d.msg;
  }).join("; ");
}

export function describeError(err) {
  if (!(err instanceof ApiError)) return `Something went wrong in the page: ${err && err.message ? err.message : err}`;
  if (err.status === 0) return "Cannot reach the query service. Check that it is running and try again.";
  if (FRIENDLY[err.code]) return FRIENDLY[err.code];
  if (err.status >= 500) return `The server had a problem (HTTP ${err.status}). Try again in a moment.`;
  if (err.status === 404 && (err.code === "not_found" || err.code === "not_found_endpoint")) {
    return "This server does not offer that action (HTTP 404): is the query service up to date?";
  }
  if (err.status === 405) return "This server does not offer that action (HTTP 405): is the query service up to date?";
  return err.message || `The request was refused (HTTP ${err.status}).`;
}

async function toApiError(resp) {
  let body = null;
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  if (body && typeof body.error === "string") {
    return new ApiError(resp.status, body.error, body.message || body.error);
  }
  if (body && body.detail !== undefined) {
    const code = resp.status === 404 ? "not_found_endpoint" : "invalid_request";
    return new ApiError(resp.status, code, detailToWords(body.detail));
  }
  return new ApiError(resp.status, `http_${resp.status}`, `The request was refused (HTTP ${resp.status}).`);
}

export class QueryApi {
  constructor(apiKey) {
    this.apiKey = apiKey;
  }

  async request(method, path, body, { raw = false, signal } = {}) {
    const headers = { Authorization: `Bearer ${this.apiKey}`, Accept: raw ? "application/x-ndjson" : "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer", signal };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(BASE + path, init);
    } catch (e) {
      if (e && e.name === "AbortError") throw e;
      throw new ApiError(0, "network", String(e));
    }
    if (!resp.ok) throw await toApiError(resp);
    if (raw) return resp;
    if (resp.status === 204) return null;
    const text = await resp.text();
    return text ? JSON.parse(text) : null;
  }

  segmentEvents() { return this.request("GET", "/segments/events"); }
  count(filter, signal) { return this.request("POST", "/segments/count", filter, { signal }); }
  exportStream(filter) { return this.request("POST", "/segments/export", filter, { raw: true }); }
  rejected() { return this.request("GET", "/postbacks/rejected"); }
  device(installId) { return this.request("GET", `/devices/${encodeURIComponent(installId)}`); }
  verdict(installId, filter) { return this.request("POST", "/segments/verdict", { ...filter, install_id: installId }); }
  createEvent(name, code) { return this.request("POST", "/events", { name, code }); }
  renameEvent(id, name) { return this.request("PUT", `/events/${encodeURIComponent(id)}`, { name }); }
  deleteEvent(id) { return this.request("DELETE", `/events/${encodeURIComponent(id)}`); }
  savedSegments() { return this.request("GET", "/segments?per_page=100"); }
  saveSegment(name, filter) { return this.request("POST", "/segments", { name, filter }); }
  renameSegment(id, name) { return this.request("PUT", `/segments/${encodeURIComponent(id)}`, { name }); }
  deleteSegment(id) { return this.request("DELETE", `/segments/${encodeURIComponent(id)}`); }
  countSegment(id) { return this.request("POST", `/segments/${encodeURIComponent(id)}/count`); }
  setActive(id, active) {
    return this.request("POST", `/events/${encodeURIComponent(id)}/${active ? "activate" : "deactivate"}`);
  }
}

function csvField(value) {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

/**
 * Turns a streamed NDJSON export into CSV text chunks (header `install_id`, RFC 4180 quoting)
 * while it arrives, so the page never holds one big array of ids; calls onProgress(n) now and
 * then. Returns {parts, count}: the parts go straight into a Blob.
 */
export async function exportAsCsv(resp, onProgress) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  const parts = ["install_id\r\n"];
  let pending = "";
  let count = 0;
  let lastReport = 0;
  const take = (lines) => {
    const out = [];
    for (const line of lines) {
      const trimmed = line.trim();
      if (!trimmed) continue;
      const rec = JSON.parse(trimmed);
      if (rec && typeof rec.install_id === "string") out.push(csvField(rec.install_id) + "\r\n");
    }
    count += out.length;
    if (out.length) parts.push(out.join(""));
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    const lines = pending.split("\n");
    pending = lines.pop();
    take(lines);
    if (count - lastReport >= 5000) { lastReport = count; onProgress(count); }
  }
  pending += decoder.decode();
  take([pending]);
  onProgress(count);
  return { parts, count };
}
