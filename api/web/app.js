// app.js — kiln's operator page: fetches /api/state.json, /api/warmup.json and
// /api/forecast.json every 5 s and redraws the tables and the warm-up charts in place (no
// page reload; the explain box and its answer are left alone). Charts are plain SVG drawn
// here (no charting library: the page loads nothing from elsewhere). Text from kilnd goes
// into the DOM as text nodes only, never as HTML.
"use strict";

const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
// Read by the browser test: how many refreshes completed, and the last data seen.
window.kiln = { refreshes: 0, state: null, warmup: null, forecast: null };

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) e.setAttribute(k, String(v));
  }
  for (const c of children) {
    e.appendChild(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "" : String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function num(v) {
  if (v === null || v === undefined) return "—";
  if (v < 0) return "none";
  return Number(v).toLocaleString("en-US");
}

function td(text, cls) { return el("td", cls ? { class: cls } : null, text); }

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  const body = await r.json().catch(() => ({ message: "not JSON (HTTP " + r.status + ")" }));
  if (!r.ok) throw new Error(body.message || ("HTTP " + r.status));
  return body;
}

// ---- sections ----

function drawIps(ips) {
  fill($("ips").tBodies[0], ips.map((ip) => {
    const k = ip.kiln || {};
    const why = [k.DownReason, k.DegradedReason].filter((s) => s).join("; ");
    return el("tr", { "data-ip": ip.Ip, class: "row-" + ip.State },
      td(ip.Ip), td(k.BindAddress), td(ip.PoolName), td(ip.Zone),
      el("td", { class: "state state-" + ip.State }, ip.State),
      el("td", { class: "health health-" + k.Health }, k.Health),
      td(ip.WarmupStatus, "warmup-status"),
      td(ip.WarmupPercentage < 0 ? "managed" : ip.WarmupPercentage + " %", "num warmup-pct"),
      td(num(ip.DailyCap), "num daily-cap"),
      td(num(ip.SentLast24Hours), "num sent-24h"),
      td(k.Sessions, "num"),
      td(why, "why"));
  }));
}

function drawZones(zones, pools) {
  fill($("zones").tBodies[0], zones.map((z) => el("tr", { "data-zone": z.Zone },
    td(z.Zone), el("td", { class: "state state-" + z.State }, z.State),
    td(z.ActiveIps + " / " + z.Ips, "num"))));
  fill($("pools").tBodies[0], pools.map((p) => el("tr", { "data-pool": p.PoolName },
    td(p.PoolName), td(p.Scaling), td(p.Overflow || "—"), td(p.ConfigurationSets.join(", ")))));
}

function drawQueue(q) {
  let t = "Queued " + num(q.Queued) + ", deferred " + num(q.Deferred) + ", outbound sessions " + q.SessionsOut + ".";
  if (q.QueuedInSpoolOnly || q.DeferredInSpoolOnly) {
    t += " Paged out to the spool (not in the rows): " + num(q.QueuedInSpoolOnly) + " queued, " +
      num(q.DeferredInSpoolOnly) + " deferred (kilnctl queue counts them).";
  }
  if (q.Rows > q.Queue.length) t += " The " + q.Queue.length + " largest of " + q.Rows + " rows shown.";
  $("queue-totals").textContent = t;
  fill($("queue").tBodies[0], q.Queue.map((r) => el("tr", null,
    td(r.ConfigurationSet), td(r.Pool), td(r.Domain),
    el("td", { class: "state state-" + (r.State === "deferred" ? "draining" : "active") }, r.State),
    td(num(r.Recipients), "num"))));
}

function drawRecent(rec) {
  $("recent-note").textContent = rec.Kept ? ("The last " + rec.Kept + " deferrals and bounces, since " + rec.Since + ".")
    : "No deferral or bounce since kilnd started.";
  fill($("recent").tBodies[0], rec.ByReason.map((g) => el("tr", null,
    td(g.Outcome), td(g.Reason), td(num(g.Count), "num"), td(g.LastAt + " " + g.LastDomain),
    td(g.LastReply, "why"))));
}

function drawTimeline(events) {
  const items = events.map((e) => el("li", { "data-kind": e.Kind },
    el("span", { class: "at" }, e.At), el("span", { class: "kind" }, e.Kind), e.Text));
  if (!items.length) items.push(el("li", null, "Nothing notable since kilnd started."));
  $("timeline").replaceChildren(...items);
}

// One SVG per IP (and per managed provider): bars = sent per day, solid line = the cap of
// the days so far, dashed line = the forecast cap ahead.
function chart(title, curve, ahead, ipAttr) {
  const days = curve.length + ahead.length;
  const W = 18 * Math.max(days, 8) + 50, H = 150, left = 44, top = 8, bottom = 20;
  const caps = curve.map((d) => d.Cap).concat(ahead.map((d) => d.Cap)).filter((v) => v !== null && v >= 0);
  const max = Math.max(1, ...caps, ...curve.map((d) => d.Sent));
  const step = (W - left - 6) / Math.max(days, 1);
  const y = (v) => top + (H - top - bottom) * (1 - v / max);
  const x = (i) => left + step * i + step / 2;
  const s = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, "data-ip": ipAttr });
  s.appendChild(svg("line", { x1: left, y1: H - bottom, x2: W, y2: H - bottom, stroke: "#bbb" }));
  const yl = svg("text", { x: 2, y: top + 8 }); yl.textContent = num(max); s.appendChild(yl);
  const y0 = svg("text", { x: 2, y: H - bottom }); y0.textContent = "0"; s.appendChild(y0);
  curve.forEach((d, i) => {
    const h = d.Sent > 0 ? Math.max(1, (H - top - bottom) * d.Sent / max) : 0;   // a day that sent shows
    const r = svg("rect", { class: "bar", x: x(i) - step * 0.35, y: H - bottom - h, width: step * 0.7, height: h, "data-date": d.Date });
    const t = svg("title"); t.textContent = d.Date + ": sent " + d.Sent + ", cap " + num(d.Cap); r.appendChild(t);
    s.appendChild(r);
  });
  const capPts = [];
  curve.forEach((d, i) => {
    if (d.Cap === null || d.Cap < 0) return;
    capPts.push(x(i) + "," + y(d.Cap));
    s.appendChild(svg("circle", { class: "cap-point", cx: x(i), cy: y(d.Cap), r: 2, "data-date": d.Date }));
  });
  if (capPts.length > 1) s.appendChild(svg("polyline", { class: "cap", points: capPts.join(" ") }));
  const fPts = [];
  const last = curve.length ? curve[curve.length - 1] : null;
  if (last && last.Cap !== null && last.Cap >= 0) fPts.push(x(curve.length - 1) + "," + y(last.Cap));
  ahead.forEach((d, i) => {
    const xi = x(curve.length + i);
    fPts.push(xi + "," + y(d.Cap));
    s.appendChild(svg("circle", { class: "forecast-point", cx: xi, cy: y(d.Cap), r: 2, "data-date": d.Date }));
  });
  if (fPts.length > 1) s.appendChild(svg("polyline", { class: "forecast", points: fPts.join(" ") }));
  if (curve.length) {
    const t0 = svg("text", { x: left, y: H - 4 }); t0.textContent = curve[0].Date; s.appendChild(t0);
  }
  const all = curve.concat(ahead);
  if (all.length > 1) {
    const t1 = svg("text", { x: W - 64, y: H - 4 }); t1.textContent = all[all.length - 1].Date; s.appendChild(t1);
  }
  return el("div", { class: "chart", "data-ip": ipAttr }, el("h3", null, title), s);
}

