// The Segments page. Plain ES modules, no build step; everything is drawn with DOM calls
// (textContent, never innerHTML), so event names from users cannot inject markup.
import {
  ApiError, MAX_CONDITIONS, QueryApi, describeCondition, describeError, exportAsCsv, filterToRows, msToUtcInput,
  newDepositRow, newEventRow, rowsToConditions, utcInputToMs,
} from "./api.js";
import { drawDailyBars, drawDepositFunnel, drawEventBars } from "./chart.js";
import { h, showMessage } from "./dom.js";

const KEY_STORAGE = "pbseg.apiKey"; // sessionStorage only: gone when the tab closes
const FILTER_STORAGE = "pbseg.filter"; // the filter survives a reload of the tab, too
const MAX_FILTER_CODES = 64; // the API's limit per include/exclude list
const POLL_MS = 3000;
const DAILY_DAYS = 30;
const DAY_MS = 86_400_000;
const CODE_RE = /^[A-Za-z0-9_]{1,64}$/;
const fmt = new Intl.NumberFormat("en-US");

const $ = (id) => document.getElementById(id);
const state = {
  api: null,
  events: [],
  include: [],
  exclude: [],
  match: "all",
  conditions: [], // builder rows (api.js: filterToRows / rowsToConditions)
  dailyEvent: null, // the event of "Devices per day"
  dailySeq: 0,
  dailyKey: null, // the answer drawn last: a poll redraws only on change
  pendingDelete: null, // event id whose delete waits for a confirming click
  editing: null, // event id whose name is being edited
  deviceId: null, // the device shown by "Look up a device"
  verdictSeq: 0, // only the newest verdict is shown
  countSeq: 0,
  countAbort: null,
  countTimer: null,
  pollTimer: null,
  refreshing: false,
};

// The Triggers card (triggers.js) is loaded on its own: when it cannot be (a query service that
// does not serve it yet) the rest of the page works and the card says why. Until it has loaded
// these do nothing; mountTriggers catches up with a session that started before.
const triggers = { refresh: async () => {}, eventsChanged: () => {}, reset: () => {} };
import("./triggers.js").then(({ mountTriggers }) => {
  Object.assign(triggers, mountTriggers({ api: () => state.api, events: () => state.events, builderFilter: () => filterBody(), handle }));
}).catch((err) => {
  showMessage($("triggers-error"), `The Triggers part of the page could not be loaded (${err && err.message ? err.message : err}): is the query service up to date?`);
  $("triggers-body").replaceChildren();
});

// ---------------------------------------------------------------- words

function ordinalWord(n) {
  const s = ["th", "st", "nd", "rd"], v = n % 100;
  return n + (s[(v - 20) % 10] || s[v] || s[0]);
}

function typeLabel(e) {
  if (e.deposit_ordinal > 1) return `${ordinalWord(e.deposit_ordinal)} deposit`;
  if (e.type === "CUSTOM") return "Custom";
  return "System";
}

function maskKey(key) {
  return key.length > 10 ? `${key.slice(0, 8)}…${key.slice(-2)}` : "…";
}

// ---------------------------------------------------------------- sign in / out

async function signIn(key, { silent = false } = {}) {
  const api = new QueryApi(key);
  $("signin-button").disabled = true;
  try {
    state.events = normaliseEvents(await api.segmentEvents());
  } catch (err) {
    $("signin-button").disabled = false;
    const refused = err instanceof ApiError && err.status === 401;
    if (refused) sessionStorage.removeItem(KEY_STORAGE); // a network hiccup keeps the key for a retry
    if (!silent || !refused) {
      showMessage($("signin-error"), describeError(err));
    }
    return;
  }
  $("signin-button").disabled = false;
  sessionStorage.setItem(KEY_STORAGE, key);
  state.api = api;
  $("api-key").value = "";
  showMessage($("signin-error"), "");
  $("signin-card").hidden = true;
  $("app").hidden = false;
  $("session").hidden = false;
  $("keyhint").textContent = `key ${maskKey(key)}`;
  restoreFilter();
  renderEvents(); // also picks the daily chart's event and fetches it
  renderConditions();
  scheduleCount(0);
  refreshRejected();
  refreshSaved();
  triggers.refresh();
  stamp();
  startPolling();
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  sessionStorage.removeItem(FILTER_STORAGE);
  state.api = null;
  state.events = [];
  state.include = [];
  state.exclude = [];
  state.conditions = [];
  state.dailyEvent = null;
  state.dailyKey = null;
  state.editing = null;
  state.pendingDelete = null;
  state.deviceId = null;
  $("device-result").hidden = true;
  triggers.reset();
  stopPolling();
  $("app").hidden = true;
  $("session").hidden = true;
  $("signin-card").hidden = false;
  showMessage($("signin-error"), message || "");
  $("api-key").focus();
}

/** A rejected key ends the session everywhere; other errors are shown where they happened. */
function handle(err, node, prefix = "") {
  if (err instanceof ApiError && err.status === 401) {
    signOut("Your API key is no longer accepted (it may have been revoked). Sign in again.");
    return;
  }
  if (err && err.name === "AbortError") return;
  showMessage(node, prefix + describeError(err));
}

// ---------------------------------------------------------------- refresh loop

function normaliseEvents(body) {
  const list = body && Array.isArray(body.events) ? body.events : [];
  return list.map((e) => ({ ...e, devices: Number(e.devices) || 0, status: e.status === 0 ? 0 : 1 }));
}

