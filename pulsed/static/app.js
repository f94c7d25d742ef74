// pulsed console: polls /status and redraws; with the admin token, acts through /api/v1.
// No framework, no build step. The token lives in this tab only (sessionStorage) and
// goes in the Authorization header, never in a cookie: no CSRF surface.
"use strict";

const TOKEN_KEY = "pulsed.token";
let refreshMs = 2000;
let last = null;          // the last /status read, and when (ms)
let lastAt = 0;
let pending = null;       // an action waiting for the kernel: {text, done(st)}
let base = null;          // the digest the config edit started from
const drawn = new Map();  // service key -> {sig, node}: the sections on the page
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function ago(t, now) {
  if (t === null || t === undefined) return "never";
  const s = Math.max(0, now - t);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

function stamp(t) {
  return t ? new Date(t * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") : "";
}

const show = (v) => (v === null || v === undefined ? "–" : String(v));
const host = (a) => (a.includes(":") ? `[${a}]` : a);

function per(v, unit) {
  if (v === null || v === undefined) return "–";
  const steps = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [n, p] of steps) if (v >= n) return `${(v / n).toFixed(1)} ${p}${unit}/s`;
  return `${Math.round(v * 10) / 10} ${unit}/s`;
}

function rates(r) {
  return r ? `${per(r.connections, "conn")} · in ${per(r.bytes_in, "B")} · out ${per(r.bytes_out, "B")}`
    : "rates: –";
}

// Admin ------------------------------------------------------------------------------------

const token = () => sessionStorage.getItem(TOKEN_KEY);

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, cache: "no-store", body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({ error: `answered ${resp.status}` }));
  if (resp.status === 401 || (resp.status === 403 && data.error === "wrong token")) {
    sessionStorage.removeItem(TOKEN_KEY);
    adminMode();
  }
  return { status: resp.status, data };
}

// A modal question; resolves to the input's value (or true), or null when cancelled.
function ask(text, input) {
  const dialog = $("ask");
  const field = $("ask-input");
  $("ask-text").textContent = text;
  field.hidden = !input;
  field.type = (input && input.type) || "text";
  field.value = (input && input.value) || "";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "ok") resolve(null);
      else resolve(input ? field.value : true);
    }, { once: true });
    dialog.showModal();
    if (input) field.focus();
  });
}

function notice(text, kind) {
  const box = $("notice");
  box.textContent = text;
  box.className = `notice ${kind || ""}`;
  box.dataset.kind = kind || "";
  box.hidden = !text;
}

// Send an admin call after a confirmation; a 409 (it would leave the service with no
// server) asks again with the API's words, then forces. `done` tells when the kernel has it.
async function act(what, method, path, body, done) {
  if (!(await ask(`${what}?`))) return;
  let { status, data } = await api(method, path, body);
  if (status === 409) {
    const why = data.error.replace(/; repeat with force.*$/, "");
    if (!(await ask(`${why}. Do it anyway?`))) return;
    ({ status, data } = await api(method, path + (path.includes("?") ? "&" : "?") + "force=1", body));
  }
  if (status !== 200) {
    notice(`${what}: refused (${status}): ${data.error}`, "error");
    return;
  }
  pending = { text: what, done };
  notice(`${what}: sent, waiting for the kernel…`, "waiting");
  tick(true);
}

function realControls(s, r) {
  const path = `/api/v1/reals/${encodeURIComponent(s.key)}/${host(r.address)}:${r.port}`;
  const key = r.key;
  const find = (st) => st.services.flatMap((x) => x.reals).find((x) => x.key === key);
  const button = (action, label, method, done, bodyOf) => el("button", {
    type: "button", "data-action": action,
    onclick: async () => {
      let body;
      if (bodyOf) { body = await bodyOf(); if (body === null) return; }
      const suffix = action === "weight" ? "/weight" : `/${action}`;
      act(`${label} ${r.address}:${r.port} of ${s.name}`, method, path + suffix, body,
        (st) => { const x = find(st); return x && done(x, body); });
    },
  }, label);
  return el("td", { class: "actions" },
    button("drain", "drain", "POST", (x) => x.mode === "drain" && x.kernel_weight === 0),
    button("enable", "enable", "POST",
      (x) => x.mode === "enabled" && x.kernel_weight === x.effective_weight),
    button("disable", "disable", "POST", (x) => x.mode === "disable" && x.kernel_weight === null),
    button("weight", "weight", "PUT", (x, b) => x.weight_override === b.weight
        && x.kernel_weight === x.effective_weight,
      async () => {
        const v = await ask(`New weight for ${r.address}:${r.port} (0..65535)`,
          { value: show(r.configured_weight) });
        return v === null ? null : { weight: Number(v) };
      }));
}

