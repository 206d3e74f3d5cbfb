// thermowatch live view: server-sent events in, DOM out.
// Every value from the server goes through textContent or an attribute,
// never innerHTML: device ids, messages and reasons are data, not markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const devices = new Map();   // device_id -> device JSON
const cards = new Map();     // device_id -> {root, parts...}
let alerts = [];
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
  if (d.alerts > 0) classes.push("alerting", "sev-" + (d.severity || "warning"));
  card.root.className = classes.join(" ");
  card.root.dataset.state = d.state;
  card.root.title = d.state_reason || "";
  card.site.textContent = d.site;
  card.value.textContent = fmtTemp(d.temp_c);
  card.line.setAttribute("points", sparkPoints(d.spark || []));
  let label = d.state;
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
  let online = 0;
  ids.forEach((id, i) => {
    const d = devices.get(id);
    if (d.state === "online") online += 1;
    let card = cards.get(id);
    if (!card) { card = makeCard(id); cards.set(id, card); }
    updateCard(card, d);
    if (box.children[i] !== card.root) box.insertBefore(card.root, box.children[i] || null);
  });
  document.getElementById("no-devices").hidden = ids.length > 0;
  document.getElementById("count-online").textContent = online + " online";
  document.getElementById("count-offline").textContent = (ids.length - online) + " offline";
}

function renderAlerts() {
  const list = document.getElementById("alerts");
  const rows = alerts.map((a) => {
    const row = el("li", "alert sev-" + a.severity);
    row.dataset.alertId = a.alert_id;
    row.dataset.deviceId = a.device_id;
    const body = el("div");
    body.append(el("div", "what", a.device_id + " · " + a.rule.replace(/_/g, " ")),
                el("div", "msg", a.message || ""));
    row.append(el("span", "sev", a.severity), body, el("span", "age", "opened " + ago(a.opened_at)));
    return row;
  });
  list.replaceChildren(...rows);
  document.getElementById("no-alerts").hidden = alerts.length > 0;
  const count = document.getElementById("count-alerts");
  count.textContent = alerts.length === 0 ? "no open alerts"
    : alerts.length + (alerts.length === 1 ? " open alert" : " open alerts");
  count.className = "pill " + (alerts.length ? "alerting" : "quiet");
  document.title = (alerts.length ? "(" + alerts.length + ") " : "") + "thermowatch · live";
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
  if (s.alerts) { alerts = s.alerts; renderAlerts(); }
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
    for (const row of document.querySelectorAll("#alerts .alert .age")) {
      const a = alerts.find((x) => x.alert_id === row.parentElement.dataset.alertId);
      if (a) row.textContent = "opened " + ago(a.opened_at);
    }
  }, 1000);
}

document.addEventListener("DOMContentLoaded", start);