async function refreshEvents() {
  try {
    const events = normaliseEvents(await state.api.segmentEvents());
    showMessage($("global-error"), ""); // action errors (events-error) stay until the next action
    // Redraw only on change: a poll must not close an open menu or steal focus for nothing.
    if (JSON.stringify(events) !== JSON.stringify(state.events)) {
      state.events = events;
      renderEvents();
    }
    return true;
  } catch (err) {
    handle(err, $("global-error"), "The page could not refresh: ");
    return false;
  }
}

async function refreshRejected() {
  if (!state.api) return;
  try {
    const body = await state.api.rejected();
    showMessage($("rejected-error"), "");
    renderRejected(body && Array.isArray(body.rejected) ? body.rejected : []);
  } catch (err) {
    handle(err, $("rejected-error"));
  }
}

async function refreshAll() {
  if (!state.api || state.refreshing) return;
  state.refreshing = true;
  try {
    const fresh = await refreshEvents();
    if (fresh) scheduleCount(0);
    await refreshRejected();
    await triggers.refresh();
    if (fresh) await refreshSaved();
    if (fresh) await refreshDaily();
    if (fresh) stamp(); // "updated" tells the time of the last good data, not the last attempt
  } finally {
    state.refreshing = false;
  }
}

function stamp() {
  $("updated").textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
}

function startPolling() {
  stopPolling();
  state.pollTimer = setInterval(() => {
    if ($("live").checked && !document.hidden) refreshAll();
  }, POLL_MS);
}

function stopPolling() {
  if (state.pollTimer) clearInterval(state.pollTimer);
  state.pollTimer = null;
}

// ---------------------------------------------------------------- events table

function renderEvents() {
  const body = $("events-body");
  if (!state.events.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "muted", text: "No events." })));
  } else {
    // While a name is being edited the rows stay as they are; counts catch up after Save/Cancel.
    const editing = state.editing !== null && body.querySelector("input.rename-input");
    if (!editing) body.replaceChildren(...state.events.map(eventRow));
  }
  renderStats();
  renderFilterOptions();
  fillDailySelect();
  triggers.eventsChanged();
  drawEventBars($("chart-events"), state.events);
  drawDepositFunnel($("chart-funnel"), state.events);
}

function eventRow(e) {
  const custom = e.type === "CUSTOM";
  const url = e.postback_url || "";
  // Derived rows (dep_2, dep_3, ...) have no URL: nobody posts them, the system counts them from dep.
  let urlCell;
  if (url) {
    const copy = h("button", { type: "button", class: "copy small-btn", "aria-label": `Copy the postback URL of ${e.code}`, text: "Copy" });
    copy.addEventListener("click", () => copyText(url, copy));
    urlCell = h("td", { class: "url-cell" }, h("div", { class: "url-box" }, h("code", { class: "url", title: url, text: shortUrl(url) }), copy));
  } else {
    urlCell = h("td", { class: "url-cell derived" }, h("span", { class: "muted small", text: "counted from dep (no URL)" }));
  }
  const actions = h("td", { class: "actions" });
  if (custom) {
    const toggle = h("button", {
      type: "button", class: "small-btn toggle",
      text: e.status === 1 ? "Deactivate" : "Activate",
      onclick: () => setActive(e, e.status !== 1, toggle),
    });
    actions.append(toggle);
    if (state.pendingDelete === e.id) {
      actions.append(
        h("button", { type: "button", class: "small-btn danger confirm-delete", text: "Confirm delete", onclick: (ev) => deleteEvent(e, ev.currentTarget) }),
        h("button", { type: "button", class: "small-btn cancel-delete", text: "Cancel", onclick: () => { state.pendingDelete = null; renderEvents(); } }),
      );
    } else {
      actions.append(h("button", { type: "button", class: "small-btn delete", text: "Delete", onclick: () => { state.pendingDelete = e.id; renderEvents(); } }));
    }
  } else {
    actions.append(h("span", { class: "muted small", text: "built in" }));
  }
  return h("tr", { "data-code": e.code, "data-type": e.type, class: e.status === 1 ? "" : "inactive" },
    nameCell(e),
    h("td", {}, h("code", { text: e.code })),
    h("td", { class: "type" }, h("span", { class: `tag ${custom ? "tag-custom" : /^dep/.test(e.code) ? "tag-dep" : "tag-system"}`, text: typeLabel(e) })),
    h("td", { class: "status" }, h("span", { class: `pill ${e.status === 1 ? "on" : "off"}`, text: e.status === 1 ? "Active" : "Inactive" })),
    h("td", { class: "num devices", text: fmt.format(e.devices) }),
    urlCell,
    actions,
  );
}

/** The end of a postback URL (`status=<code>_<account>`, `&key=`) tells URLs apart: keep it,
 * and the host; shorten the middle. The full URL is in the title and is what Copy copies. */