function drawWarmup(w) {
  const charts = [];
  for (const ip of w.Ips) {
    const what = ip.Managed ? "managed" : ip.WarmupPercentage + " %";
    charts.push(chart(ip.Ip + " (" + ip.PoolName + ", " + what + ")", ip.Curve, ip.Forecast, ip.Ip));
    for (const p of ip.Providers || []) {
      charts.push(chart(ip.Ip + " → " + p.Provider + (p.Held ? " (held)" : ""), p.Curve, [], ip.Ip + "/" + p.Provider));
    }
  }
  $("warmup").replaceChildren(...charts);
}

function drawForecast(f) {
  const sets = f.ConfigurationSets;
  $("forecast-note").textContent = "Recipients per day each configuration set's pool can send (advance: " +
    f.Advance + "; ramp " + num(f.FirstDay) + " → " + num(f.Target) + " over " + f.RampDays + " days). " +
    f.Ips.map((ip) => ip.Ip + " reaches the target: " + ip.ReachesTarget).join("; ") + ".";
  const head = el("tr", null, el("th", null, "Day"), el("th", null, "Date"),
    ...sets.map((s) => el("th", { class: "num", "data-set": s.ConfigurationSet }, s.ConfigurationSet + " (" + s.PoolName + ")")));
  $("forecast").tHead.replaceChildren(head);
  const rows = [];
  for (let d = 0; d < f.Days; d++) {
    rows.push(el("tr", { "data-day": d }, td(d), td(sets.length ? sets[0].Daily[d].Date.slice(0, 10) : ""),
      ...sets.map((s) => el("td", { class: "num", "data-set": s.ConfigurationSet, "data-value": s.Daily[d].RecipientsPerDay },
        num(s.Daily[d].RecipientsPerDay) + (f.Advance === "volume" ? " (needs " + num(s.Daily[d].NeededPerDay) + ")" : "")))));
  }
  fill($("forecast").tBodies[0], rows);
}

