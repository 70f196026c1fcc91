// Inline SVG charts, drawn with DOM calls only (no library, no innerHTML).

const SVG = "http://www.w3.org/2000/svg";
const fmt = new Intl.NumberFormat("en-US");

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgRoot(width, height, label) {
  return el("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", "aria-label": label, preserveAspectRatio: "xMinYMin meet" });
}

function empty(container, words) {
  const p = document.createElement("p");
  p.className = "muted small";
  p.textContent = words;
  container.replaceChildren(p);
}

const MAX_BARS = 16;

/** Horizontal bars: system events, then the custom events with the most devices (at most
 * MAX_BARS bars; the table lists the rest). Deposit ordinals are drawn by the funnel. */
export function drawEventBars(container, events) {
  const system = events.filter((e) => e.type !== "CUSTOM" && !(e.deposit_ordinal > 1));
  const custom = events.filter((e) => e.type === "CUSTOM").sort((a, b) => (b.devices || 0) - (a.devices || 0));
  const rows = [...system, ...custom].slice(0, MAX_BARS);
  const hidden = system.length + custom.length - rows.length;
  if (!rows.length) return empty(container, "No events yet.");
  const width = 560, rowH = 26, labelW = 150, valueW = 70, top = 4;
  const height = top + rows.length * rowH + 4;
  const max = Math.max(1, ...rows.map((e) => e.devices || 0));
  const svg = svgRoot(width, height, "Devices per event");
  rows.forEach((e, i) => {
    const y = top + i * rowH;
    const barMax = width - labelW - valueW;
    const w = Math.max(e.devices ? 2 : 0, Math.round(((e.devices || 0) / max) * barMax));
    const g = el("g", { class: `bar ${e.type === "CUSTOM" ? "custom" : "system"}${e.status === 0 ? " inactive" : ""}`, "data-code": e.code });
    g.append(
      el("text", { x: labelW - 8, y: y + rowH / 2 + 4, "text-anchor": "end", class: "bar-label" }, e.code),
      el("rect", { x: labelW, y: y + 4, width: barMax, height: rowH - 8, rx: 4, class: "bar-track" }),
      el("rect", { x: labelW, y: y + 4, width: w, height: rowH - 8, rx: 4, class: "bar-fill" }),
      el("text", { x: labelW + w + 6, y: y + rowH / 2 + 4, class: "bar-value" }, fmt.format(e.devices || 0)),
    );
    g.append(el("title", {}, `${e.name} (${e.code}): ${fmt.format(e.devices || 0)} devices`));
    svg.append(g);
  });
  const parts = [svg];
  if (hidden > 0) {
    const more = document.createElement("p");
    more.className = "muted small";
    more.textContent = `${hidden} more custom event${hidden === 1 ? "" : "s"} with fewer devices: see the table.`;
    parts.push(more);
  }
  container.replaceChildren(...parts);
}

/**
 * The deposit ordinals as a funnel: dep -> dep_2 -> dep_3 ... scaled to the first deposit
 * (depositors are often a few percent of all devices, so scaling to installs would hide it).
 * Each step shows its devices and the share of the step before it; the caption relates the
 * first deposit to all devices.
 */
export function drawDepositFunnel(container, events) {
  const byCode = new Map(events.map((e) => [e.code, e]));
  const steps = [];
  if (byCode.has("dep")) steps.push({ code: "dep", label: "1st deposit", devices: byCode.get("dep").devices || 0 });
  const ordinals = events.filter((e) => e.deposit_ordinal > 1).sort((a, b) => a.deposit_ordinal - b.deposit_ordinal);
  for (const e of ordinals) steps.push({ code: e.code, label: `${ordinal(e.deposit_ordinal)} deposit`, devices: e.devices || 0 });
  if (!steps.length || !steps[0].devices) return empty(container, "No deposits yet.");
  const width = 560, rowH = 34, top = 4, center = 250, maxW = 230;
  const height = top + steps.length * rowH + 4;
  const max = Math.max(1, ...steps.map((s) => s.devices));
  const svg = svgRoot(width, height, "Deposit funnel");
  steps.forEach((s, i) => {
    const y = top + i * rowH;
    const w = Math.max(s.devices ? 4 : 1, Math.round((s.devices / max) * maxW));
    const prev = i > 0 ? steps[i - 1].devices : null;
    const share = prev ? `${pct(s.devices, prev)} of ${steps[i - 1].code}` : "100%";
    const g = el("g", { class: `step step-${Math.min(i, 3)}`, "data-code": s.code, "data-devices": s.devices });
    g.append(
      el("text", { x: 8, y: y + rowH / 2 + 1, class: "step-label" }, s.label),
      el("text", { x: 8, y: y + rowH / 2 + 14, class: "step-code" }, s.code),
      el("rect", { x: center - w / 2, y: y + 4, width: w, height: rowH - 8, rx: 5, class: "step-fill" }),
      el("text", { x: center + maxW / 2 + 10, y: y + rowH / 2 + 4, class: "step-value" }, fmt.format(s.devices)),
      el("text", { x: width - 4, y: y + rowH / 2 + 4, "text-anchor": "end", class: "step-share" }, share),
    );
    svg.append(g);
  });
  const caption = document.createElement("p");
  caption.className = "muted small funnel-caption";
  const installs = byCode.has("install") ? byCode.get("install").devices || 0 : 0;
  caption.textContent = installs
    ? `${pct(steps[0].devices, installs)} of all ${fmt.format(installs)} devices made a first deposit.`
    : "";
  container.replaceChildren(svg, caption);
}