function shortUrl(url, max = 46) {
  const bare = url.replace(/^https?:\/\//, "");
  if (bare.length <= max) return bare;
  const host = bare.split("/")[0].slice(0, 22);
  return `${host}…${bare.slice(-(max - host.length - 1))}`;
}

function nameCell(e) {
  if (e.type !== "CUSTOM") return h("td", { class: "name", text: e.name || e.code });
  if (state.editing === e.id) {
    const input = h("input", { type: "text", class: "rename-input", maxlength: 128, "aria-label": `New name of ${e.code}` });
    input.value = e.name || "";
    const form = h("form", { class: "rename", novalidate: true },
      input,
      h("button", { type: "submit", class: "small-btn primary save-rename", text: "Save" }),
      h("button", { type: "button", class: "small-btn cancel-rename", text: "Cancel", onclick: () => stopEditing() }),
    );
    form.addEventListener("submit", (ev) => { ev.preventDefault(); renameEvent(e, input.value.trim(), form); });
    input.addEventListener("keydown", (ev) => { if (ev.key === "Escape") stopEditing(); });
    setTimeout(() => { input.focus(); input.select(); }, 0);
    return h("td", { class: "name editing" }, form);
  }
  return h("td", { class: "name" },
    h("span", { class: "name-text", text: e.name || e.code }),
    h("button", { type: "button", class: "rename-btn", title: "Rename", "aria-label": `Rename ${e.code}`, text: "✎",
      onclick: () => { state.editing = e.id; renderEvents(); } }),
  );
}

function stopEditing() {
  state.editing = null;
  renderEvents();
}

async function renameEvent(e, name, form) {
  if (!name) return showMessage($("events-error"), "An event needs a name; to remove the event use Delete.");
  if (name === e.name) return stopEditing();
  for (const b of form.querySelectorAll("button")) b.disabled = true;
  try {
    await state.api.renameEvent(e.id, name);
    showMessage($("events-error"), "");
    state.editing = null;
    await refreshEvents();
    renderEvents();
  } catch (err) {
    handle(err, $("events-error"));
    for (const b of form.querySelectorAll("button")) b.disabled = false;
  }
}

async function copyText(text, button) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch (_) {
    // Plain-http hosts other than localhost have no async clipboard: fall back to a selection.
    const area = h("textarea", { class: "offscreen", readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
    area.remove();
  }
  button.textContent = ok ? "Copied" : "Copy blocked";
  button.classList.toggle("copied", ok);
  setTimeout(() => { button.textContent = "Copy"; button.classList.remove("copied"); }, 2500);
}

async function setActive(e, active, button) {
  button.disabled = true;
  showMessage($("events-error"), "");
  try {
    await state.api.setActive(e.id, active);
    await refreshEvents();
  } catch (err) {
    handle(err, $("events-error"));
    button.disabled = false;
  }
}

async function deleteEvent(e, button) {
  button.disabled = true;
  showMessage($("events-error"), "");
  try {
    await state.api.deleteEvent(e.id);
    state.pendingDelete = null;
    showMessage($("create-ok"), `Deleted “${e.name || e.code}”.`);
    await refreshEvents();
    scheduleCount(0);
  } catch (err) {
    handle(err, $("events-error"));
    button.disabled = false;
  }
}

function renderStats() {
  const by = new Map(state.events.map((e) => [e.code, e]));
  const all = by.get("install") ? by.get("install").devices : 0;
  const pct = (n) => (all ? `${((100 * n) / all).toFixed(1)}% of devices` : "");
  const reg = by.get("reg") ? by.get("reg").devices : 0;
  const dep = by.get("dep") ? by.get("dep").devices : 0;
  const custom = state.events.filter((e) => e.type === "CUSTOM");
  $("stat-devices").textContent = fmt.format(all);
  $("stat-reg").textContent = fmt.format(reg);
  $("stat-reg-sub").textContent = pct(reg);
  $("stat-dep").textContent = fmt.format(dep);
  $("stat-dep-sub").textContent = pct(dep);
  $("stat-custom").textContent = fmt.format(custom.length);
  const active = custom.filter((e) => e.status === 1).length;
  $("stat-custom-sub").textContent = custom.length ? `${active} active` : "create one below";
}

// ---------------------------------------------------------------- create

function validateNew(name, code) {
  if (!name) return "Give the event a name, e.g. “Lead form sent”.";
  if (!code) return "Give the event a code: the word senders put in the postback URL, e.g. “lead”.";
  if (!CODE_RE.test(code)) {
    return `The code “${code}” can't be used: only letters, digits and _ are allowed, up to 64 characters.`;
  }
  return null;
}

async function createEvent(ev) {
  ev.preventDefault();
  const name = $("new-name").value.trim();
  const code = $("new-code").value.trim();
  showMessage($("create-ok"), "");
  const problem = validateNew(name, code);
  if (problem) return showMessage($("create-error"), problem);
  showMessage($("create-error"), "");
  $("create-button").disabled = true;
  try {
    await state.api.createEvent(name, code);
    $("new-name").value = "";
    $("new-code").value = "";
    showMessage($("create-ok"), `Created “${name}”. Postbacks with status ${code}_<account> are accepted within a second.`);
    await refreshEvents();
  } catch (err) {
    handle(err, $("create-error"));
  } finally {
    $("create-button").disabled = false;
  }
}

// ---------------------------------------------------------------- filter builder

function saveFilter() {
  sessionStorage.setItem(FILTER_STORAGE, JSON.stringify(filterBody()));
}

function restoreFilter() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(FILTER_STORAGE) || "null");
    if (!saved) return;
    const codes = (v) => (Array.isArray(v) ? v.filter((c) => typeof c === "string").slice(0, MAX_FILTER_CODES) : []);
    state.include = codes(saved.event_include);
    state.exclude = codes(saved.event_exclude);
    state.match = saved.include_match === "any" ? "any" : "all";
    state.conditions = filterToRows(saved);
  } catch (_) { /* a damaged entry is ignored */ }
  for (const radio of document.querySelectorAll('input[name="include-match"]')) radio.checked = radio.value === state.match;
}