// ---- explain (kept across refreshes: only its own form redraws it) ----

async function explain(ev) {
  ev.preventDefault();
  const id = $("explain-id").value.trim();
  const out = $("explain-result");
  if (!id) return;
  out.replaceChildren(el("p", null, "asking…"));
  try {
    const d = await getJSON("/api/explain.json?id=" + encodeURIComponent(id));
    const rows = d.Recipients.map((r) => el("tr", null, td(r.Recipient), td(r.State), td(r.Reason, "why"),
      td(r.Until || "—"), td(r.Attempts, "num"), td(r.LastReply || "—", "why")));
    out.replaceChildren(el("p", null, "Message " + d.MessageId + ":"),
      el("table", { id: "explain-table" }, el("thead", null, el("tr", null, el("th", null, "Recipient"),
        el("th", null, "State"), el("th", null, "Waits for"), el("th", null, "Until"), el("th", null, "Attempts"),
        el("th", null, "Last reply"))), el("tbody", null, ...rows)));
  } catch (e) {
    out.replaceChildren(el("p", { class: "error" }, e.message));
  }
}

// ---- refresh ----

let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const [state, warmup, forecast] = await Promise.all([
      getJSON("/api/state.json"), getJSON("/api/warmup.json"), getJSON("/api/forecast.json?days=14")]);
    $("host").textContent = state.Hostname + " · kiln " + state.Version;
    drawIps(state.DedicatedIps);
    drawZones(state.Zones, state.Pools);
    drawQueue(state.Queue);
    drawRecent(state.Recent);
    drawTimeline(state.Timeline);
    drawWarmup(warmup);
    drawForecast(forecast.Forecast);
    window.kiln.state = state;
    window.kiln.warmup = warmup;
    window.kiln.forecast = forecast.Forecast;
    window.kiln.refreshes++;
    $("refreshes").textContent = String(window.kiln.refreshes);
    $("updated").textContent = state.Now;
    $("status").textContent = "live";
    $("status").className = "status ok";
  } catch (e) {
    $("status").textContent = "cannot refresh: " + e.message;
    $("status").className = "status error";
  } finally {
    busy = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("explain-form").addEventListener("submit", explain);
  refresh();
  setInterval(refresh, REFRESH_MS);
});
