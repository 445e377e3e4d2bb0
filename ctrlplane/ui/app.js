"use strict";
// The msgmesh control plane's web page: lists apps with their instances,
// their weights and whether they are online (a sidecar renews their lease),
// offline (the lease lapsed: not forwarded to) or static (added by hand,
// never registered: online), and sets a weight. Next to each weight it
// shows what the weight did, from the traffic the sidecars report with
// their leases (GET /v1/apps/{app}/traffic): the share of broker
// deliveries kept versus forwarded over the last minute, and a sparkline
// of deliveries per second over the last minutes (inline SVG, no chart
// library). Per app, its routing rules (read-only: colour and canary
// rules, docs/routing.md) and the topology the sidecars report: each topic, its
// cluster, who produces to it and which groups consume it. It uses the
// HTTP API with the operator token typed into the form, kept in
// sessionStorage.

const TOKEN_KEY = "msgmesh.ctrlplane.token";
const REFRESH_MS = 5000;

const SVG_NS = "http://www.w3.org/2000/svg";

const byId = (id) => document.getElementById(id);
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

// call sends one API request and returns the decoded JSON answer. A
// non-2xx answer throws an Error with the server's message.
async function call(method, path, body) {
  const opts = { method, headers: { Authorization: "Bearer " + token() } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (e) {
    data = null;
  }
  if (!resp.ok) {
    const msg = data && data.message ? data.message + " (" + data.error + ")" : resp.status + " " + resp.statusText;
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function setStatus(text, kind) {
  const s = byId("status");
  s.textContent = text;
  s.className = kind || "";
}

function showSession() {
  const signedIn = token() !== "";
  byId("login").hidden = signedIn;
  byId("session").hidden = !signedIn;
}

// el builds an element; attrs are attributes, children nodes or strings.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

let editing = false; // an input has focus: do not re-render under it

// load fetches and shows the apps. quiet: a periodic refresh, which leaves
// the status line alone when it succeeds.
async function load(quiet) {
  showSession();
  if (!token()) {
    byId("apps").replaceChildren();
    setStatus("Enter the operator token to see the apps.");
    return;
  }
  try {
    const apps = await call("GET", "/v1/apps");
    // One traffic call per app; an app whose call fails shows no traffic.
    const traffic = await Promise.all(apps.map((a) =>
      call("GET", "/v1/apps/" + encodeURIComponent(a.name) + "/traffic").catch(() => null)));
    render(apps, traffic);
    if (!quiet) setStatus(apps.length + " app(s), loaded at " + new Date().toLocaleTimeString(), "ok");
  } catch (e) {
    if (e.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showSession();
    }
    setStatus(e.message, "error");
  }
}

function render(apps, traffic) {
  const root = byId("apps");
  root.replaceChildren();
  if (apps.length === 0) {
    root.append(el("p", {}, "No apps yet. Create one with: meshctl apps create --app NAME"));
  }
  apps.forEach((app, i) => {
    const tr = traffic[i];
    const byInstance = new Map(((tr && tr.instances) || []).map((t) => [t.id, t]));
    const section = el("section", { class: "app", "data-app": app.name });
    const meta = "config version " + app.version + " · " + app.instances.length + " instance(s)" +
      (app.topology ? " · its own topology" : "");
    section.append(el("h2", {}, app.name), el("p", { class: "meta" }, meta));
    if (app.instances.length === 0) {
      section.append(el("p", {}, "No instances. Sidecars started with --ctrlplane --app " + app.name +
        " register themselves; to pre-provision one: meshctl instances add --app " + app.name + " --addr HOST:PORT"));
    } else {
      const tbody = el("tbody");
      for (const inst of app.instances) tbody.append(instanceRow(app.name, inst, byInstance.get(inst.id), tr));
      const head = el("tr", {}, el("th", {}, "Instance"), el("th", {}, "Forwarding address"), el("th", {}, "State"),
        el("th", {}, "Labels"), el("th", {}, "Weight"), el("th", {}, ""),
        el("th", { title: "broker deliveries over the last minute: kept here versus forwarded to siblings" }, "Kept / forwarded (1 min)"),
        el("th", { title: "deliveries to the app per second (solid) and taken from the broker per second (dashed)" }, "Delivered/s, last 10 min"));
      section.append(el("table", { class: "instances" }, el("thead", {}, head), tbody));
    }
    section.append(routingTable(app, tr));
    section.append(topologyTable(app.name, tr));
    root.append(section);
  });
}

// fmtRate prints a rate per second with a sensible precision.
function fmtRate(r) {
  if (r >= 100) return r.toFixed(0);
  if (r >= 10) return r.toFixed(1);
  return r.toFixed(2);
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

// shareCell shows the share of broker deliveries an instance kept versus
// forwarded over the last minute, as numbers and a two-part bar.
function shareCell(app, inst, t) {
  const td = el("td", { class: "share", "data-app": app, "data-id": inst.id });
  const lm = t && t.last_minute;
  if (!lm) {
    td.append(el("small", {}, t && t.last_report ? "no reports in the last minute" : "no reports"));
    return td;
  }
  if (lm.kept_share < 0) {
    td.append(el("small", {}, "no broker deliveries"));
    td.dataset.kept = "";
    return td;
  }
  const kept = Math.round(lm.kept_share * 100);
  td.dataset.kept = String(kept);
  const W = 80, H = 8;
  const bar = svg("svg", { class: "share-bar", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `kept ${kept}%, forwarded ${100 - kept}%` });
  bar.append(svg("rect", { class: "kept", x: 0, y: 0, width: (W * lm.kept_share).toFixed(1), height: H }),
    svg("rect", { class: "forwarded", x: (W * lm.kept_share).toFixed(1), y: 0, width: (W * (1 - lm.kept_share)).toFixed(1), height: H }));
  td.append(bar, el("br"), el("small", {}, `kept ${kept}% (${fmtRate(lm.kept)}/s) · forwarded ${100 - kept}% (${fmtRate(lm.forwarded)}/s)`));
  return td;
}

// sparkCell draws the instance's delivered/s (solid) and from-broker/s
// (dashed) over the traffic window as an inline SVG, x by time.
function sparkCell(app, inst, t, tr) {
  const td = el("td", { class: "spark", "data-app": app, "data-id": inst.id });
  const series = (t && t.series) || [];
  if (series.length === 0) {
    td.append(el("small", {}, "no data"));
    return td;
  }
  const W = 180, H = 36;
  const end = Date.parse(tr.now), span = tr.window_seconds * 1000;
  const max = Math.max(1e-9, ...series.map((p) => Math.max(p.rates.delivered, p.rates.from_broker)));
  const x = (p) => Math.max(0, W * (1 - (end - Date.parse(p.at)) / span)).toFixed(1);
  const y = (v) => (H - 1 - (v / max) * (H - 2)).toFixed(1);
  const line = (cls, get) => {
    const pts = series.map((p) => x(p) + "," + y(get(p))).join(" ");
    return svg("polyline", { class: cls, points: pts });
  };
  const last = series[series.length - 1];
  const chart = svg("svg", { class: "sparkline", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `delivered per second over the last ${tr.window}, up to ${fmtRate(max)}/s` });
  const title = svg("title");
  title.textContent = `now: ${fmtRate(last.rates.delivered)} delivered/s, ${fmtRate(last.rates.from_broker)} from broker/s, ` +
    `${last.in_flight} in flight; peak ${fmtRate(max)}/s; totals since ${t.started ? new Date(t.started).toLocaleString() : "start"}: ` +
    `${t.totals.from_broker} from broker, ${t.totals.forwarded} forwarded, ${t.totals.from_siblings} from siblings, ` +
    `${t.totals.delivered} delivered, ${t.totals.acked} acked, ${t.totals.nacked} nacked, ${t.totals.errors} errors`;
  chart.append(title, line("from-broker", (p) => p.rates.from_broker), line("delivered", (p) => p.rates.delivered));
  td.append(chart, " ", el("small", { class: "rate" }, fmtRate(last.rates.delivered) + "/s"));
  return td;
}

// routingTable lists the app's routing rules (docs/routing.md), read-only:
// which messages each takes, the instances it sends them to (a label
// selector) and its fallback. They are set with meshctl routing or
// PUT /v1/apps/{app}/routing. The counts are the sums of what the
// instances last reported (since each sidecar started): matched, applied
// (delivered to one of the rule's targets), fell back and held.
function routingTable(app, tr) {
  const wrap = el("div", { class: "routing", "data-app": app.name });
  wrap.append(el("h3", {}, "Routing rules"));
  const rules = app.routing || [];
  if (rules.length === 0) {
    wrap.append(el("p", { class: "meta" }, "No routing rules: the weights alone decide. To add one: meshctl routing add --app " +
      app.name + " --name NAME (--colour C | --percent P) --selector version=v2"));
    return wrap;
  }
  const counts = new Map();
  for (const t of (tr && tr.instances) || []) {
    for (const [name, c] of Object.entries(t.rules || {})) {
      const sum = counts.get(name) || { matched: 0, applied: 0, fell_back: 0, held: 0 };
      sum.matched += c.matched; sum.applied += c.applied; sum.fell_back += c.fell_back; sum.held += c.held || 0;
      counts.set(name, sum);
    }
  }
  const tbody = el("tbody");
  for (const r of rules) {
    const c = counts.get(r.name);
    const counted = c ? c.matched + " / " + c.applied + " / " + c.fell_back + " / " + c.held : "–";
    const fallback = r.fallback === "hold" ? "hold up to " + r.hold_for : (r.fallback || "anywhere");
    const matches = r.colour ? "colour " + r.colour : "canary " + (r.percent || 0) + " % of the rest";
    const selector = el("td", { class: "labels" });
    for (const k of Object.keys(r.selector || {}).sort()) selector.append(el("code", {}, k + "=" + r.selector[k]));
    tbody.append(el("tr", { "data-rule": r.name }, el("td", {}, el("code", {}, r.name)), el("td", {}, r.group || "every group"),
      el("td", {}, matches), selector, el("td", {}, fallback), el("td", { class: "rule-counts" }, counted)));
  }
  const head = el("tr", {}, el("th", {}, "Rule"), el("th", {}, "Group"), el("th", {}, "Takes"),
    el("th", { title: "the labels an instance must have to receive them" }, "To instances with"), el("th", {}, "Fallback"),
    el("th", { title: "deliveries the rule matched / delivered to its targets / fell back (delivered anywhere) / held (handed back to the broker), as the sidecars last reported (since each started)" }, "Matched / applied / fell back / held"));
  wrap.append(el("table", {}, el("thead", {}, head), tbody));
  return wrap;
}

// topologyTable lists the topics the app's sidecars reported: cluster,
// producing apps, consuming groups, and how many instances reported it.
function topologyTable(app, tr) {
  const wrap = el("div", { class: "topology", "data-app": app });
  wrap.append(el("h3", {}, "Topology"));
  const topics = (tr && tr.topology) || [];
  if (topics.length === 0) {
    wrap.append(el("p", { class: "meta" }, tr ? "No topics reported yet: sidecars report their registrations with their leases." :
      "Traffic not available."));
    return wrap;
  }
  const tbody = el("tbody");
  for (const tv of topics) {
    const consumers = el("td", { class: "consumers" });
    for (const c of tv.consumers || []) {
      consumers.append(el("code", {}, c.app + " / " + c.group + (c.lag == null ? "" : " · lag " + c.lag)));
    }
    const producers = el("td", { class: "producers" });
    for (const p of tv.producers || []) producers.append(el("code", {}, p));
    tbody.append(el("tr", { "data-topic": tv.topic }, el("td", {}, el("code", {}, tv.topic)), el("td", {}, tv.cluster),
      producers, consumers, el("td", {}, String(tv.instances.length))));
  }
  const head = el("tr", {}, el("th", {}, "Topic"), el("th", {}, "Cluster"), el("th", {}, "Produced by"),
    el("th", {}, "Consumed by (app / group)"), el("th", { title: "instances whose sidecars reported it" }, "Instances"));
  wrap.append(el("table", {}, el("thead", {}, head), tbody));
  return wrap;
}

// instanceState is api.Instance.State: online, offline or static.
function instanceState(inst) {
  if (inst.offline) return "offline";
  return inst.leased ? "online" : "static";
}

// stateCell shows the state, and when the sidecar last renewed its lease.
function stateCell(app, inst) {
  const state = instanceState(inst);
  const titles = {
    online: "its sidecar renews its lease: siblings forward to it",
    offline: "its lease lapsed: siblings do not forward to it; its weight is kept for when it comes back",
    static: "added by hand and never registered by a sidecar: treated as online",
  };
  const td = el("td", { class: "state" },
    el("span", { class: "state-" + state, "data-app": app, "data-id": inst.id, "data-state": state, title: titles[state] }, state));
  if (inst.last_seen) {
    td.append(el("br"), el("small", { class: "last-seen" }, "last seen " + new Date(inst.last_seen).toLocaleString()));
  }
  if (inst.sidecar_version) td.append(el("br"), el("small", {}, inst.sidecar_version));
  return td;
}

function instanceRow(app, inst, t, tr) {
  const data = { "data-app": app, "data-id": inst.id };
  const labels = el("td", { class: "labels" });
  for (const [k, v] of Object.entries(inst.labels || {}).sort()) labels.append(el("code", {}, k + "=" + v));
  const meter = el("meter", { min: "0", max: "100", value: String(inst.weight) });
  const input = el("input", { type: "number", min: "0", max: "100", step: "1", value: String(inst.weight),
    class: "weight", "aria-label": "weight of " + inst.id, ...data });
  const button = el("button", { type: "button", class: "set-weight", ...data }, "Set");
  input.addEventListener("focus", () => { editing = true; });
  input.addEventListener("blur", () => { editing = false; });
  input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") setWeight(app, inst.id, input); });
  button.addEventListener("click", () => setWeight(app, inst.id, input));
  return el("tr", data, el("td", {}, inst.id), el("td", {}, inst.addr), stateCell(app, inst), labels,
    el("td", {}, meter, " ", input), el("td", {}, button), shareCell(app, inst, t), sparkCell(app, inst, t, tr));
}

async function setWeight(app, id, input) {
  // The server checks the value (0..100) and says what is wrong.
  const weight = input.value === "" ? null : Number(input.value);
  try {
    const path = "/v1/apps/" + encodeURIComponent(app) + "/instances/" + encodeURIComponent(id) + "/weight";
    const inst = await call("PUT", path, { weight });
    editing = false;
    await load(true);
    setStatus("Weight of " + app + " / " + id + " set to " + inst.weight + ".", "ok");
  } catch (e) {
    setStatus("Setting the weight of " + app + " / " + id + ": " + e.message, "error");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  byId("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, byId("token").value.trim());
    byId("token").value = "";
    load(false);
  });
  byId("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    load(false);
  });
  byId("refresh").addEventListener("click", () => load(false));
  setInterval(() => { if (!editing && token() && !document.hidden) load(true); }, REFRESH_MS);
  load(false);
});