/** The filter as the API takes it; rows that are not complete yet are left out (and say why). */
function filterBody() {
  const body = { event_include: [...state.include], event_exclude: [...state.exclude], include_match: state.match };
  const { conditions } = rowsToConditions(state.conditions);
  if (conditions.length) body.conditions = conditions;
  return body;
}

function renderFilterOptions() {
  const known = new Set(state.events.map((e) => e.code));
  // An event deleted elsewhere leaves the filter rather than breaking the count.
  state.include = state.include.filter((c) => known.has(c));
  state.exclude = state.exclude.filter((c) => known.has(c));
  fillSelect($("include-add"), "+ add an event that occurred");
  fillSelect($("exclude-add"), "+ add an event that did NOT occur");
  renderChips($("include-chips"), state.include, "include");
  renderChips($("exclude-chips"), state.exclude, "exclude");
  fillConditionEvents();
  renderFilterText();
}

function fillSelect(select, prompt) {
  if (document.activeElement === select && select.options.length > 1) return; // the user is choosing
  const taken = new Set([...state.include, ...state.exclude]);
  const options = [h("option", { value: "", text: prompt })];
  for (const e of state.events) {
    if (taken.has(e.code)) continue;
    options.push(h("option", { value: e.code, text: `${e.name || e.code} (${e.code}) · ${fmt.format(e.devices)}` }));
  }
  select.replaceChildren(...options);
  select.value = "";
  select.disabled = options.length === 1;
}

function renderChips(container, codes, kind) {
  if (!codes.length) {
    container.replaceChildren(h("span", { class: "muted small chip-empty", text: kind === "include" ? "any device (no condition)" : "no condition" }));
    return;
  }
  container.replaceChildren(...codes.map((code) => h("span", { class: `chip ${kind}`, "data-code": code },
    h("span", { text: code }),
    h("button", {
      type: "button", class: "chip-x", "aria-label": `remove ${code}`, text: "×",
      onclick: () => { removeCode(kind, code); },
    }),
  )));
}

function addCode(kind, code) {
  if (!code) return;
  const list = kind === "include" ? state.include : state.exclude;
  if (list.length >= MAX_FILTER_CODES) {
    renderFilterOptions();
    return showMessage($("filter-error"), `A filter takes at most ${MAX_FILTER_CODES} events per list.`);
  }
  if (!list.includes(code)) list.push(code);
  renderFilterOptions();
  scheduleCount();
}

function removeCode(kind, code) {
  if (kind === "include") state.include = state.include.filter((c) => c !== code);
  else state.exclude = state.exclude.filter((c) => c !== code);
  renderFilterOptions();
  scheduleCount();
}

function renderFilterText() {
  const joiner = state.match === "all" ? " and " : " or ";
  const inc = state.include.length ? `on which ${state.include.join(joiner)} occurred` : "";
  const exc = state.exclude.length ? `on which ${state.exclude.join(" and ")} did not occur` : "";
  const conds = rowsToConditions(state.conditions).conditions.map(describeCondition);
  const where = conds.length ? `${inc || exc ? ", " : " "}where ${conds.join(", and ")}` : "";
  let text;
  if (!inc && !exc && !conds.length) text = "All devices of the account.";
  else if (inc && exc) text = `Devices ${inc}, and ${exc}${where}.`;
  else text = `Devices ${inc || exc}${where}.`;
  $("filter-sentence").textContent = text;
  $("filter-json").textContent = JSON.stringify(filterBody(), null, 2);
  renderVerdict();
}

/** Debounced, and only the newest answer is shown: a slow old count never overwrites a new one. */
function scheduleCount(delay = 200) {
  saveFilter();
  if (state.countTimer) clearTimeout(state.countTimer);
  state.countTimer = setTimeout(runCount, delay);
}

async function runCount() {
  if (!state.api) return;
  if (state.countAbort) state.countAbort.abort();
  const abort = new AbortController();
  state.countAbort = abort;
  const seq = ++state.countSeq;
  const { rowOf } = rowsToConditions(state.conditions); // condition position -> row, for the server's message
  $("filter-count").classList.add("stale");
  try {
    const body = await state.api.count(filterBody(), abort.signal);
    if (seq !== state.countSeq) return;
    $("filter-count").textContent = fmt.format(body.count);
    $("filter-unit").textContent = body.count === 1 ? "device" : "devices";
    $("filter-count").dataset.count = String(body.count);
    $("filter-count").classList.remove("stale");
    // The count is exact for every postback answered before as_of (the processor's freshness).
    $("filter-as-of").textContent = body.as_of == null ? "not caught up yet"
      : `exact as of ${new Date(body.as_of).toLocaleTimeString([], { hour12: false })}`;
    $("filter-as-of").dataset.asOf = body.as_of == null ? "" : String(body.as_of);
    showMessage($("filter-error"), "");
    showConditionError(null);
  } catch (err) {
    if (seq !== state.countSeq) return;
    if (err instanceof ApiError && err.status === 422) countUnknown(); // the old number is not this filter's
    if (err instanceof ApiError && (err.code === "invalid_condition" || err.code === "unsupported_condition")) {
      showMessage($("filter-error"), "");
      showConditionError(err.message, rowOf);
      return;
    }
    showConditionError(null);
    handle(err, $("filter-error"));
  }
}