function serviceControls(s) {
  const path = `/api/v1/services/${encodeURIComponent(s.key)}`;
  const all = (st, test) => {
    const x = st.services.find((y) => y.key === s.key);
    return x && x.reals.every(test);
  };
  return el("span", { class: "actions" },
    el("button", { type: "button", "data-action": "drain-service",
      onclick: () => act(`drain every real server of ${s.name}`, "POST", `${path}/drain`,
        undefined, (st) => all(st, (x) => x.mode === "drain" && !x.kernel_weight)) },
    "drain service"),
    el("button", { type: "button", "data-action": "enable-service",
      onclick: () => act(`enable every real server of ${s.name}`, "POST", `${path}/enable`,
        undefined, (st) => all(st, (x) => x.mode === "enabled")) },
    "enable service"));
}

// Rendering ---------------------------------------------------------------------------------

function history(r, now) {
  if (!r.history || !r.history.length) return "";
  return el("ul", { class: "history" }, r.history.map((h) => el("li", { title: stamp(h.at) },
    el("span", { class: `dot ${h.state}` }), `${h.state} ${ago(h.at, now)}: ${h.reason}`)));
}

function realRow(s, r, now, admin) {
  const mode = r.mode === "enabled" ? "" : r.mode;
  return el("tr", { class: `${r.health} ${r.mode}`, "data-real": r.key },
    el("td", { class: "server" }, `${host(r.address)}:${r.port}`),
    el("td", { class: "health" }, el("span", { class: `badge ${r.health}` }, r.health)),
    el("td", { class: "mode" }, mode ? el("span", { class: `badge ${r.mode}` }, mode) : ""),
    el("td", { class: "reason" }, r.reason),
    el("td", { class: "history" }, history(r, now)),
    el("td", { class: "num weight-configured", title: "configured in the file" },
      show(r.config_weight)),
    el("td", { class: "num weight-override" }, show(r.weight_override)),
    el("td", { class: "num weight-effective" }, show(r.effective_weight)),
    el("td", { class: "num weight-kernel" }, show(r.kernel_weight)),
    el("td", { class: "num conns" }, r.stats ? r.stats.active_connections : "–"),
    el("td", { class: "rates" }, r.rates ? per(r.rates.connections, "conn") : "–"),
    el("td", { class: "checked", title: stamp(r.last_check) }, ago(r.last_check, now)),
    admin ? realControls(s, r) : null);
}

const HEADS = ["real server", "health", "admin", "reason", "recent transitions", "weight",
  "override", "effective", "kernel", "active", "rate", "checked"];

function serviceSection(s, now, admin) {
  const flags = s.scheduler_flags && s.scheduler_flags.length ? ` (${s.scheduler_flags.join(",")})` : "";
  const sorry = s.sorry_server
    ? el("span", { class: `badge ${s.sorry_in_use ? "degraded" : "standby"} sorry` },
      `sorry ${s.sorry_server}: ${s.sorry_in_use ? "in use" : "standing by"}`)
    : null;
  const head = el("div", { class: "service-head" },
    el("h2", {}, s.name),
    el("span", { class: `badge ${s.state}` }, s.state),
    el("span", { class: "key" }, `${s.key} · ${s.scheduler}${flags} · ${s.forwarding}`),
    sorry,
    el("span", { class: "meta" }, `${s.reals_up}/${s.reals_total} up`),
    el("span", { class: "meta service-rates" }, rates(s.rates)),
    admin ? serviceControls(s) : null);
  const table = el("table", {},
    el("thead", {}, el("tr", {}, [...HEADS, ...(admin ? [""] : [])].map((h) => el("th", {}, h)))),
    el("tbody", {}, s.reals.map((r) => realRow(s, r, now, admin))));
  return el("section", { class: "service", "data-service": s.key },
    head, el("div", { class: "service-reason" }, s.reason), el("div", { class: "scroll" }, table));
}