function pct(part, whole) {
  if (!whole) return "–";
  const v = (100 * part) / whole;
  return `${v >= 10 || v === 0 ? v.toFixed(0) : v.toFixed(1)}%`;
}

function ordinal(n) {
  const s = ["th", "st", "nd", "rd"], v = n % 100;
  return n + (s[(v - 20) % 10] || s[v] || s[0]);
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function shortDay(day) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(day || ""));
  return m ? `${MONTHS[Number(m[2]) - 1] || m[2]} ${Number(m[3])}` : String(day || "");
}

/** A round top for an axis: the smallest of 1, 2, 3, 4, 5, 6, 8 x 10^k at or above n. */
function niceCeil(n) {
  if (n <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(n));
  for (const f of [1, 2, 3, 4, 5, 6, 8, 10]) if (f * p >= n) return f * p;
  return 10 * p;
}

/**
 * Devices per day for one event (GET /segments/daily): one vertical bar per UTC day, oldest
 * first, the last one today. Each bar is a <g class="day" data-day data-devices> with a tooltip;
 * the caption names today's count and the busiest day.
 */
export function drawDailyBars(container, body) {
  const days = body && Array.isArray(body.days) ? body.days : [];
  if (!days.length) return empty(container, "No days to show.");
  const width = 560, height = 180, left = 44, right = 6, top = 10, bottom = 22;
  const plotW = width - left - right, plotH = height - top - bottom;
  const counts = days.map((d) => Math.max(0, Number(d.devices) || 0));
  const peak = Math.max(...counts);
  const max = niceCeil(Math.max(1, peak));
  const slot = plotW / days.length;
  const barW = Math.max(2, slot - Math.min(4, slot * 0.25));
  const svg = svgRoot(width, height, `Devices per day for ${body.event || "the event"}, last ${days.length} days`);
  const ticks = max % 2 === 0 ? [0, max / 2, max] : [0, max];
  for (const v of ticks) {
    const y = top + plotH - (v / max) * plotH;
    svg.append(el("line", { x1: left, x2: width - right, y1: y, y2: y, class: v ? "grid" : "axis-line" }),
      el("text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "axis" }, fmt.format(v)));
  }
  const last = days.length - 1;
  days.forEach((d, i) => {
    const n = counts[i];
    const hgt = n ? Math.max(2, (n / max) * plotH) : 0;
    const x = left + i * slot + (slot - barW) / 2;
    const g = el("g", { class: `day${i === last ? " today" : ""}`, "data-day": String(d.day || ""), "data-devices": n });
    g.append(el("rect", { x, y: top, width: barW, height: plotH, class: "day-hit" }),
      el("rect", { x, y: top + plotH - hgt, width: barW, height: hgt, rx: Math.min(2, barW / 3), class: "day-fill" }),
      el("title", {}, `${d.day} (UTC): ${fmt.format(n)} device${n === 1 ? "" : "s"}`));
    if ((last - i) % 7 === 0) {
      g.append(el("text", { x: x + barW / 2, y: height - 6, "text-anchor": "middle", class: "axis" }, i === last ? "today" : shortDay(d.day)));
    }
    svg.append(g);
  });
  const caption = document.createElement("p");
  caption.className = "muted small daily-caption";
  const peakAt = counts.lastIndexOf(peak);
  const today = `Today ${fmt.format(counts[last])} device${counts[last] === 1 ? "" : "s"}`;
  caption.textContent = !peak ? `No devices with ${body.event || "this event"} in the last ${days.length} days.`
    : peakAt === last ? `${today}, the busiest day.`
    : `${today} · busiest day ${shortDay(days[peakAt].day)}: ${fmt.format(peak)}.`;
  container.replaceChildren(svg, caption);
}