function countUnknown() {
  $("filter-count").textContent = "–";
  $("filter-unit").textContent = "devices";
  delete $("filter-count").dataset.count;
  $("filter-count").classList.remove("stale");
  $("filter-as-of").textContent = "";
  $("filter-as-of").dataset.asOf = "";
}

/** The server's words (they name the condition by position: conditions[i]) next to the builder,
 * and the row they are about marked. */
function showConditionError(message, rowOf = []) {
  showMessage($("conditions-error"), message || "");
  for (const node of $("condition-rows").children) node.classList.remove("invalid");
  const m = message ? /conditions\[(\d+)\]/.exec(message) : null;
  const row = m ? rowOf[Number(m[1])] : undefined;
  if (row !== undefined) {
    const node = $("condition-rows").querySelector(`.cond-row[data-index="${row}"]`);
    if (node) node.classList.add("invalid");
  }
}

// ---------------------------------------------------------------- conditions (rows of the builder)

const EVENT_OP_WORDS = [["occurred", "occurred"], ["not_occurred", "did not occur"], ["count_gte", "count at least"],
  ["count_lte", "count at most"], ["count_between", "count between"]];
const WINDOW_WORDS = [["any", "any time"], ["last", "in the last"], ["between", "between"]];
const UNIT_WORDS = [["m", "minutes"], ["h", "hours"], ["d", "days"]];
const SUM_OP_WORDS = [["gte", "at least"], ["lte", "at most"], ["between", "between"]];

function options(select, pairs, value) {
  select.replaceChildren(...pairs.map(([v, text]) => h("option", { value: v, text })));
  select.value = value;
  return select;
}

function renderConditions() {
  $("condition-rows").replaceChildren(...state.conditions.map(conditionRowNode));
  fillConditionEvents();
  syncConditions();
}

/** Shows what each row's choices need, says what an incomplete row still needs, updates the sentence. */
function syncConditions() {
  const { missing } = rowsToConditions(state.conditions);
  for (const node of $("condition-rows").children) {
    const i = Number(node.dataset.index);
    const row = state.conditions[i];
    if (!row) continue;
    const p = node._parts || {};
    if (row.kind === "event") {
      const count = row.op.startsWith("count_");
      p.n.hidden = !count;
      p.times.hidden = !count;
      p.and.hidden = p.m.hidden = row.op !== "count_between";
      p.lastN.hidden = p.unit.hidden = row.win !== "last";
      p.from.hidden = p.and2.hidden = p.to.hidden = p.utc.hidden = row.win !== "between";
    } else if (row.kind === "deposit") {
      p.and.hidden = p.amount2.hidden = row.op !== "between";
    }
    const words = missing.get(i);
    node.classList.toggle("incomplete", words !== undefined);
    node.classList.remove("invalid");
    if (p.note) p.note.textContent = words ? `not applied yet: ${words}` : "";
  }
  const full = state.conditions.length >= MAX_CONDITIONS;
  $("add-condition").disabled = full;
  $("add-deposit-sum").disabled = full;
  renderFilterText();
}

function conditionChanged() {
  syncConditions();
  scheduleCount();
}

function numberInput(cls, label, value, min) {
  const input = h("input", { type: "number", class: `cond-num ${cls}`, min, step: 1, inputmode: "numeric", "aria-label": label, placeholder: "N" });
  input.value = value ?? "";
  return input;
}

