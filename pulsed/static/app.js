// pulsed status page: polls /status and redraws. No framework, no build step.
"use strict";

let refreshMs = 2000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
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

function weight(v) { return v === null || v === undefined ? "–" : String(v); }

function realRow(r, now) {
  const mode = r.mode === "enabled" ? "" : r.mode;
  const configured = r.weight_override === null
    ? weight(r.configured_weight) : `${r.configured_weight} (override)`;
  return el("tr", { class: `${r.health} ${r.mode}`, "data-real": r.key },
    el("td", { class: "server" }, `${r.address.includes(":") ? `[${r.address}]` : r.address}:${r.port}`),
    el("td", { class: "health" }, el("span", { class: `badge ${r.health}` }, r.health)),
    el("td", { class: "mode" }, mode ? el("span", { class: `badge ${r.mode}` }, mode) : ""),
    el("td", { class: "reason" }, r.reason),
    el("td", { class: "num weight-configured" }, configured),
    el("td", { class: "num weight-effective" }, weight(r.effective_weight)),
    el("td", { class: "num conns" }, r.stats ? r.stats.active_connections : "–"),
    el("td", { class: "checked", title: stamp(r.last_check) }, ago(r.last_check, now)),
    el("td", { class: "changed", title: stamp(r.last_transition) }, ago(r.last_transition, now)),
  );
}

function serviceSection(s, now) {
  const head = el("div", { class: "service-head" },
    el("h2", {}, s.name),
    el("span", { class: `badge ${s.state}` }, s.state),
    el("span", { class: "key" }, `${s.key} · ${s.scheduler} · ${s.forwarding}`),
    el("span", { class: "meta" }, `${s.reals_up}/${s.reals_total} up`));
  const table = el("table", {},
    el("thead", {}, el("tr", {},
      ...["real server", "health", "admin", "reason", "weight", "effective", "active",
        "last check", "last change"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...s.reals.map((r) => realRow(r, now))));
  return el("section", { class: "service", "data-service": s.key },
    head, el("div", { class: "service-reason" }, s.reason), table);
}

// One badge per VRRP instance ("VI_1: master (prio 150)"); a version mismatch turns it red.
function haBadges(st) {
  const ha = document.getElementById("ha");
  const instances = st.vrrp || (st.ha ? [st.ha] : []);
  if (!instances.length) {
    ha.className = "badge standalone";
    ha.textContent = "HA: standalone";
    ha.title = "no [[vrrp]] instance: this router holds no VIPs";
    document.getElementById("instances").replaceChildren();
    return;
  }
  ha.className = "badge";
  ha.textContent = "HA:";
  ha.title = "VRRP role of each instance on this router";
  const badges = instances.map((v) => {
    const prio = v.effective_priority !== undefined ? ` (prio ${v.effective_priority})` : "";
    const broken = v.version_mismatch ? " mismatch" : "";
    return el("span", {
      class: `badge ${v.role}${broken}`, "data-instance": v.name, title: v.reason || "",
    }, `${v.name ? `${v.name}: ` : ""}${v.role}${prio}`);
  });
  document.getElementById("instances").replaceChildren(...badges);
  const warnings = instances.filter((v) => v.version_mismatch).map((v) => v.version_mismatch);
  const warn = document.getElementById("vrrp-warning");
  warn.textContent = warnings.join(" · ");
  warn.hidden = !warnings.length;
}

function render(st) {
  const now = st.now;
  haBadges(st);
  const sync = document.getElementById("sync");
  sync.className = `badge ${st.reconcile.in_sync ? "ok" : "error"}`;
  sync.textContent = st.reconcile.in_sync ? "kernel in sync" : "kernel out of sync";
  sync.title = st.reconcile.reason;
  const c = st.config;
  document.getElementById("config").textContent =
    `config generation ${c.generation}` + (c.last_reload_ok ? "" : ` — ${c.reason}`);
  document.getElementById("updated").textContent = `updated ${stamp(now)}`;
  document.getElementById("refresh").textContent = String(st.refresh_seconds);
  const main = document.getElementById("services");
  const sections = st.services.map((s) => serviceSection(s, now));
  if (!sections.length) sections.push(el("p", { class: "meta" }, "no services configured"));
  main.replaceChildren(...sections);
  document.body.dataset.generation = String(c.generation);
}

async function tick() {
  const banner = document.getElementById("error");
  try {
    const resp = await fetch("/status", { cache: "no-store" });
    if (!resp.ok) throw new Error(`/status answered ${resp.status}`);
    const st = await resp.json();
    refreshMs = Math.max(500, (st.refresh_seconds || 2) * 1000);
    render(st);
    banner.hidden = true;
    document.body.dataset.loaded = "true";
  } catch (err) {
    banner.textContent = `cannot read the daemon's status: ${err.message}`;
    banner.hidden = false;
  }
  setTimeout(tick, refreshMs);
}

tick();
