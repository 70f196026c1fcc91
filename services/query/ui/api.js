// The query API as the page uses it, and the wording of its errors for people.
// The key travels only in the Authorization header; it is never put into a URL.

const BASE = "/api/b/v2";

export class ApiError extends Error {
  /** status: HTTP status (0 when the server could not be reached); code: the API's "error";
   * field: the input the server named ("field" of its body), when it named one. */
  constructor(status, code, message, field = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
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
    return new ApiError(resp.status, body.error, body.message || body.error, typeof body.field === "string" ? body.field : null);
  }
  if (body && body.error && typeof body.error === "object") { // {"error": {"code", "message"}}
    const code = String(body.error.code || body.error.error || `http_${resp.status}`);
    return new ApiError(resp.status, code, String(body.error.message || body.message || code));
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
  daily(event, days = 30, signal) {
    return this.request("GET", `/segments/daily?event=${encodeURIComponent(event)}&days=${encodeURIComponent(days)}`, undefined, { signal });
  }
  setActive(id, active) {
    return this.request("POST", `/events/${encodeURIComponent(id)}/${active ? "activate" : "deactivate"}`);
  }
  // Triggers: event-triggered push tasks (docs: the triggers API).
  triggers(page = 1, perPage = 50) { return this.request("GET", `/triggers?page=${encodeURIComponent(page)}&per_page=${encodeURIComponent(perPage)}`); }
  createTrigger(body) { return this.request("POST", "/triggers", body); }
  updateTrigger(id, changes) { return this.request("PATCH", `/triggers/${encodeURIComponent(id)}`, changes); }
  setTriggerActive(id, active) {
    return this.request("POST", `/triggers/${encodeURIComponent(id)}/${active ? "activate" : "deactivate"}`);
  }
  deleteTrigger(id) { return this.request("DELETE", `/triggers/${encodeURIComponent(id)}`); }
  triggerStats(id) { return this.request("GET", `/triggers/${encodeURIComponent(id)}/stats`); }
  triggerFires(id, limit = 20) { return this.request("GET", `/triggers/${encodeURIComponent(id)}/fires?limit=${encodeURIComponent(limit)}`); }
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

// ---------------------------------------------------------------- filter conditions <-> builder rows
//
// The builder edits `conditions` as rows; these two functions are the only translation between
// them, so saving a filter and reopening it rebuilds the same rows. A row is a plain object:
//   {kind: "event", event, op, n, m, win, lastN, lastUnit, from, to}
//      op: occurred | not_occurred | count_gte | count_lte | count_between (n, m: the bounds)
//      win: any | last (lastN + lastUnit m|h|d) | between (from, to: unix ms, half-open)
//   {kind: "deposit", currency, op: gte | lte | between, amount, amount2}   (amounts: decimal strings)
//   {kind: "raw", condition}   a condition the builder cannot show as a row: kept exactly as it is
// Number fields hold what the inputs hold (strings); rowToCondition turns them into the API's types.

export const MAX_CONDITIONS = 20; // the API's limit
export const EVENT_OPS = ["occurred", "not_occurred", "count_gte", "count_lte", "count_between"];
export const WINDOWS = ["any", "last", "between"];
export const UNITS = ["m", "h", "d"];
export const DEPOSIT_OPS = ["gte", "lte", "between"];

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isCount = (v) => Number.isSafeInteger(v) && v >= 0;
const isMs = (v) => Number.isSafeInteger(v) && v >= 0;
const hasOnly = (obj, allowed) => Object.keys(obj).every((k) => allowed.includes(k));
const LAST_RE = /^([0-9]{1,6})([mhd])$/;

export function newEventRow(event = "") {
  return { kind: "event", event, op: "occurred", n: "", m: "", win: "any", lastN: "", lastUnit: "h", from: null, to: null };
}

export function newDepositRow() {
  return { kind: "deposit", currency: "USD", op: "gte", amount: "", amount2: "" };
}

/** One condition of a filter as a builder row ({kind: "raw"} when no row can show it). */
export function conditionToRow(c) {
  const raw = { kind: "raw", condition: c };
  if (!isObject(c)) return raw;
  if ("deposit_sum" in c) {
    const d = c.deposit_sum;
    if (Object.keys(c).length !== 1 || !isObject(d) || typeof d.currency !== "string"
        || !hasOnly(d, ["currency", "gte", "lte"])) return raw;
    const has = (k) => typeof d[k] === "string";
    if (Object.keys(d).some((k) => k !== "currency" && !has(k))) return raw;
    if (has("gte") && has("lte")) return { kind: "deposit", currency: d.currency, op: "between", amount: d.gte, amount2: d.lte };
    if (has("gte")) return { kind: "deposit", currency: d.currency, op: "gte", amount: d.gte, amount2: "" };
    if (has("lte")) return { kind: "deposit", currency: d.currency, op: "lte", amount: d.lte, amount2: "" };
    return raw;
  }
  if (typeof c.event !== "string" || !hasOnly(c, ["event", "occurred", "count", "within"])) return raw;
  if ("occurred" in c && "count" in c) return raw;
  const row = newEventRow(c.event);
  if ("count" in c) {
    const k = c.count;
    if (!isObject(k) || !hasOnly(k, ["gte", "lte"]) || !Object.values(k).every(isCount)) return raw;
    if ("gte" in k && "lte" in k) Object.assign(row, { op: "count_between", n: String(k.gte), m: String(k.lte) });
    else if ("gte" in k) Object.assign(row, { op: "count_gte", n: String(k.gte) });
    else if ("lte" in k) Object.assign(row, { op: "count_lte", n: String(k.lte) });
    else return raw;
  } else {
    const occurred = "occurred" in c ? c.occurred : true;
    if (typeof occurred !== "boolean") return raw;
    row.op = occurred ? "occurred" : "not_occurred";
  }
  if ("within" in c) {
    const w = c.within;
    if (!isObject(w)) return raw;
    const keys = Object.keys(w).sort().join(",");
    if (keys === "last" && typeof w.last === "string" && LAST_RE.test(w.last)) {
      const [, n, unit] = LAST_RE.exec(w.last);
      Object.assign(row, { win: "last", lastN: n, lastUnit: unit });
    } else if (keys === "from,to" && isMs(w.from) && isMs(w.to)) {
      Object.assign(row, { win: "between", from: w.from, to: w.to });
    } else {
      return raw;
    }
  }
  return row;
}

function wholeNumber(text) {
  const t = String(text ?? "").trim();
  return /^-?[0-9]{1,15}$/.test(t) ? Number(t) : null;
}

/**
 * A row as the API's condition: {condition} when it is complete, else {missing: "words"}: what
 * the row still needs before it applies. Values the server judges (a 0 duration, a negative
 * count, a bad amount) are sent as they are, so its 422 message explains them.
 */
export function rowToCondition(row) {
  if (!row || row.kind === "raw") return row ? { condition: row.condition } : { missing: "nothing to apply" };
  if (row.kind === "deposit") {
    const currency = String(row.currency || "").trim().toUpperCase();
    const a = String(row.amount || "").trim(), b = String(row.amount2 || "").trim();
    if (!currency) return { missing: "type a currency, e.g. USD" };
    if (!a || (row.op === "between" && !b)) return { missing: "type an amount, e.g. 100.00" };
    const sum = { currency };
    if (row.op === "gte" || row.op === "between") sum.gte = a;
    if (row.op === "lte") sum.lte = a;
    if (row.op === "between") sum.lte = b;
    return { condition: { deposit_sum: sum } };
  }
  if (!row.event) return { missing: "pick an event" };
  const c = { event: row.event };
  if (row.op === "occurred" || row.op === "not_occurred") {
    c.occurred = row.op === "occurred";
  } else {
    const n = wholeNumber(row.n), m = wholeNumber(row.m);
    if (n === null || (row.op === "count_between" && m === null)) return { missing: "type how many times" };
    c.count = row.op === "count_gte" ? { gte: n } : row.op === "count_lte" ? { lte: n } : { gte: n, lte: m };
  }
  if (row.win === "last") {
    const n = wholeNumber(row.lastN);
    if (n === null) return { missing: "type how many minutes, hours or days" };
    c.within = { last: `${n}${UNITS.includes(row.lastUnit) ? row.lastUnit : "h"}` };
  } else if (row.win === "between") {
    if (!isMs(row.from) || !isMs(row.to)) return { missing: "pick both dates (UTC)" };
    c.within = { from: row.from, to: row.to };
  }
  return { condition: c };
}

/** A filter's conditions as rows. */
export function filterToRows(filter) {
  const list = isObject(filter) && Array.isArray(filter.conditions) ? filter.conditions : [];
  return list.slice(0, MAX_CONDITIONS).map(conditionToRow);
}

/** Rows as the filter's `conditions`: {conditions, rowOf (condition position -> row index), missing (row index -> words)}. */
export function rowsToConditions(rows) {
  const conditions = [], rowOf = [], missing = new Map();
  rows.forEach((row, i) => {
    const r = rowToCondition(row);
    if (r.condition !== undefined) { conditions.push(r.condition); rowOf.push(i); } else missing.set(i, r.missing);
  });
  return { conditions, rowOf, missing };
}

/** "2026-12-01T10:30" (a datetime-local value, read as UTC) -> unix ms; null when empty or bad. */
export function utcInputToMs(value) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$/.exec(String(value || ""));
  if (!m) return null;
  const ms = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0), +((m[7] || "0").padEnd(3, "0")));
  return Number.isFinite(ms) && ms >= 0 ? ms : null;
}