function conditionRowNode(row, i) {
  const node = h("div", { class: `cond-row ${row.kind}`, "data-index": i, "data-kind": row.kind, role: "group", "aria-label": `condition ${i + 1}` });
  const note = h("span", { class: "cond-note muted small" });
  const remove = h("button", {
    type: "button", class: "chip-x cond-remove", "aria-label": `remove condition ${i + 1}`, text: "×",
    onclick: () => { state.conditions.splice(i, 1); renderConditions(); scheduleCount(); },
  });
  const on = (el, kind, fn) => { el.addEventListener(kind, (ev) => { fn(ev.target.value); conditionChanged(); }); return el; };
  if (row.kind === "raw") {
    node.append(h("code", { class: "cond-raw", text: JSON.stringify(row.condition) }),
      h("span", { class: "muted small", text: "kept as saved (not editable here)" }), remove);
    node._parts = { note };
    return node;
  }
  if (row.kind === "deposit") {
    const currency = on(h("input", { type: "text", class: "cond-currency", maxlength: 3, spellcheck: "false", "aria-label": "currency", placeholder: "USD" }),
      "input", (v) => {
        row.currency = v.trim().toUpperCase();
        if (currency.value !== currency.value.toUpperCase()) currency.value = currency.value.toUpperCase(); // as it is sent
      });
    currency.value = row.currency || "";
    const op = on(options(h("select", { class: "cond-sum-op", "aria-label": "deposit sum bound" }), SUM_OP_WORDS, row.op), "change", (v) => { row.op = v; });
    const amount = on(h("input", { type: "text", class: "cond-amount", inputmode: "decimal", spellcheck: "false", "aria-label": "amount", placeholder: "100.00" }),
      "input", (v) => { row.amount = v.trim(); });
    amount.value = row.amount || "";
    const and = h("span", { class: "cond-word", text: "and" });
    const amount2 = on(h("input", { type: "text", class: "cond-amount2", inputmode: "decimal", spellcheck: "false", "aria-label": "upper amount", placeholder: "500.00" }),
      "input", (v) => { row.amount2 = v.trim(); });
    amount2.value = row.amount2 || "";
    node.append(h("span", { class: "cond-word strong", text: "Deposit sum in" }), currency, op, amount, and, amount2, note, remove);
    node._parts = { note, and, amount2 };
    return node;
  }
  const event = on(h("select", { class: "cond-event", "aria-label": "event" }), "change", (v) => { row.event = v; });
  const op = on(options(h("select", { class: "cond-op", "aria-label": "how" }), EVENT_OP_WORDS, row.op), "change", (v) => { row.op = v; });
  const n = on(numberInput("cond-n", "times", row.n, 0), "input", (v) => { row.n = v; });
  const and = h("span", { class: "cond-word", text: "and" });
  const m = on(numberInput("cond-m", "at most times", row.m, 0), "input", (v) => { row.m = v; });
  const times = h("span", { class: "cond-word", text: "times" });
  const win = on(options(h("select", { class: "cond-window", "aria-label": "when" }), WINDOW_WORDS, row.win), "change", (v) => {
    row.win = v;
    if (v === "last" && !row.lastN) { row.lastN = "24"; row.lastUnit = "h"; lastN.value = "24"; unit.value = "h"; }
    if (v === "between" && (row.from === null || row.to === null)) { // the last 7 whole UTC days, today included
      const tomorrow = (Math.floor(Date.now() / DAY_MS) + 1) * DAY_MS;
      row.from = tomorrow - 7 * DAY_MS;
      row.to = tomorrow;
      from.value = msToUtcInput(row.from);
      to.value = msToUtcInput(row.to);
    }
  });
  const lastN = on(numberInput("cond-last-n", "how many", row.lastN, 1), "input", (v) => { row.lastN = v; });
  const unit = on(options(h("select", { class: "cond-last-unit", "aria-label": "unit" }), UNIT_WORDS, row.lastUnit || "h"), "change", (v) => { row.lastUnit = v; });
  const dateInput = (cls, label, ms) => {
    const input = h("input", { type: "datetime-local", class: `cond-date ${cls}`, "aria-label": `${label} (UTC)`, step: ms && ms % 60000 ? 1 : 60 });
    input.value = msToUtcInput(ms);
    return input;
  };
  const from = on(dateInput("cond-from", "from", row.from), "input", (v) => { row.from = utcInputToMs(v); });
  const and2 = h("span", { class: "cond-word", text: "and" });
  const to = on(dateInput("cond-to", "to", row.to), "input", (v) => { row.to = utcInputToMs(v); });
  const utc = h("span", { class: "cond-word muted", text: "UTC" });
  node.append(event, op, n, and, m, times, win, lastN, unit, from, and2, to, utc, note, remove);
  node._parts = { note, n, and, m, times, lastN, unit, from, and2, to, utc, event };
  return node;
}

/** The event pickers of the rows follow the account's events (a deleted one stays, so the server can say so). */
function fillConditionEvents() {
  for (const node of $("condition-rows").children) {
    const select = node._parts && node._parts.event;
    const row = state.conditions[Number(node.dataset.index)];
    if (!select || !row || (document.activeElement === select && select.options.length > 1)) continue;
    const codes = state.events.map((e) => e.code);
    if (row.event && !codes.includes(row.event)) codes.push(row.event);
    const byCode = new Map(state.events.map((e) => [e.code, e]));
    select.replaceChildren(h("option", { value: "", text: "event…" }), ...codes.map((code) => {
      const e = byCode.get(code);
      return h("option", { value: code, text: code, title: e ? `${e.name || code} · ${fmt.format(e.devices)} devices` : "not an event of this account" });
    }));
    select.value = row.event || "";
  }
}

function addCondition(row) {
  if (state.conditions.length >= MAX_CONDITIONS) return;
  state.conditions.push(row);
  renderConditions();
  scheduleCount();
  const last = $("condition-rows").lastElementChild;
  const first = last && last.querySelector("select, input");
  if (first) first.focus();
}

// ---------------------------------------------------------------- devices per day

function fillDailySelect() {
  const select = $("daily-event");
  // Deposit ordinals (dep_2, ...) are not events of their own: the chart follows posted events.
  const events = state.events.filter((e) => !(e.deposit_ordinal > 1));
  const codes = events.map((e) => e.code);
  if (!codes.includes(state.dailyEvent)) {
    const next = codes.includes("reg") ? "reg" : codes[0] || null;
    if (next !== state.dailyEvent) { state.dailyEvent = next; state.dailyKey = null; if (state.api) refreshDaily(); }
  }
  if (document.activeElement === select && select.options.length) return; // the user is choosing
  select.replaceChildren(...events.map((e) => h("option", { value: e.code, text: `${e.name || e.code} (${e.code})` })));
  select.value = state.dailyEvent || "";
  select.disabled = !events.length;
}