// Each VIP with what holds it: a VRRP instance (this router, the peer, or nobody),
// a BGP announcement, or nothing pulsed manages.
function vipRows(st) {
  const rows = [];
  const seen = new Set();
  for (const v of st.vrrp || []) {
    let holder = "nobody";
    if (v.vips_held || v.role === "master") holder = "this router";
    else if (v.master) holder = `peer ${v.master}${v.master_priority ? ` (priority ${v.master_priority})` : ""}`;
    for (const vip of v.vips || []) {
      seen.add(vip.split("/")[0]);
      rows.push([vip, `VRRP ${v.name || ""} (${v.role})`, holder, holder === "this router" ? "ok" : holder === "nobody" ? "down" : "backup"]);
    }
  }
  for (const b of (st.bgp && st.bgp.vips) || []) {
    seen.add(b.vip.split("/")[0]);
    rows.push([b.vip, "BGP", b.announced ? "this router (announced)" : `nobody: ${b.reason}`, b.announced ? "ok" : "down"]);
  }
  for (const s of st.services) {
    if (s.vip && !seen.has(s.vip)) {
      seen.add(s.vip);
      rows.push([s.vip, "no VRRP or BGP", "wherever it is configured", "standby"]);
    }
  }
  return rows;
}

function renderVips(st) {
  const rows = vipRows(st);
  $("vip-list").replaceChildren(rows.length ? el("table", {},
    el("thead", {}, el("tr", {}, ["VIP", "instance / announcer", "held by"].map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map(([vip, by, holder, cls]) => el("tr", { "data-vip": vip },
      el("td", { class: "server" }, vip), el("td", {}, by),
      el("td", {}, el("span", { class: `badge ${cls}` }, holder))))))
    : el("p", { class: "meta" }, "no VIPs"));
}

function haBadges(st) {
  const ha = $("ha");
  const instances = st.vrrp || (st.ha ? [st.ha] : []);
  if (!instances.length) {
    ha.className = "badge standalone";
    ha.textContent = "HA: standalone";
    $("instances").replaceChildren();
    return;
  }
  ha.className = "badge";
  ha.textContent = "HA:";
  $("instances").replaceChildren(...instances.map((v) => el("span", {
    class: `badge ${v.role}${v.version_mismatch ? " mismatch" : ""}`, "data-instance": v.name,
    title: v.reason || "",
  }, `${v.name ? `${v.name}: ` : ""}${v.role}${v.effective_priority !== undefined ? ` (prio ${v.effective_priority})` : ""}`)));
  const warnings = instances.filter((v) => v.version_mismatch).map((v) => v.version_mismatch);
  $("vrrp-warning").textContent = warnings.join(" · ");
  $("vrrp-warning").hidden = !warnings.length;
}

function render(st) {
  const now = st.now;
  const admin = !!token();
  $("host").textContent = st.hostname || "";
  $("version").textContent = `pulsed ${st.version}`;
  haBadges(st);
  const sync = $("sync");
  sync.className = `badge ${st.reconcile.in_sync ? "ok" : "error"}`;
  sync.textContent = st.reconcile.in_sync ? "kernel in sync" : "kernel out of sync";
  sync.title = st.reconcile.reason;
  const c = st.config;
  $("config").textContent = `config generation ${c.generation}`;
  const reload = $("reload");
  reload.hidden = c.last_reload_ok;
  reload.textContent = c.last_reload_ok ? ""
    : `Last reload REFUSED (${stamp(c.last_check)}), the old config still runs: ${c.last_reload_error}`;
  $("updated").textContent = `updated ${stamp(now)}`;
  $("refresh").textContent = String(st.refresh_seconds);
  renderVips(st);
  // Redraw only the services that changed (at 1,000 services most do not between two
  // polls); relative times ("5s ago") are redrawn at least once a minute.
  const minute = Math.floor(now / 60);
  const sections = st.services.map((s) => {
    const sig = `${admin}|${minute}|${JSON.stringify(s)}`;
    const old = drawn.get(s.key);
    if (old && old.sig === sig) return old.node;
    const node = serviceSection(s, now, admin);
    drawn.set(s.key, { sig, node });
    return node;
  });
  if (drawn.size > st.services.length) {
    const keys = new Set(st.services.map((s) => s.key));
    for (const key of drawn.keys()) if (!keys.has(key)) drawn.delete(key);
  }
  if (!sections.length) sections.push(el("p", { class: "meta" }, "no services configured"));
  const main = $("services");
  if (sections.length !== main.children.length || sections.some((n, i) => main.children[i] !== n)) {
    main.replaceChildren(...sections);
  }
  $("cfg-writable").textContent = c.writable ? ""
    : "apply and rollback are off: set [api] config_write = true";
  $("cfg-apply").disabled = !c.writable;
  document.body.dataset.generation = String(c.generation);
  if (pending && pending.done(st)) {
    notice(`${pending.text}: done, the kernel has it`, "done");
    pending = null;
  }
}

// Stale: nothing may stay green when /status cannot be read.
function markStale(message) {
  document.body.classList.add("stale");
  document.body.dataset.stale = "true";
  for (const badge of document.querySelectorAll(".badge")) badge.className = "badge";
  drawn.clear();  // the cleared sections are drawn again once /status answers
  const age = last ? `last good status ${Math.round((Date.now() - lastAt) / 1000)}s ago` : "never read";
  $("error").textContent = `cannot read the daemon's status (${message}); everything shown is stale: ${age}`;
  $("error").hidden = false;
}

async function tick(once) {
  try {
    const resp = await fetch("/status", { cache: "no-store" });
    if (!resp.ok) throw new Error(`/status answered ${resp.status}`);
    const st = await resp.json();
    refreshMs = Math.max(500, (st.refresh_seconds || 2) * 1000);
    last = st;
    lastAt = Date.now();
    render(st);
    document.body.classList.remove("stale");
    document.body.dataset.stale = "false";
    $("error").hidden = true;
    document.body.dataset.loaded = "true";
  } catch (err) {
    markStale(err.message);
  }
  if (once !== true) setTimeout(tick, last && !document.body.classList.contains("stale") ? refreshMs : 1000);
}

// Config editor --------------------------------------------------------------------------

function annotated(text, errors) {
  const lines = text.split("\n");
  const byLine = new Map();
  const loose = [];
  for (const e of errors) {
    if (e.line) byLine.set(e.line, [...(byLine.get(e.line) || []), e]); else loose.push(e);
  }
  const out = loose.map((e) => el("div", { class: "cfg-error" }, e.text));
  for (const n of [...byLine.keys()].sort((a, b) => a - b)) {
    for (let i = Math.max(1, n - 2); i <= Math.min(lines.length, n + 1); i++) {
      out.push(el("div", { class: `cfg-line${i === n ? " bad" : ""}`, "data-line": i },
        el("span", { class: "ln" }, i), lines[i - 1]));
      if (i === n) for (const e of byLine.get(n)) out.push(el("div", { class: "cfg-error", "data-line": n }, `line ${n}: ${e.path ? `${e.path}: ` : ""}${e.message}`));
    }
  }
  return el("div", { class: "cfg-errors" }, out);
}

function result(...nodes) { $("cfg-result").replaceChildren(...nodes); }

async function loadConfig() {
  const { status, data } = await api("GET", "/api/v1/config");
  if (status !== 200) { result(el("p", { class: "cfg-error" }, data.error)); return; }
  $("cfg-text").value = data.text || "";
  base = data.digest;
  $("editor-meta").textContent = `${data.path}, generation ${data.generation}`;
  result();
}

async function validate() {
  const text = $("cfg-text").value;
  const { data } = await api("POST", "/api/v1/config/validate", { text });
  result(data.valid ? el("p", { class: "cfg-ok" }, `valid: ${data.services} services, ${data.reals} real servers`)
    : annotated(text, data.errors || [{ text: data.error }]));
  return data.valid;
}

async function plan() {
  const text = $("cfg-text").value;
  const { status, data } = await api("POST", "/api/v1/config/plan", { text });
  if (status === 422) { result(annotated(text, data.errors)); return null; }
  if (status !== 200) { result(el("p", { class: "cfg-error" }, data.error)); return null; }
  const lines = [...data.operations, ...data.vrrp.map((v) => `vrrp ${v}`)];
  result(el("div", { class: "cfg-plan" }, el("p", {}, lines.length ? `${lines.length} change(s):` : "no change to the IPVS table or VRRP"),
    el("pre", {}, lines.join("\n"))));
  return data;
}

async function applyConfig() {
  const planned = await plan();
  if (!planned) return;
  const n = planned.operations.length + planned.vrrp.length;
  if (!(await ask(`Write the config file and reload: ${n} change(s) to the IPVS table and VRRP?`))) return;
  const text = $("cfg-text").value;
  const { status, data } = await api("POST", "/api/v1/config/apply", { text, base });
  afterWrite(status, data, text, "applied");
}

function afterWrite(status, data, text, what) {
  if (status === 422 && data.errors) { result(annotated(text, data.errors)); return; }
  if (status !== 200) {
    result(el("p", { class: "cfg-error" }, `refused (${status}): ${data.error}`),
      data.diff ? el("pre", { class: "diff" }, data.diff) : null);
    return;
  }
  base = data.digest;
  result(el("p", { class: "cfg-ok" }, `${what}: generation ${data.generation}`), el("pre", { class: "diff" }, data.diff));
  pending = { text: `config ${what} (generation ${data.generation})`,
    done: (st) => st.config.generation >= data.generation && st.reconcile.in_sync };
  notice(`${pending.text}: waiting for the kernel…`, "waiting");
  loadHistory();
  tick(true);
}

async function loadHistory() {
  const { status, data } = await api("GET", "/api/v1/config/history");
  if (status !== 200) return;
  $("cfg-history").replaceChildren(el("table", {}, el("tbody", {}, data.entries.map((e) => el("tr", { "data-history": e.id },
    el("td", {}, e.id), el("td", {}, stamp(e.time)), el("td", {}, e.action), el("td", {}, e.who),
    el("td", {}, el("button", { type: "button", "data-action": "rollback", onclick: () => rollback(e.id) }, "roll back")))))));
}

async function rollback(id) {
  if (!(await ask(`Roll back to config ${id}: write it and reload?`))) return;
  const { status, data } = await api("POST", "/api/v1/config/rollback", { id });
  afterWrite(status, data, "", `rolled back to ${id}`);
  if (status === 200) loadConfig();
}

// Admin mode: controls only with a token ----------------------------------------------------

function adminMode() {
  const admin = !!token();
  $("login").hidden = admin;
  $("logout").hidden = !admin;
  $("editor").hidden = !admin;
  if (last) render(last);
  if (admin) { loadConfig(); loadHistory(); }
}

async function login() {
  const value = await ask("Admin token (the content of api.token_file); kept in this tab only",
    { type: "password" });
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value.trim());
  const { status, data } = await api("GET", "/api/v1/config");
  if (status !== 200) {
    sessionStorage.removeItem(TOKEN_KEY);
    notice(`token refused (${status}): ${data.error}`, "error");
  } else notice("");
  adminMode();
}

$("login").addEventListener("click", login);
$("logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); adminMode(); });
$("cfg-load").addEventListener("click", loadConfig);
$("cfg-validate").addEventListener("click", validate);
$("cfg-plan").addEventListener("click", plan);
$("cfg-apply").addEventListener("click", applyConfig);
adminMode();
tick();