/** unix ms -> a datetime-local value in UTC (seconds only when there are any). */
export function msToUtcInput(ms) {
  if (!isMs(ms)) return "";
  const iso = new Date(ms).toISOString(); // 2026-12-01T10:30:00.000Z
  return ms % 1000 ? iso.slice(0, 23) : ms % 60000 ? iso.slice(0, 19) : iso.slice(0, 16);
}

const UNIT_WORDS = { m: ["minute", "minutes"], h: ["hour", "hours"], d: ["day", "days"] };

function windowWords(w) {
  if (!w) return "";
  if (typeof w.last === "string" && LAST_RE.test(w.last)) {
    const [, n, u] = LAST_RE.exec(w.last);
    return ` in the last ${n === "1" ? "" : `${n} `}${UNIT_WORDS[u][n === "1" ? 0 : 1]}`;
  }
  if (isMs(w.from) && isMs(w.to)) {
    const t = (ms) => new Date(ms).toISOString().slice(0, 16).replace("T", " ");
    return ` between ${t(w.from)} and ${t(w.to)} UTC`;
  }
  return ` within ${JSON.stringify(w)}`;
}

/** A condition in words, for the sentence under the count. */
export function describeCondition(c) {
  if (!isObject(c)) return JSON.stringify(c);
  if (isObject(c.deposit_sum)) {
    const d = c.deposit_sum, cur = String(d.currency || "").toUpperCase();
    if (d.gte !== undefined && d.lte !== undefined) return `deposits sum to ${d.gte}–${d.lte} ${cur}`;
    if (d.gte !== undefined) return `deposits sum to at least ${d.gte} ${cur}`;
    return `deposits sum to at most ${d.lte} ${cur}`;
  }
  const w = windowWords(c.within);
  if (isObject(c.count)) {
    const { gte, lte } = c.count;
    const times = (n) => `${n} time${n === 1 ? "" : "s"}`;
    const how = gte !== undefined && lte !== undefined ? `${gte}–${times(lte)}`
      : gte !== undefined ? `at least ${times(gte)}` : `at most ${times(lte)}`;
    return `${c.event} occurred ${how}${w}`;
  }
  return `${c.event} ${c.occurred === false ? "did not occur" : "occurred"}${w}`;
}