async function refreshDaily() {
  if (!state.api || !state.dailyEvent) return;
  const seq = ++state.dailySeq;
  const event = state.dailyEvent;
  try {
    const body = await state.api.daily(event, DAILY_DAYS);
    if (seq !== state.dailySeq || event !== state.dailyEvent) return;
    showMessage($("daily-error"), "");
    const key = JSON.stringify(body);
    if (key !== state.dailyKey) {
      state.dailyKey = key;
      drawDailyBars($("chart-daily"), body);
    }
    const asOf = body && body.as_of;
    $("daily-as-of").textContent = asOf == null ? "not caught up yet"
      : `days in UTC · exact as of ${new Date(asOf).toLocaleTimeString([], { hour12: false })}`;
  } catch (err) {
    if (seq !== state.dailySeq) return;
    // An older server has no /segments/daily: the path then reads as a saved segment's id.
    const missing = err instanceof ApiError && (err.status === 404 || err.status === 405
      || (err.status === 422 && err.code === "validation_error" && /segment_id/.test(err.message)));
    if (missing) showMessage($("daily-error"), "This server does not offer devices per day yet: is the query service up to date?");
    else handle(err, $("daily-error"));
  }
}

// ---------------------------------------------------------------- saved segments

async function refreshSaved() {
  if (!state.api) return;
  try {
    const { segments } = await state.api.savedSegments();
    const counts = await Promise.all(segments.map((seg) => state.api.countSegment(seg.id).catch(() => null)));
    renderSaved(segments, counts);
  } catch (err) {
    handle(err, $("save-error"));
  }
}

function renderSaved(segments, counts) {
  $("saved-empty").hidden = segments.length > 0;
  $("saved-rows").replaceChildren(...segments.map((seg, i) => {
    const c = counts[i];
    const open = h("button", { type: "button", class: "link", text: seg.name, title: "load this filter",
      onclick: () => openSegment(seg) });
    const rename = h("button", { type: "button", class: "ghost small", text: "Rename", onclick: () => renameSegment(seg) });
    const remove = h("button", { type: "button", class: "ghost small danger", text: "Delete", onclick: () => deleteSegment(seg) });
    return h("tr", { "data-segment": String(seg.id) },
      h("td", {}, open),
      h("td", { class: "num", "data-count": c ? String(c.count) : "", text: c ? `${fmt.format(c.count)} devices` : "–" }),
      h("td", { class: "muted small", text: `v${seg.version}` }),
      h("td", {}, rename, remove));
  }));
}

function openSegment(seg) {
  state.include = [...(seg.filter.event_include || [])];
  state.exclude = [...(seg.filter.event_exclude || [])];
  state.match = seg.filter.include_match === "any" ? "any" : "all";
  state.conditions = filterToRows(seg.filter);
  for (const radio of document.querySelectorAll('input[name="include-match"]')) radio.checked = radio.value === state.match;
  $("save-name").value = seg.name;
  renderFilterOptions();
  renderConditions();
  scheduleCount(0);
}

async function saveSegment(ev) {
  ev.preventDefault();
  const name = $("save-name").value.trim();
  if (!name) return showMessage($("save-error"), "Give the segment a name first.");
  try {
    await state.api.saveSegment(name, filterBody());
    showMessage($("save-error"), "");
    await refreshSaved();
  } catch (err) {
    handle(err, $("save-error"));
  }
}

async function renameSegment(seg) {
  const name = (window.prompt("New name", seg.name) || "").trim();
  if (!name || name === seg.name) return;
  try {
    await state.api.renameSegment(seg.id, name);
    await refreshSaved();
  } catch (err) {
    handle(err, $("save-error"));
  }
}

async function deleteSegment(seg) {
  if (!window.confirm(`Delete the saved segment “${seg.name}”?`)) return;
  try {
    await state.api.deleteSegment(seg.id);
    await refreshSaved();
  } catch (err) {
    handle(err, $("save-error"));
  }
}

// ---------------------------------------------------------------- download

