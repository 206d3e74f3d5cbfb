// thermowatch live view: server-sent events in, DOM out.
// Every value from the server goes through textContent or an attribute,
// never innerHTML: device ids, messages and reasons are data, not markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const devices = new Map();   // device_id -> device JSON
const cards = new Map();     // device_id -> {root, parts...}
let alerts = [];
let incidents = [];          // open incidents, most severe and newest first (server order)
let resolvedIncidents = [];  // recently resolved, newest first
// States of a device that went offline announced: informational, not offline-red.
const ANNOUNCED = {shutdown: "shut down", maintenance: "maintenance"};
let clockSkew = 0;           // server now - browser now (ms)

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function ago(ts) {
  if (ts === null || ts === undefined) return "never";
  const s = Math.max(0, Math.round((Date.now() + clockSkew - ts) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}

function fmtTemp(t) {
  return t === null || t === undefined ? "—" : t.toFixed(1);
}

function sparkPoints(values) {
  if (values.length < 2) return "";
  let lo = Math.min(...values), hi = Math.max(...values);
  // At least 1 °C tall, so sensor noise stays a ripple rather than a zigzag.
  if (hi - lo < 1) { const mid = (hi + lo) / 2; lo = mid - 0.5; hi = mid + 0.5; }
  const step = 100 / (values.length - 1);
  return values.map((v, i) =>
    (i * step).toFixed(2) + "," + (28 - ((v - lo) / (hi - lo)) * 26).toFixed(2)).join(" ");
}

function makeCard(id) {
  const root = el("article", "device");
  root.dataset.deviceId = id;
  const top = el("div", "top");
  const name = el("span", "name", id);
  const site = el("span", "site");
  top.append(name, site);
  const temp = el("div", "temp");
  const value = el("span", "value");
  temp.append(value, el("span", "unit", "°C"));
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 100 30");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  const line = document.createElementNS(SVG, "polyline");
  svg.append(line);
  const bottom = el("div", "bottom");
  const state = el("span", "state");
  const when = el("span", "when");
  bottom.append(state, when);
  root.append(top, temp, svg, bottom);
  return {root, site, value, line, state, when};
}

function updateCard(card, d) {
  const classes = ["device", d.state];
  if (d.state in ANNOUNCED) classes.push("announced");
  if (d.alerts > 0) classes.push("alerting", "sev-" + (d.severity || "warning"));
  card.root.className = classes.join(" ");
  card.root.dataset.state = d.state;
  card.root.title = d.state_reason || "";
  card.site.textContent = d.site;
  card.value.textContent = fmtTemp(d.temp_c);
  card.line.setAttribute("points", sparkPoints(d.spark || []));
  let label = ANNOUNCED[d.state] || d.state;
  if (d.quality && d.quality !== "ok") label += " · " + d.quality;
  if (d.alerts > 0) label += " · " + d.alerts + (d.alerts === 1 ? " alert" : " alerts");
  card.state.textContent = label;
  card.when.textContent = ago(d.ts);
}

function renderDevices() {
  const box = document.getElementById("devices");
  const ids = [...devices.keys()].sort((a, b) => {
    const da = devices.get(a), db = devices.get(b);
    return da.site === db.site ? (a < b ? -1 : a > b ? 1 : 0) : (da.site < db.site ? -1 : 1);
  });
  let online = 0, announced = 0;
  ids.forEach((id, i) => {
    const d = devices.get(id);
    if (d.state === "online") online += 1;
    if (d.state in ANNOUNCED) announced += 1;
    let card = cards.get(id);
    if (!card) { card = makeCard(id); cards.set(id, card); }
    updateCard(card, d);
    if (box.children[i] !== card.root) box.insertBefore(card.root, box.children[i] || null);
  });
  document.getElementById("no-devices").hidden = ids.length > 0;
  document.getElementById("count-online").textContent = online + " online";
  document.getElementById("count-offline").textContent =
    (ids.length - online - announced) + " offline";
  const pill = document.getElementById("count-announced");
  pill.textContent = announced + " shut down / maintenance";
  pill.hidden = announced === 0;
}

function plural(n, one, many) {
  return n + " " + (n === 1 ? one : many);
}

function ruleName(rule) {
  return rule.replace(/_/g, " ");
}

function alertRow(a) {
  const row = el("li", "alert sev-" + a.severity);
  row.dataset.alertId = a.alert_id;
  row.dataset.deviceId = a.device_id;
  if (a.incident_id) row.dataset.incidentId = a.incident_id;
  const body = el("div");
  body.append(el("div", "what", a.device_id + " · " + ruleName(a.rule)),
              el("div", "msg", a.message || ""));
  row.append(el("span", "sev", a.severity), body, el("span", "age", "opened " + ago(a.opened_at)));
  return row;
}

function incidentRow(inc) {
  const row = el("li", "incident sev-" + inc.severity + " " + inc.status);
  row.dataset.incidentId = inc.incident_id;
  row.dataset.devices = inc.devices.join(" ");
  const where = inc.scope === "site"
    ? "site " + inc.site + " · " + plural(inc.device_count, "device", "devices")
    : inc.devices.join(", ") + (inc.site ? " · " + inc.site : "");
  const body = el("div", "body");
  body.append(el("div", "what", inc.title || where));
  if (inc.title) body.append(el("div", "where", where));
  const rules = el("ul", "rules");
  for (const r of inc.rules) rules.append(el("li", "rule", ruleName(r)));
  body.append(rules);
  if (inc.message) body.append(el("div", "msg", inc.message));
  const mine = alerts.filter((a) => a.incident_id === inc.incident_id);
  if (inc.status === "open" && mine.length) {
    const more = el("details", "members");
    more.append(el("summary", null, "its open alerts (" + mine.length + ")"));
    const list = el("ol", "member-alerts");
    list.append(...mine.map(alertRow));
    more.append(list);
    body.append(more);
  }
  const when = inc.status === "open" ? "opened " + ago(inc.opened_at)
    : "resolved " + ago(inc.resolved_at || inc.updated_at);
  const age = el("span", "age", when);
  age.dataset.ts = String(inc.status === "open" ? inc.opened_at : inc.resolved_at || inc.updated_at);
  age.dataset.verb = inc.status === "open" ? "opened" : "resolved";
  row.append(el("span", "sev", inc.severity), body,
             el("div", "side", plural(inc.alerts, "alert", "alerts")), age);
  return row;
}

function keepOpen(list) {  // which incidents' alert lists the reader has expanded
  return new Set([...list.querySelectorAll("details.members[open]")].map(
    (d) => d.closest(".incident").dataset.incidentId));
}

function renderIncidents() {
  const list = document.getElementById("incidents");
  const expanded = keepOpen(list);
  list.replaceChildren(...incidents.map((inc) => {
    const row = incidentRow(inc);
    const more = row.querySelector("details.members");
    if (more && expanded.has(inc.incident_id)) more.open = true;
    return row;
  }));
  document.getElementById("no-incidents").hidden = incidents.length > 0;
  const count = document.getElementById("count-incidents");
  count.textContent = incidents.length === 0 ? "no open incidents"
    : plural(incidents.length, "open incident", "open incidents");
  count.className = "pill " + (incidents.length ? "alerting" : "quiet");
  document.getElementById("resolved").replaceChildren(...resolvedIncidents.map(incidentRow));
  document.getElementById("resolved-panel").hidden = resolvedIncidents.length === 0;
  document.getElementById("resolved-title").textContent =
    "Recently resolved (" + resolvedIncidents.length + ")";
}

function renderAlerts() {
  // Info alerts (an announced shutdown, maintenance) are a state, not something to act
  // on: they go to the collapsed "Informational" list, below the ones that matter.
  const acting = alerts.filter((a) => !a.informational);
  const info = alerts.filter((a) => a.informational);
  document.getElementById("alerts").replaceChildren(...acting.map(alertRow));
  document.getElementById("info-alerts").replaceChildren(...info.map(alertRow));
  document.getElementById("info-panel").hidden = info.length === 0;
  document.getElementById("info-title").textContent = "Informational (" + info.length + ")";
  document.getElementById("no-alerts").hidden = acting.length > 0;
  const count = document.getElementById("count-alerts");
  count.textContent = acting.length === 0 ? "no open alerts"
    : plural(acting.length, "open alert", "open alerts");
  count.className = "pill " + (acting.length ? "warning" : "quiet");
  const urgent = incidents.length || acting.length;
  document.title = (urgent ? "(" + urgent + ") " : "") + "thermowatch · live";
}

function setConnected(up) {
  const conn = document.getElementById("conn");
  conn.textContent = up ? "live" : "reconnecting…";
  conn.className = "conn " + (up ? "up" : "down");
}

function onState(data, full) {
  const s = JSON.parse(data);
  clockSkew = s.now - Date.now();
  if (full) devices.clear();
  for (const d of s.devices) devices.set(d.device_id, d);
  if (full) for (const id of [...cards.keys()]) {
    if (!devices.has(id)) { cards.get(id).root.remove(); cards.delete(id); }
  }
  if (s.incidents) incidents = s.incidents;
  if (s.resolved_incidents) resolvedIncidents = s.resolved_incidents;
  if (s.alerts) alerts = s.alerts;
  if (s.alerts || s.incidents) { renderIncidents(); renderAlerts(); }
  renderDevices();
  document.getElementById("updated").textContent = new Date(s.now).toLocaleTimeString();
  document.body.dataset.version = String(s.version);
  document.body.dataset.ready = "1";
}

function start() {
  const events = new EventSource("/events");
  events.addEventListener("snapshot", (e) => onState(e.data, true));
  events.addEventListener("delta", (e) => onState(e.data, false));
  events.onopen = () => setConnected(true);
  events.onerror = () => setConnected(false);
  setInterval(() => {  // keep the "… ago" texts moving between events
    for (const [id, card] of cards) card.when.textContent = ago(devices.get(id).ts);
    for (const row of document.querySelectorAll(".alert .age")) {
      const a = alerts.find((x) => x.alert_id === row.parentElement.dataset.alertId);
      if (a) row.textContent = "opened " + ago(a.opened_at);
    }
    for (const age of document.querySelectorAll(".incident > .age")) {
      age.textContent = age.dataset.verb + " " + ago(Number(age.dataset.ts));
    }
  }, 1000);
}

document.addEventListener("DOMContentLoaded", start);
