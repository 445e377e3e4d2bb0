"use strict";
// The msgmesh control plane's web page: lists apps with their instances,
// their weights and whether they are online (a sidecar renews their lease),
// offline (the lease lapsed: not forwarded to) or static (added by hand,
// never registered: online), and sets a weight. It uses the HTTP API with the operator
// token typed into the form, kept in sessionStorage.

const TOKEN_KEY = "msgmesh.ctrlplane.token";
const REFRESH_MS = 5000;

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
    render(apps);
    if (!quiet) setStatus(apps.length + " app(s), loaded at " + new Date().toLocaleTimeString(), "ok");
  } catch (e) {
    if (e.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showSession();
    }
    setStatus(e.message, "error");
  }
}

function render(apps) {
  const root = byId("apps");
  root.replaceChildren();
  if (apps.length === 0) {
    root.append(el("p", {}, "No apps yet. Create one with: meshctl apps create --app NAME"));
  }
  for (const app of apps) {
    const section = el("section", { class: "app", "data-app": app.name });
    const meta = "config version " + app.version + " · " + app.instances.length + " instance(s)" +
      (app.topology ? " · its own topology" : "");
    section.append(el("h2", {}, app.name), el("p", { class: "meta" }, meta));
    if (app.instances.length === 0) {
      section.append(el("p", {}, "No instances. Sidecars started with --ctrlplane --app " + app.name +
        " register themselves; to pre-provision one: meshctl instances add --app " + app.name + " --addr HOST:PORT"));
    } else {
      const tbody = el("tbody");
      for (const inst of app.instances) tbody.append(instanceRow(app.name, inst));
      const head = el("tr", {}, el("th", {}, "Instance"), el("th", {}, "Forwarding address"), el("th", {}, "State"),
        el("th", {}, "Labels"), el("th", {}, "Weight"), el("th", {}, ""));
      section.append(el("table", {}, el("thead", {}, head), tbody));
    }
    root.append(section);
  }
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

function instanceRow(app, inst) {
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
    el("td", {}, meter, " ", input), el("td", {}, button));
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