async function download() {
  const button = $("download");
  const status = $("download-status");
  button.disabled = true;
  showMessage($("filter-error"), "");
  status.textContent = "Preparing…";
  try {
    const resp = await state.api.exportStream(filterBody());
    const { parts, count } = await exportAsCsv(resp, (n) => { status.textContent = `${fmt.format(n)} install ids…`; });
    const url = URL.createObjectURL(new Blob(parts, { type: "text/csv;charset=utf-8" }));
    const when = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "");
    const a = h("a", { href: url, download: `segment-${when}.csv`, class: "offscreen" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    status.textContent = `Downloaded ${fmt.format(count)} install ids.`;
  } catch (err) {
    status.textContent = "";
    handle(err, $("filter-error"));
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- device lookup

/** Re-judged (by the API: the domain's filter evaluator) whenever the filter changes while a
 * device is shown; only the newest answer is shown. */
async function renderVerdict() {
  if (!state.deviceId) return;
  const seq = ++state.verdictSeq;
  let v;
  try {
    v = await state.api.verdict(state.deviceId, filterBody());
  } catch (err) {
    if (seq === state.verdictSeq) handle(err, $("device-error"));
    return;
  }
  if (seq !== state.verdictSeq || !state.deviceId) return;
  const node = $("device-verdict");
  node.textContent = v.selected ? "✓ The filter above selects this device."
    : `✗ The filter above does not select this device: ${v.reasons.join("; ")}.`;
  node.className = `verdict ${v.selected ? "yes" : "no"}`;
}

function when(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–";
}

async function lookUpDevice(ev) {
  ev.preventDefault();
  const id = $("device-id").value.trim();
  showMessage($("device-error"), "");
  $("device-result").hidden = true;
  state.deviceId = null;
  if (!id) return showMessage($("device-error"), "Type an installation id, as senders put it in `id=`.");
  if (!/^[\x21-\x7e]{1,128}$/.test(id)) {
    return showMessage($("device-error"), "Installation ids are 1-128 printable characters without spaces.");
  }
  $("device-button").disabled = true;
  try {
    const d = await state.api.device(id);
    const events = Array.isArray(d.events) ? d.events : [];
    $("device-summary").textContent = `${d.install_id}: ${events.length} event${events.length === 1 ? "" : "s"}, `
      + `${fmt.format(d.deposit_count || 0)} deposit${d.deposit_count === 1 ? "" : "s"}.`;
    state.deviceId = d.install_id;
    renderVerdict();
    $("device-body").replaceChildren(...events.map((e) => h("tr", { "data-code": e.code },
      h("td", {}, h("code", { text: e.code })),
      h("td", { class: "num occurrences", text: fmt.format(e.occurrences || 0) }),
      h("td", { text: when(e.first_at) }),
      h("td", { text: when(e.last_at) }),
    )));
    $("device-result").hidden = false;
  } catch (err) {
    if (err instanceof ApiError && err.code === "device_not_found") {
      showMessage($("device-error"), `No device “${id}” in this account: no postback for it has been applied yet.`);
    } else {
      handle(err, $("device-error"));
    }
  } finally {
    $("device-button").disabled = false;
  }
}

// ---------------------------------------------------------------- rejected postbacks

const REASONS = {
  unknown_event: "Unknown event",
  event_inactive: "Event is inactive",
  unknown_account: "Unknown account",
  missing_key: "Secret key missing",
  wrong_key: "Wrong secret key",
  missing_id: "Installation id missing",
  invalid_id: "Bad installation id",
  missing_status: "Status missing",
  invalid_status: "Bad status",
  invalid_event_code: "Bad event code",
  invalid_ts: "Bad timestamp",
  ts_in_future: "Timestamp in the future",
  invalid_tid: "Bad transaction id",
  invalid_amount: "Bad amount",
  invalid_currency: "Bad currency",
  derived_event: "Derived event (send dep)",
  duplicate_parameter: "Parameter given twice",
  malformed_query: "Malformed URL",
  query_too_long: "URL too long",
  rate_limited: "Too many postbacks",
};

function reasonWords(code) {
  if (REASONS[code]) return REASONS[code];
  const words = String(code || "unknown").replaceAll("_", " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(ms).toISOString().slice(0, 10);
}

function renderRejected(list) {
  const body = $("rejected-body");
  $("rejected-note").textContent = list.length ? `${fmt.format(list.length)} most recent` : "";
  if (!list.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "muted", text: "Nothing rejected recently." })));
    return;
  }
  body.replaceChildren(...list.map((r) => {
    const at = Number(r.at || r.received_at || 0);
    return h("tr", { "data-reason": r.reason || "" },
      h("td", { class: "when", title: at ? new Date(at).toISOString() : "", text: at ? ago(at) : "–" }),
      h("td", { text: r.stage || "" }),
      h("td", { class: "reason" }, h("span", { class: "reason-words", text: reasonWords(r.reason) }), h("code", { class: "reason-code", text: r.reason || "" })),
      h("td", { class: "message", text: r.message || "" }),
      h("td", { class: "raw" }, h("code", { title: r.raw || "", text: r.raw || "" })),
    );
  }));
}

// ---------------------------------------------------------------- wiring

function wire() {
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return showMessage($("signin-error"), "Paste your API key first.");
    if (!/^[\x21-\x7e]{1,512}$/.test(key)) {
      return showMessage($("signin-error"), "That does not look like an API key: keys are one word of letters, digits, - and _ (pbs_...).");
    }
    signIn(key);
  });
  $("signout").addEventListener("click", () => signOut(""));
  $("refresh").addEventListener("click", () => refreshAll());
  $("create-form").addEventListener("submit", createEvent);
  for (const kind of ["include", "exclude"]) {
    $(`${kind}-add`).addEventListener("change", (ev) => { ev.target.blur(); addCode(kind, ev.target.value); });
  }
  for (const radio of document.querySelectorAll('input[name="include-match"]')) {
    radio.addEventListener("change", (ev) => { state.match = ev.target.value; renderFilterText(); scheduleCount(); });
  }
  $("clear-filter").addEventListener("click", () => {
    state.include = [];
    state.exclude = [];
    state.conditions = [];
    renderFilterOptions();
    renderConditions();
    scheduleCount(0);
  });
  $("add-condition").addEventListener("click", () => addCondition(newEventRow()));
  $("add-deposit-sum").addEventListener("click", () => addCondition(newDepositRow()));
  $("daily-event").addEventListener("change", (ev) => {
    ev.target.blur();
    state.dailyEvent = ev.target.value;
    state.dailyKey = null;
    $("chart-daily").replaceChildren(h("p", { class: "muted small", text: "Loading…" }));
    $("daily-as-of").textContent = "";
    refreshDaily();
  });
  $("download").addEventListener("click", download);
  $("save-form").addEventListener("submit", saveSegment);
  $("device-form").addEventListener("submit", lookUpDevice);
  $("live").addEventListener("change", () => { if ($("live").checked) refreshAll(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden && state.api) refreshAll(); });

  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved) signIn(saved, { silent: true });
  else $("api-key").focus();
}

wire();
