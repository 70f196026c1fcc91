// The Triggers card of the Segments page: event-triggered push tasks ("on reg, first time, wait
// 2h, push unless dep"), each with its pending / fired / cancelled / skipped-late counts and its
// recent fires; create, edit, deactivate / activate and delete. app.js mounts it, hands it the
// account's events and its refresh ticks (so the Live switch and a hidden tab pause it too).
// Like the rest of the page it draws with DOM calls and textContent only.
import { ApiError, describeCondition, describeError } from "./api.js";
import { h, showMessage } from "./dom.js";

const PER_PAGE = 50;
const MAX_PAGES = 20; // the card shows at most 1,000 triggers
const FIRES_LIMIT = 20;
const STAT_KEYS = ["pending", "fired", "cancelled", "skipped_late"];
const fmt = new Intl.NumberFormat("en-US");
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- words

/** unix ms -> "2026-12-01 10:30:05 UTC" */
export function utcTime(ms) {
  return Number.isFinite(ms) && ms > 0 ? `${new Date(ms).toISOString().replace("T", " ").slice(0, 19)} UTC` : "–";
}

/** "reg (first)" / "dep (every)" */
export function onWords(on) {
  return on ? `${on.event} (${on.occurrence === "every" ? "every" : "first"})` : "–";
}

/** A trigger's filter in a few words: "unless dep", "with reg, unless dep, + 1 condition". */
export function filterSummary(filter) {
  const f = filter || {};
  const include = Array.isArray(f.event_include) ? f.event_include : [];
  const exclude = Array.isArray(f.event_exclude) ? f.event_exclude : [];
  const conditions = Array.isArray(f.conditions) ? f.conditions : [];
  const parts = [];
  if (include.length) parts.push(`with ${include.join(f.include_match === "any" ? " or " : " and ")}`);
  if (exclude.length) parts.push(`unless ${exclude.join(" or ")}`);
  if (conditions.length) parts.push(`+ ${conditions.length} condition${conditions.length === 1 ? "" : "s"}`);
  return parts.length ? parts.join(", ") : "every device";
}

function sameFilter(a, b) {
  const norm = (f) => JSON.stringify([f.event_include || [], f.event_exclude || [], f.include_match === "any" ? "any" : "all", f.conditions || []]);
  return norm(a || {}) === norm(b || {});
}

// Which input a server message is about: its "field", else the path it starts with ("delay: ...").
const FIELD_INPUTS = { name: "trigger-name", on: "trigger-event", "on.event": "trigger-event",
  "on.occurrence": "trigger-occurrence", delay: "trigger-delay", filter: "trigger-include-box" };

function inputOf(err) {
  const path = err.field || (/^([a-z_]+(?:\.[a-z_]+)?)(?:[.\[:]|$)/.exec(err.message || "") || [])[1] || "";
  const key = FIELD_INPUTS[path] ? path : path.split(".")[0];
  return FIELD_INPUTS[key] ? $(FIELD_INPUTS[key]) : null;
}

/** The trigger itself is not there (any more): 404 trigger_not_found (the contract's draft said not_found). */
function gone(err) {
  return err instanceof ApiError && err.status === 404 && (err.code === "trigger_not_found" || err.code === "not_found");
}

// ---------------------------------------------------------------- the card

/**
 * Draws the card into index.html's #triggers-card and wires its controls.
 * ctx: {api(): QueryApi | null, events(): the account's events (app.js state.events),
 *       builderFilter(): the filter builder's body, handle(err, node): app.js's error handler
 *       (a refused key signs out)}.
 * Returns {refresh(), eventsChanged(), reset()}: refresh() never throws.
 */
export function mountTriggers(ctx) {
  const t = {
    list: [], // TriggerOut, in the API's order
    stats: new Map(), // id -> {pending, fired, cancelled, skipped_late} | null (not answered)
    drawnKey: null, // what the table shows: a refresh redraws only on change
    seq: 0, // only the newest refresh is drawn
    editing: null, // the TriggerOut the form edits; null: the form creates
    form: { include: [], exclude: [], match: "all", conditions: [] },
    pendingDelete: null, // trigger id whose delete waits for a confirming click
    firesOf: null, // trigger id whose recent fires are shown
    firesSeq: 0,
    firesKey: null,
    eventsKey: null,
  };

  // ------------------------------------------------------------ refresh

  async function listAll(api) {
    const all = [];
    for (let page = 1; page <= MAX_PAGES; page += 1) {
      const body = await api.triggers(page, PER_PAGE);
      all.push(...(Array.isArray(body && body.triggers) ? body.triggers : []));
      const pages = body && body.pagination ? Number(body.pagination.total_pages) || 1 : 1;
      if (page >= pages) break;
    }
    return all;
  }

  async function refresh() {
    const api = ctx.api();
    if (!api) return;
    const seq = ++t.seq;
    try {
      const list = await listAll(api);
      const stats = await Promise.all(list.map((tr) => api.triggerStats(tr.id).catch((err) => {
        if (err instanceof ApiError && err.status === 401) throw err;
        return null; // deleted meanwhile, or a hiccup: "–" until the next refresh
      })));
      if (seq !== t.seq || api !== ctx.api()) return;
      t.list = list;
      t.stats = new Map(list.map((tr, i) => [tr.id, stats[i]]));
      if (t.firesOf !== null && !list.some((tr) => tr.id === t.firesOf)) closeFires();
      if (t.firesOf !== null) titleFires();
      showMessage($("triggers-error"), "");
      draw();
    } catch (err) {
      if (seq !== t.seq) return;
      if (err instanceof ApiError && (err.status === 404 || err.status === 405)) {
        showMessage($("triggers-error"), "This server does not offer triggers yet: is the query service up to date?");
      } else {
        ctx.handle(err, $("triggers-error"), "The triggers could not be refreshed: ");
      }
    }
    if (t.firesOf !== null) await refreshFires();
  }

  // ------------------------------------------------------------ table

  function draw() {
    const key = JSON.stringify([t.list, [...t.stats], t.pendingDelete, t.firesOf]);
    if (key === t.drawnKey) return;
    t.drawnKey = key;
    const body = $("triggers-body");
    if (!t.list.length) {
      body.replaceChildren(h("tr", {}, h("td", { colspan: 10, class: "muted", text: "No triggers yet: create one above." })));
      return;
    }
    body.replaceChildren(...t.list.map(triggerRow));
  }

  function triggerRow(tr) {
    const s = t.stats.get(tr.id);
    const count = (k) => h("td", { class: `num ${k.replace("_", "-")}`, "data-count": s ? String(s[k] ?? "") : "",
      text: s && Number.isFinite(s[k]) ? fmt.format(s[k]) : "–" });
    const label = tr.name || `trigger ${tr.id}`;
    const actions = h("td", { class: "actions" },
      h("button", { type: "button", class: "small-btn fires-btn", text: "Fires", "aria-label": `Fires of ${label}`,
        "aria-pressed": t.firesOf === tr.id ? "true" : "false", onclick: () => openFires(tr.id) }),
      h("button", { type: "button", class: "small-btn edit", text: "Edit", "aria-label": `Edit ${label}`, onclick: () => edit(tr) }),
      h("button", { type: "button", class: "small-btn toggle", text: tr.active ? "Deactivate" : "Activate",
        "aria-label": `${tr.active ? "Deactivate" : "Activate"} ${label}`, onclick: (ev) => setActive(tr, !tr.active, ev.currentTarget) }));
    if (t.pendingDelete === tr.id) {
      actions.append(
        h("button", { type: "button", class: "small-btn danger confirm-delete", text: "Confirm delete", "aria-label": `Confirm delete of ${label}`,
          onclick: (ev) => remove(tr, ev.currentTarget) }),
        h("button", { type: "button", class: "small-btn cancel-delete", text: "Cancel", "aria-label": `Keep ${label}`,
          onclick: () => { t.pendingDelete = null; draw(); } }));
    } else {
      actions.append(h("button", { type: "button", class: "small-btn delete", text: "Delete", "aria-label": `Delete ${label}`,
        onclick: () => { t.pendingDelete = tr.id; draw(); } }));
    }
    const conditions = (tr.filter && Array.isArray(tr.filter.conditions)) ? tr.filter.conditions : [];
    const row = h("tr", { "data-trigger-id": String(tr.id), "data-version": String(tr.version),
      class: [tr.active ? "" : "inactive", t.firesOf === tr.id ? "selected" : ""].join(" ").trim() || null },
      h("td", { class: "name" }, h("span", { class: "name-text", text: label }),
        h("span", { class: "version muted small", title: "version: bumps on every change", text: ` v${tr.version}` })),
      h("td", { class: "on", "data-event": tr.on ? tr.on.event : "", "data-occurrence": tr.on ? tr.on.occurrence : "" },
        h("code", { text: onWords(tr.on) })),
      h("td", { class: "delay", title: `${fmt.format(tr.delay_ms)} ms`, text: tr.delay }),
      h("td", { class: "filter", title: conditions.map(describeCondition).join("; ") || null, text: filterSummary(tr.filter) }),
      h("td", { class: "status" }, h("span", { class: `pill ${tr.active ? "on" : "off"}`, text: tr.active ? "Active" : "Inactive" })),
      ...STAT_KEYS.map(count),
      actions);
    row.addEventListener("click", (ev) => { if (!ev.target.closest("button")) openFires(tr.id); });
    return row;
  }

  async function setActive(tr, active, button) {
    button.disabled = true;
    showMessage($("triggers-error"), "");
    try {
      await ctx.api().setTriggerActive(tr.id, active);
    } catch (err) {
      actionError(err);
      button.disabled = false;
    }
    await refresh();
  }

  async function remove(tr, button) {
    button.disabled = true;
    showMessage($("triggers-error"), "");
    try {
      await ctx.api().deleteTrigger(tr.id);
      t.pendingDelete = null;
      if (t.editing && t.editing.id === tr.id) resetForm();
      if (t.firesOf === tr.id) closeFires();
      showMessage($("trigger-ok"), `Deleted “${tr.name}”.`);
    } catch (err) {
      actionError(err);
      button.disabled = false;
    }
    await refresh();
  }

  function actionError(err) {
    if (gone(err)) {
      showMessage($("triggers-error"), "This trigger no longer exists (deleted in another tab?).");
    } else {
      ctx.handle(err, $("triggers-error"));
    }
  }

  // ------------------------------------------------------------ recent fires

  function openFires(id) {
    if (t.firesOf === id) return;
    t.firesOf = id;
    t.firesKey = null;
    titleFires();
    $("trigger-fires-body").replaceChildren();
    $("trigger-fires-empty").hidden = true;
    showMessage($("trigger-fires-error"), "");
    $("trigger-fires").hidden = false;
    draw();
    refreshFires();
  }

  function titleFires() {
    const tr = t.list.find((x) => x.id === t.firesOf);
    $("trigger-fires-title").textContent = `Recent fires of “${tr ? tr.name : t.firesOf}”`;
  }

  function closeFires() {
    t.firesOf = null;
    t.firesKey = null;
    t.firesSeq += 1;
    $("trigger-fires").hidden = true;
    draw();
  }

  async function refreshFires() {
    const api = ctx.api();
    const id = t.firesOf;
    if (!api || id === null) return;
    const seq = ++t.firesSeq;
    try {
      const body = await api.triggerFires(id, FIRES_LIMIT);
      if (seq !== t.firesSeq || id !== t.firesOf) return;
      showMessage($("trigger-fires-error"), "");
      renderFires(Array.isArray(body && body.fires) ? body.fires : []);
    } catch (err) {
      if (seq !== t.firesSeq) return;
      ctx.handle(err, $("trigger-fires-error"));
    }
  }

  function renderFires(fires) {
    const key = JSON.stringify(fires);
    if (key === t.firesKey) return;
    t.firesKey = key;
    $("trigger-fires-empty").hidden = fires.length > 0;
    $("trigger-fires-body").replaceChildren(...fires.map((f) => h("tr", { "data-fire-id": String(f.fire_id ?? "") },
      h("td", { class: "install" }, h("code", { text: String(f.install_id ?? "") })),
      h("td", { class: "due", title: Number.isFinite(f.due_at) ? new Date(f.due_at).toISOString() : null, text: utcTime(f.due_at) }),
      h("td", { class: "fired", title: Number.isFinite(f.fired_at) ? new Date(f.fired_at).toISOString() : null, text: utcTime(f.fired_at) }),
      h("td", { class: "version muted", text: f.trigger_version == null ? "" : `v${f.trigger_version}` }),
      h("td", { class: "fire-id" }, h("code", { text: String(f.fire_id ?? "") })))));
  }

  // ------------------------------------------------------------ form

  function eventsChanged() {
    const events = ctx.events();
    const key = JSON.stringify(events.map((e) => [e.code, e.name, e.deposit_ordinal]));
    if (key === t.eventsKey) return;
    t.eventsKey = key;
    fillEventSelect();
    renderCodeLists();
  }

  function fillEventSelect() {
    const select = $("trigger-event");
    if (document.activeElement === select && select.options.length > 1) return; // the user is choosing
    const current = select.value || (t.editing ? t.editing.on.event : "");
    // Deposit ordinals (dep_2, ...) are counted from dep, never posted: dep with "every" is the way.
    const events = ctx.events().filter((e) => !(e.deposit_ordinal > 1));
    const options = [h("option", { value: "", text: "event…" }),
      ...events.map((e) => h("option", { value: e.code, text: e.name && e.name !== e.code ? `${e.code} · ${e.name}` : e.code }))];
    if (current && !events.some((e) => e.code === current)) {
      options.push(h("option", { value: current, text: `${current} (not an event of this account)` }));
    }
    select.replaceChildren(...options);
    select.value = current;
  }

  function renderCodeLists() {
    const known = ctx.events().map((e) => e.code);
    for (const kind of ["include", "exclude"]) {
      const chosen = t.form[kind];
      const codes = [...known, ...chosen.filter((c) => !known.includes(c))]; // a deleted one stays, so the server can say so
      const word = kind === "include" ? "with" : "unless";
      $(`trigger-${kind}`).replaceChildren(...codes.map((code) => {
        const box = h("input", { type: "checkbox", value: code, "aria-label": `${word} ${code}` });
        box.checked = chosen.includes(code);
        box.addEventListener("change", () => {
          t.form[kind] = box.checked ? [...t.form[kind], code] : t.form[kind].filter((c) => c !== code);
        });
        return h("label", { class: `check ${known.includes(code) ? "" : "unknown"}`.trim(), title: known.includes(code) ? null : "not an event of this account" },
          box, h("span", { text: code }));
      }));
    }
    $("trigger-match").value = t.form.match;
    const conds = t.form.conditions;
    $("trigger-conditions-line").hidden = !conds.length;
    $("trigger-conditions").textContent = conds.length
      ? `And ${conds.length === 1 ? "a condition" : `${conds.length} conditions`}, kept as they are: ${conds.map(describeCondition).join("; ")}.`
      : "";
  }

  function loadForm(tr) {
    t.editing = tr;
    const f = (tr && tr.filter) || {};
    t.form = {
      include: [...(f.event_include || [])],
      exclude: [...(f.event_exclude || [])],
      match: f.include_match === "any" ? "any" : "all",
      conditions: Array.isArray(f.conditions) ? [...f.conditions] : [],
    };
    $("trigger-name").value = tr ? tr.name : "";
    $("trigger-event").value = "";
    fillEventSelect();
    $("trigger-event").value = tr ? tr.on.event : "";
    $("trigger-occurrence").value = tr && tr.on.occurrence === "every" ? "every" : "first";
    $("trigger-delay").value = tr ? tr.delay : "";
    renderCodeLists();
    $("trigger-form-title").textContent = tr ? `Edit “${tr.name}” (v${tr.version})` : "New trigger";
    $("trigger-submit").textContent = tr ? "Save changes" : "Create trigger";
    $("trigger-cancel").hidden = !tr;
    $("trigger-form").classList.toggle("editing", Boolean(tr));
    clearFormError();
  }

  function resetForm() { loadForm(null); }

  function edit(tr) {
    showMessage($("trigger-ok"), "");
    loadForm(tr);
    $("trigger-form").scrollIntoView({ block: "nearest" });
    $("trigger-name").focus();
  }

  function formBody() {
    const filter = { event_include: [...t.form.include], event_exclude: [...t.form.exclude], include_match: t.form.match };
    if (t.form.conditions.length) filter.conditions = [...t.form.conditions];
    return {
      name: $("trigger-name").value.trim(),
      on: { event: $("trigger-event").value, occurrence: $("trigger-occurrence").value === "every" ? "every" : "first" },
      delay: $("trigger-delay").value.trim(),
      filter,
    };
  }

  /** What PATCH gets: only what differs from the trigger as loaded (every change is a new version). */
  function changes(tr, body) {
    const out = {};
    if (body.name !== tr.name) out.name = body.name;
    if (body.on.event !== tr.on.event || body.on.occurrence !== tr.on.occurrence) out.on = body.on;
    if (body.delay !== tr.delay) out.delay = body.delay;
    if (!sameFilter(body.filter, tr.filter)) out.filter = body.filter;
    return out;
  }

  function clearFormError() {
    showMessage($("trigger-error"), "");
    for (const node of $("trigger-form").querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  }

  function formError(text, input) {
    showMessage($("trigger-error"), text);
    if (input) input.setAttribute("aria-invalid", "true");
  }

  async function submit(ev) {
    ev.preventDefault();
    clearFormError();
    showMessage($("trigger-ok"), "");
    const body = formBody();
    if (!body.name) return formError("Give the trigger a name, e.g. “deposit reminder”.", $("trigger-name"));
    if (!body.on.event) return formError("Pick the event that starts the trigger.", $("trigger-event"));
    const button = $("trigger-submit");
    button.disabled = true;
    try {
      if (t.editing) {
        const diff = changes(t.editing, body);
        if (!Object.keys(diff).length) {
          showMessage($("trigger-ok"), "Nothing changed.");
          resetForm();
          return;
        }
        const out = await ctx.api().updateTrigger(t.editing.id, diff);
        showMessage($("trigger-ok"), `Saved “${out.name}”: version ${out.version}.`);
      } else {
        const out = await ctx.api().createTrigger(body);
        showMessage($("trigger-ok"), `Created “${out.name}”.`);
      }
      resetForm();
      await refresh();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return ctx.handle(err, $("trigger-error"));
      if (gone(err) && t.editing) {
        formError("This trigger no longer exists (deleted in another tab?). Cancel, or create it anew.");
        return;
      }
      // The server's words (422: what is wrong with which field), next to the form.
      formError(describeError(err), err instanceof ApiError && err.status === 422 ? inputOf(err) : null);
    } finally {
      button.disabled = false;
    }
  }

  function useBuilderFilter() {
    const f = ctx.builderFilter() || {};
    t.form = {
      include: [...(f.event_include || [])],
      exclude: [...(f.event_exclude || [])],
      match: f.include_match === "any" ? "any" : "all",
      conditions: Array.isArray(f.conditions) ? [...f.conditions] : [],
    };
    renderCodeLists();
  }

  function reset() {
    t.seq += 1;
    t.list = [];
    t.stats = new Map();
    t.drawnKey = null;
    t.pendingDelete = null;
    t.eventsKey = null;
    closeFires();
    resetForm();
    showMessage($("triggers-error"), "");
    showMessage($("trigger-ok"), "");
    $("triggers-body").replaceChildren(h("tr", {}, h("td", { colspan: 10, class: "muted", text: "Loading…" })));
    t.drawnKey = null;
  }

  $("trigger-form").addEventListener("submit", submit);
  $("trigger-cancel").addEventListener("click", () => { resetForm(); showMessage($("trigger-ok"), ""); });
  $("trigger-use-builder").addEventListener("click", useBuilderFilter);
  $("trigger-drop-conditions").addEventListener("click", () => { t.form.conditions = []; renderCodeLists(); });
  $("trigger-match").addEventListener("change", (ev) => { t.form.match = ev.target.value === "any" ? "any" : "all"; });
  $("trigger-fires-close").addEventListener("click", closeFires);
  for (const id of ["trigger-name", "trigger-delay", "trigger-event", "trigger-occurrence"]) {
    $(id).addEventListener("input", () => $(id).removeAttribute("aria-invalid"));
  }
  resetForm();
  if (ctx.api()) { // signed in before this module had loaded
    eventsChanged();
    refresh();
  }
  return { refresh, eventsChanged, reset };
}
