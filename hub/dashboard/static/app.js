// cryomesh dashboard: plain JavaScript, no libraries, nothing fetched from outside the hub.
// Sign-in: OAuth 2.0 authorization code flow with PKCE (S256) against the hub; the access
// token lives in sessionStorage (gone when the tab closes) and ends at sign-out.
"use strict";

const CLIENT_ID = "cryomesh-dashboard";
const REDIRECT = `${location.origin}/dashboard/`;
const REFRESH_MS = 5000;
const store = window.sessionStorage;
let refreshTimer = null;

// ---------------------------------------------------------------- helpers

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function pill(v) { return `<span class="pill ${esc(v)}">${esc(v)}</span>`; }
function bytes(n) {
  const u = ["B", "KB", "MB", "GB", "TB", "PB"]; let i = 0; n = Number(n) || 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}
function bar(free, total, label) {
  const pct = total ? Math.max(0, Math.min(100, (100 * free) / total)) : 0;
  return `<div class="bar" title="${esc(label)}"><span style="width:${pct.toFixed(1)}%"></span><em>${esc(label)}</em></div>`;
}
function age(s) { return s == null ? "never" : s < 90 ? `${Math.round(s)} s ago` : `${Math.round(s / 60)} min ago`; }
function b64url(bytesArr) { return btoa(String.fromCharCode(...bytesArr)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""); }
function randomString(n) { const a = new Uint8Array(n); crypto.getRandomValues(a); return b64url(a); }

// ---------------------------------------------------------------- sign-in (PKCE)

async function signIn() {
  const verifier = randomString(48);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const state = randomString(16);
  store.setItem("pkce_verifier", verifier);
  store.setItem("pkce_state", state);
  store.setItem("after_signin", location.hash || "#/overview");
  const q = new URLSearchParams({ response_type: "code", client_id: CLIENT_ID, redirect_uri: REDIRECT, state,
    code_challenge: b64url(digest), code_challenge_method: "S256" });
  location.assign(`/oauth/authorize?${q}`);
}

async function finishSignIn() {
  const q = new URLSearchParams(location.search);
  if (!q.has("code")) return false;
  if (q.get("state") !== store.getItem("pkce_state")) throw new Error("the sign-in answer does not match this tab's request");
  const body = new URLSearchParams({ grant_type: "authorization_code", code: q.get("code"), redirect_uri: REDIRECT,
    client_id: CLIENT_ID, code_verifier: store.getItem("pkce_verifier") || "" });
  const r = await fetch("/oauth/token", { method: "POST", body });
  const t = await r.json();
  if (!r.ok) throw new Error(t.error_description || t.error || "sign-in failed");
  store.setItem("token", t.access_token);
  store.removeItem("pkce_verifier"); store.removeItem("pkce_state");
  history.replaceState(null, "", `/dashboard/${store.getItem("after_signin") || "#/overview"}`);
  return true;
}

// GET answers by path, with their ETag: each refresh asks "If-None-Match" and a 304 (nothing
// this person may see changed) reuses the kept answer, so an idle page costs the hub next to
// nothing. cache: "no-store" keeps the browser's own cache out of it (we revalidate ourselves).
const answers = new Map();

async function api(path, opts = {}) {
  const token = store.getItem("token");
  const kept = opts.method ? undefined : answers.get(path);
  const r = await fetch(path, { ...opts, cache: "no-store", headers: { ...(opts.headers || {}), Authorization: `Bearer ${token}`,
    ...(opts.body ? { "Content-Type": "application/json" } : {}), ...(kept ? { "If-None-Match": kept.etag } : {}) } });
  if (r.status === 401) { store.removeItem("token"); answers.clear(); await signIn(); throw new Error("signed out"); }
  if (r.status === 304 && kept) return kept.data;
  const data = r.status === 204 ? null : await r.json();
  if (!r.ok) throw new Error(`${r.status} ${data?.error || ""}: ${data?.detail || ""}`);
  // When the answer arrived: ages in a kept answer are counted on from it.
  if (data && typeof data === "object") Object.defineProperty(data, "receivedAt", { value: Date.now() });
  const etag = r.headers.get("ETag");
  if (etag && !opts.method) answers.set(path, { etag, data });
  return data;
}

async function signOut() {
  try { await api("/api/v1/session/end", { method: "POST" }); } catch (e) { /* already ended */ }
  store.clear();
  answers.clear();
  document.getElementById("main").innerHTML =
    `<h2 data-testid="signed-out">Signed out</h2><p><a href="/dashboard/#/overview">Sign in again</a></p>`;
  document.getElementById("who").textContent = "";
  document.getElementById("signout").hidden = true;
  clearInterval(refreshTimer);
}

// ---------------------------------------------------------------- pages

function niceMax(v) {
  if (!(v > 0)) return 1;
  const e = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * e).find((m) => m >= v);
}
function num(v) { return (Math.round(v * 10) / 10).toLocaleString("en-US"); }
function duration(s) {
  s = Math.round(s);
  if (s < 90) return `${s} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  if (s < 48 * 3600) return `${+(s / 3600).toFixed(1)} h`;
  return `${+(s / 86400).toFixed(1)} days`;
}
function clock(t) { return new Date(t).toLocaleTimeString(); }

// One quantity over time on its own labelled axis: each series' free count (solid) and total (dashed).
function lineChart(points, series, axis, testid, height = 190) {
  const w = 900, h = height, left = 70, right = 16, top = 14, bottom = 26;
  const t0 = new Date(points[0].t).getTime(), t1 = new Date(points[points.length - 1].t).getTime();
  const max = niceMax(Math.max(...points.flatMap((p) => series.flatMap((s) => [s.free(p), s.total(p)]))));
  const x = (t) => left + ((w - left - right) * (new Date(t).getTime() - t0)) / Math.max(1, t1 - t0);
  const y = (v) => h - bottom - ((h - top - bottom) * v) / max;
  const grid = [0, max / 2, max].map((v) => `<line x1="${left}" y1="${y(v)}" x2="${w - right}" y2="${y(v)}" stroke="#e3e6ec"/>
    <text x="${left - 6}" y="${y(v) + 4}" text-anchor="end" data-testid="y-tick">${num(v)}</text>`).join("");
  const line = (s, get, dashed) => `<polyline fill="none" stroke="${s.color}" stroke-width="${dashed ? 1 : 2}" ${
    dashed ? 'stroke-dasharray="5 4" opacity="0.7"' : ""} points="${points.map((p) => `${x(p.t).toFixed(1)},${y(get(p)).toFixed(1)}`).join(" ")}"/>`;
  const lines = series.map((s) => `${line(s, s.total, true)}${line(s, s.free, false)}${
    points.map((p) => `<circle cx="${x(p.t).toFixed(1)}" cy="${y(s.free(p)).toFixed(1)}" r="2.5" fill="${s.color}"/>`).join("")}`).join("");
  const mid = (top + h - bottom) / 2;
  const labels = `<text x="14" y="${mid}" text-anchor="middle" transform="rotate(-90 14 ${mid})" class="axis-title" data-testid="y-axis">${esc(axis)}</text>
    <text x="${left}" y="${h - 8}">${clock(t0)}</text><text x="${w - right}" y="${h - 8}" text-anchor="end">${clock(t1)}</text>`;
  const legend = series.map((s) => `<span><i class="swatch" style="background:${s.color}"></i>${esc(s.name)} free</span>`).join("");
  return `<svg class="chart" viewBox="0 0 ${w} ${h}" style="height:${h}px" role="img" aria-label="${esc(axis)} over time"
    data-testid="${testid}" data-max="${max}">${grid}${lines}${labels}</svg>
    <div class="legend">${legend}<span class="muted">dashed: total</span></div>`;
}

// What the chart's points cover, in words: "last 20 s" while they are current.
function spanLabel(cap) {
  if (!cap.points.length) return `no history in the last ${duration(cap.hours * 3600)}`;
  if (cap.points.length === 1) return `one point, at ${clock(cap.last)}`;
  if (cap.age_s <= 2 * cap.bucket_s + 30) return `last ${duration(cap.span_s)}`;
  return `${duration(cap.span_s)} until ${clock(cap.last)} (${duration(cap.age_s)} ago)`;
}

function capacityCharts(cap) {
  if (!cap.points.length) return `<p class="muted">No capacity history yet.</p>`;
  const gpuModels = [...new Set(cap.points.flatMap((p) => Object.keys(p.gpus)))];
  const colors = ["#2458c6", "#1f8a4c", "#b7791f", "#8e44ad", "#c0392b"];
  const cpus = lineChart(cap.points, [{ name: "CPUs", color: "#5d6677", free: (p) => p.cpus_free, total: (p) => p.cpus_total }],
    "CPUs", "capacity-chart-cpus");
  const gpus = gpuModels.length ? lineChart(cap.points, gpuModels.map((m, i) => ({ name: `${m} GPUs`, color: colors[i % colors.length],
    free: (p) => p.gpus[m]?.free || 0, total: (p) => p.gpus[m]?.total || 0 })), "GPUs", "capacity-chart-gpus") : "";
  return `${cpus}${gpus}<p class="muted">one point per ${duration(cap.bucket_s)} (the average of the heartbeats in it)</p>`;
}

const SITES_PER_PAGE = 50;
const SITE_FILTERS = ["q", "status", "reachability", "institution"];

// Totals for the whole network, and the sites one filtered page at a time.
async function overview(params) {
  const site = params.get("site") || "";
  const offset = Math.max(0, Number(params.get("offset")) || 0);
  const chosen = Object.fromEntries(SITE_FILTERS.map((k) => [k, params.get(k) || ""]));
  const sitesQuery = new URLSearchParams({ limit: String(SITES_PER_PAGE), offset: String(offset),
    ...Object.fromEntries(Object.entries(chosen).filter(([, v]) => v)) });
  const capQuery = new URLSearchParams({ hours: "6", ...(site ? { site } : {}) });
  const [s, cap] = await Promise.all([api(`/api/v1/dashboard/overview?${sitesQuery}`), api(`/api/v1/dashboard/capacity?${capQuery}`)]);
  const since = (Date.now() - s.receivedAt) / 1000;
  const gpuCards = Object.entries(s.gpus).map(([m, g]) =>
    `<div class="card" data-testid="gpu-${esc(m)}">${esc(m)} GPUs<b>${g.free} / ${g.total}</b><span class="muted">free</span></div>`).join("");
  const rows = s.sites.map((x) => {
    const c = x.capacity;
    const gpus = c ? Object.entries(c.gpus).map(([m, g]) => bar(g.free, g.total, `${m} ${g.free}/${g.total}`)).join("") : "";
    return `<tr data-testid="site-row" data-site="${esc(x.name)}"><td><b>${esc(x.name)}</b><br><span class="muted">${esc(x.display_name)}</span>${x.runtimes.length
      ? `<br><span class="muted" data-testid="site-runtimes">${esc(x.runtimes.join(", "))}</span>` : ""}</td>
      <td>${esc(x.institution)}</td><td>${pill(x.status)} ${pill(x.reachability)}</td><td>${age(x.heartbeat_age_s == null ? null : x.heartbeat_age_s + since)}</td>
      <td>${c ? bar(c.cpus_free, c.cpus_total, `${c.cpus_free}/${c.cpus_total} CPUs free`) : '<span class="muted">no report</span>'}</td>
      <td>${gpus || '<span class="muted">—</span>'}</td></tr>`;
  }).join("");
  const pick = (name, values) => `<select class="sites-filter" name="${name}" data-testid="sites-${name}"><option value="">any ${name}</option>${
    values.map((v) => `<option ${v === chosen[name] ? "selected" : ""}>${v}</option>`).join("")}</select>`;
  const filters = `<input class="sites-filter" name="q" placeholder="name" value="${esc(chosen.q)}" data-testid="sites-q">
    ${pick("status", ["pending", "active", "suspended"])} ${pick("reachability", ["unknown", "online", "unreachable"])}
    <input class="sites-filter" name="institution" placeholder="institution" value="${esc(chosen.institution)}" data-testid="sites-institution">`;
  const last = Math.min(offset + s.sites.length, s.sites_matching);
  const pager = `<span data-testid="sites-shown">${s.sites.length ? `${offset + 1}–${last}` : "none"} of ${s.sites_matching}</span>
    <button class="secondary page" data-offset="${Math.max(0, offset - SITES_PER_PAGE)}" ${offset ? "" : "disabled"}>previous</button>
    <button class="secondary page" data-offset="${offset + SITES_PER_PAGE}" ${last < s.sites_matching ? "" : "disabled"}>next</button>`;
  const go = (changes) => {
    const q = new URLSearchParams(params);
    Object.entries(changes).forEach(([k, v]) => (v ? q.set(k, v) : q.delete(k)));
    location.hash = `#/overview?${q}`;
  };
  const bind = () => {
    document.querySelectorAll(".sites-filter").forEach((el) => el.addEventListener("change", () => go({ [el.name]: el.value, offset: "" })));
    document.querySelectorAll("button.page").forEach((b) => b.addEventListener("click", () => go({ offset: b.dataset.offset })));
  };
  const choices = [...new Set([...s.sites.map((x) => x.name), ...(site ? [site] : [])])];
  return { bind, html: `<div class="cards">
      <div class="card">Sites online<b data-testid="sites-online">${s.sites_by_reachability.online || 0} / ${s.sites_total}</b></div>
      <div class="card">CPUs free<b>${s.cpus_free} / ${s.cpus_total}</b></div>${gpuCards}</div>
    <h2>Sites</h2><p>${filters} ${pager}</p>
    <table data-testid="sites"><tr><th>site</th><th>institution</th><th>status</th><th>heartbeat</th><th>CPUs</th><th>GPUs</th></tr>${rows}</table>
    <h2>${site ? `${esc(site)}: capacity` : "Network capacity"}, <span data-testid="chart-span" data-first="${esc(cap.first)}"
      data-last="${esc(cap.last)}">${esc(spanLabel(cap))}</span>
      <select id="chart-site" data-testid="chart-site"><option value="">whole network</option>${choices.map((x) =>
      `<option value="${esc(x)}" ${x === site ? "selected" : ""}>${esc(x)}</option>`).join("")}</select></h2>
    <div data-testid="capacity-chart">${capacityCharts(cap)}</div>` };
}

async function jobsPage(params) {
  const chosen = { state: params.get("state") || "", site: params.get("site") || "", institution: params.get("institution") || "" };
  const query = new URLSearchParams(Object.entries(chosen).filter(([, v]) => v));
  const [d, all] = await Promise.all([api(`/api/v1/dashboard/jobs?${query}`), api("/api/v1/dashboard/overview?limit=500")]);
  const options = {
    state: ["QUEUED", "INITIALIZING", "RUNNING", "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"],
    site: all.sites.map((x) => x.name),
    institution: [...new Set([...d.jobs.map((j) => j.institution), chosen.institution].filter(Boolean))],
  };
  const filter = Object.entries(options).map(([name, values]) => `<label>${name} <select class="job-filter" name="${name}"
    data-testid="${name}-filter"><option value="">all</option>${values.map((v) =>
    `<option value="${esc(v)}" ${v === chosen[name] ? "selected" : ""}>${esc(v)}</option>`).join("")}</select></label>`).join(" ");
  const counts = Object.entries(d.by_state).map(([k, v]) => `${pill(k)} ${v}`).join(" ");
  const rows = d.jobs.map((j) => `<tr class="clickable" data-testid="job-row" data-job="${esc(j.id)}">
    <td>${esc(j.name)}<br><span class="muted">${esc(j.id.slice(0, 8))}</span></td><td>${pill(j.state)}</td><td>${esc(j.site || "—")}</td>
    <td>${esc(j.institution)}</td><td>${esc(j.why)}</td></tr>`).join("");
  const bind = () => {
    document.querySelectorAll("select.job-filter").forEach((sel) => sel.addEventListener("change", () => {
      const q = new URLSearchParams();
      document.querySelectorAll("select.job-filter").forEach((x) => { if (x.value) q.set(x.name, x.value); });
      location.hash = `#/jobs?${q}`;
    }));
    document.querySelectorAll("tr[data-job]").forEach((tr) => tr.addEventListener("click", () => { location.hash = `#/job/${tr.dataset.job}`; }));
  };
  return { bind, html: `${filter} <span>${counts}</span><h2>${d.total} job(s)</h2>
    <table data-testid="jobs"><tr><th>job</th><th>state</th><th>site</th><th>institution</th><th>why here / why still queued</th></tr>${rows}</table>` };
}

async function jobPage(id) {
  const d = await api(`/api/v1/dashboard/jobs/${encodeURIComponent(id)}`);
  const j = d.job, p = d.placement;
  const timeline = d.timeline.map((a) => `<tr><td>${a.attempt}</td><td>${esc(a.site)}</td><td>${pill(a.state)} ${esc(a.reported || "")}</td>
    <td>${esc(a.offered_at || "")}</td><td>${esc(a.started_at || "")}</td><td>${esc(a.ended_at || "")}</td><td>${esc(a.exit_code ?? "")}</td><td>${esc(a.reason || "")}</td></tr>`).join("");
  const verdicts = (p.latest?.verdicts || []).map((v) => `<tr data-testid="verdict"><td>${esc(v.site)}</td><td>${v.eligible ? "yes" : "no"}</td>
    <td>${v.score ?? ""}</td><td>${esc(v.reasons.join("; "))}</td></tr>`).join("");
  return `<p><a href="#/jobs">← all jobs</a></p><h2>${esc(j.name)} ${pill(j.state)}</h2>
    <p><b>Why here / why still queued:</b> <span data-testid="explanation">${esc(p.explanation)}</span></p>
    <p class="muted">owner ${esc(j.owner)} · ${esc(j.institution)} · ${esc(j.kind)} · created ${esc(j.created_at)}${j.state_reason ? ` · ${esc(j.state_reason)}` : ""}</p>
    <h2>Estimate at placement beside the actual run <span class="muted">(costs in ${esc(d.currency)})</span></h2>
    ${runsTable(d.runs, d.currency)}
    <h2>Placement: every site's verdict</h2><table data-testid="verdicts"><tr><th>site</th><th>eligible</th><th>score</th><th>reasons</th></tr>${verdicts}</table>
    <h2>Timeline</h2><table><tr><th>attempt</th><th>site</th><th>state</th><th>offered</th><th>started</th><th>ended</th><th>exit</th><th>reason</th></tr>${timeline}</table>
    ${classGrid(d.pictures)}
    <h2>Output (tail)</h2><pre data-testid="stdout">${esc(d.logs.stdout_tail || "(nothing yet)")}</pre>
    ${d.logs.stderr_tail ? `<pre>${esc(d.logs.stderr_tail)}</pre>` : ""}`;
}

function money(v, currency) { return v == null ? "—" : `${Number(v).toFixed(2)} ${esc(currency)}`; }

// Where the actual run fell: the estimate's p10–p90 as a band, its p50 as a tick, the actual as a dot.
function rangeStrip(e, wall) {
  const w = 160, h = 16, max = Math.max(e.p90_s ?? e.p50_s, wall ?? 0, 1) * 1.1, x = (v) => (w * v) / max;
  const band = e.p10_s != null && e.p90_s != null
    ? `<rect x="${x(e.p10_s).toFixed(1)}" y="4" width="${Math.max(1, x(e.p90_s) - x(e.p10_s)).toFixed(1)}" height="8" fill="#c9d7f3"/>` : "";
  const dot = wall != null ? `<circle cx="${x(wall).toFixed(1)}" cy="8" r="4" fill="#1d2330"/>` : "";
  return `<svg class="strip" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="estimate range and actual run">
    ${band}<line x1="${x(e.p50_s).toFixed(1)}" y1="1" x2="${x(e.p50_s).toFixed(1)}" y2="15" stroke="#2458c6" stroke-width="2"/>${dot}</svg>`;
}

// Per attempt: the estimate the broker made when it placed the attempt (never recomputed),
// the ledger's actual wall time and cost, and the two compared (runs that completed only).
function runsTable(runs, currency) {
  if (!runs.length) return `<p class="muted" data-testid="runs">Not placed yet, so no estimate.</p>`;
  const rows = runs.map((r) => {
    const e = r.estimate, a = r.actual, c = r.compared;
    const est = e ? `<td data-testid="est-run" data-p10="${e.p10_s ?? ""}" data-p50="${e.p50_s}" data-p90="${e.p90_s ?? ""}">${duration(e.p50_s)}
        <span class="muted">(p10 ${e.p10_s == null ? "?" : duration(e.p10_s)}, p90 ${e.p90_s == null ? "?" : duration(e.p90_s)})</span></td>
      <td data-testid="est-copy">${duration(e.copy_s)}</td><td data-testid="est-startup">${duration(e.startup_s)}</td>
      <td data-testid="est-cost">${money(e.cost, currency)}</td><td data-testid="est-learned">${e.runs == null ? "?" : `${e.runs} run${e.runs === 1 ? "" : "s"}`}</td>`
      : `<td colspan="5" class="muted">no estimate was recorded when it was placed</td>`;
    const act = a ? `<td data-testid="actual-wall" data-seconds="${a.wall_s}">${duration(a.wall_s)} ${pill(a.final_state)}</td>
      <td data-testid="actual-cost">${a.cost_shown ? money(a.cost, currency) : '<span class="muted">not shown to you</span>'}</td>`
      : `<td colspan="2" class="muted">not ended yet</td>`;
    const cmp = c ? `<td data-testid="ratio">${c.ratio.toFixed(2)}×</td>
      <td data-testid="inside">${c.inside_p10_p90 == null ? "?" : c.inside_p10_p90 ? "yes" : "no"}</td>`
      : `<td colspan="2" class="muted">${a && a.final_state !== "COMPLETE" ? "did not complete" : "—"}</td>`;
    return `<tr data-testid="run-row" data-attempt="${r.attempt}"><td>${r.attempt}</td><td>${esc(r.site)}${r.partition ? ` <span class="muted" data-testid="partition">${esc(r.partition)}</span>` : ""}</td>${est}${act}${cmp}
      <td>${e ? rangeStrip(e, a?.wall_s) : ""}</td></tr>`;
  }).join("");
  return `<table data-testid="runs"><tr><th>attempt</th><th>site (partition)</th><th>run p50 (p10, p90)</th><th>copy</th><th>start-up</th>
    <th>est. cost</th><th>learned from</th><th>actual run</th><th>actual cost</th><th>actual / p50</th><th>inside p10–p90</th>
    <th>range</th></tr>${rows}</table>`;
}

// Thumbnails made at the site by its agent (class averages, particles), inline as data URLs.
function thumbs(pictures, testid) {
  return `<div class="thumbs" data-testid="${testid}">${pictures.map((p) => `<figure data-testid="thumb" data-name="${esc(p.name)}">
    <img src="${p.src}" width="${p.width}" height="${p.height}" alt="${esc(p.caption || p.name)}">
    <figcaption>${p.share != null ? `<b>${(p.share * 100).toFixed(1)} %</b> of the particles<br>${esc(p.name)}`
      : esc(p.caption || p.name)}</figcaption></figure>`).join("")}</div>`;
}

function classGrid(pictures) {
  if (!pictures.length) return "";
  const px = pictures[0].pixel_size_a;
  return `<h2>2D class averages <span class="muted">(last iteration, largest share first${px ? `; ${px} Å/pixel` : ""}; made at ${esc(pictures[0].site)})</span></h2>
    ${thumbs(pictures, "classes")}`;
}

async function datasetPage(id) {
  const d = await api(`/api/v1/dashboard/datasets/${encodeURIComponent(id)}`);
  const x = d.dataset, acq = x.acquisition || {};
  const measured = d.pictures.find((p) => p.pixel_size_a)?.pixel_size_a;
  const source = x.source_job ? `made by job <a href="#/job/${esc(x.source_job)}">${esc(x.source_job)}</a> from ${esc(x.source_datasets.join(", "))}` : "";
  return `<p><a href="#/data">← all data</a></p><h2>${esc(x.title)} <span class="muted">${esc(x.id)}</span></h2>
    <p class="muted">${esc(x.owner_site)} · ${x.file_count} files · ${bytes(x.total_bytes)} · ${esc(x.visibility)}${source ? ` · ${source}` : ""}</p>
    <p><b>Pixel size:</b> <span data-testid="pixel-size">${acq.pixel_size_a != null ? `${acq.pixel_size_a} Å` : "not given"}</span>
      ${measured != null ? `<span class="muted" data-testid="pixel-size-measured">(in the images: ${measured} Å)</span>` : ""}
      ${x.instrument?.microscope ? ` · ${esc(x.instrument.microscope)}` : ""}${x.detector?.model ? ` · ${esc(x.detector.model)}` : ""}</p>
    ${x.description ? `<p>${esc(x.description)}</p>` : ""}
    <h2>Images <span class="muted">(thumbnails made at ${esc(x.owner_site)})</span></h2>
    ${d.pictures.length ? thumbs(d.pictures, "dataset-thumbs") : `<p class="muted">no thumbnails (no images found, or none sent)</p>`}
    <h2>Replicas</h2><table><tr><th>site</th><th>state</th><th>location</th></tr>${x.replicas.map((r) => `<tr><td>${esc(r.site)}</td><td>${pill(r.state)}</td><td>${esc(r.location)}</td></tr>`).join("")}</table>`;
}

async function dataPage() {
  const d = await api("/api/v1/dashboard/data");
  const ds = d.datasets.map((x) => `<tr data-testid="dataset-row"><td><a href="#/dataset/${esc(x.id)}"><b>${esc(x.title)}</b></a><br><span class="muted">${esc(x.id)}</span></td>
    <td>${esc(x.owner_site)}</td><td>${x.file_count}</td><td>${bytes(x.total_bytes)}</td><td>${esc(x.visibility)}</td>
    <td>${x.replicas.map((r) => `${esc(r.site)} ${pill(r.state)}`).join("<br>")}</td></tr>`).join("");
  const reqs = d.share_requests.map((r) => `<tr data-testid="share-row" data-request="${esc(r.id)}"><td>${esc(r.dataset_title)}</td>
    <td>${esc(r.owner_site)} → ${esc(r.dest_site)}</td><td>${esc(r.requested_by)}</td><td>${esc(r.purpose)}</td><td>${pill(r.state)}${r.awaiting.length ? ` <span class="muted" data-testid="awaiting">waiting for ${esc(r.awaiting.join(", "))}</span>` : ""}</td>
    <td>${esc([r.decided_by, r.receiver_decided_by].filter(Boolean).join(" · "))}</td><td>${r.can_decide ? `<button data-testid="approve" data-act="approve" data-id="${esc(r.id)}">Approve</button>
      <button class="secondary" data-testid="deny" data-act="deny" data-id="${esc(r.id)}">Deny</button>` : ""}</td></tr>`).join("");
  const moving = d.transfers.map((t) => {
    const publishing = ["QUEUED", "PUBLISHING"].includes(t.state);
    const done = t.state === "DONE" ? t.bytes_total : publishing ? t.published_bytes : t.fetched_bytes;
    return `<tr data-testid="transfer-row"><td>${esc(t.dataset)}</td><td>${esc(t.source_site)} → ${esc(t.dest_site)}</td><td>${pill(t.state)}</td>
      <td>${bar(done, t.bytes_total, `${bytes(done)} / ${bytes(t.bytes_total)}${publishing ? " published" : ""}`)}</td>
      <td>${t.rate_bps ? `${bytes(t.rate_bps)}/s` : "—"}</td><td>${t.eta_s != null ? `${t.eta_s} s` : "—"}</td><td>${esc(t.reason || "")}</td></tr>`;
  }).join("");
  const bind = () => document.querySelectorAll("button[data-act]").forEach((b) => b.addEventListener("click", async () => {
    b.disabled = true;
    try { await api(`/api/v1/share-requests/${b.dataset.id}/${b.dataset.act}`, { method: "POST", body: JSON.stringify({ reason: "decided in the dashboard" }) }); }
    catch (e) { alert(e.message); }
    render();
  }));
  return { bind, html: `<h2>Share requests <span class="muted">(${d.awaiting_me} waiting for your decision)</span></h2>
    <table data-testid="share-requests"><tr><th>dataset</th><th>from → to</th><th>requested by</th><th>purpose</th><th>state</th><th>decided by</th><th></th></tr>${reqs}</table>
    <h2>Transfers</h2><table data-testid="transfers"><tr><th>dataset</th><th>from → to</th><th>state</th><th>progress</th><th>rate</th><th>ETA</th><th>note</th></tr>${moving}</table>
    <h2>Catalog (${d.datasets_total})</h2><table data-testid="datasets"><tr><th>dataset</th><th>owner</th><th>files</th><th>size</th><th>visibility</th><th>replicas</th></tr>${ds}</table>` };
}

const USAGE_DAYS = [7, 30, 90, 365];

// Spent of the month's limit as a bar (amber past warn_at, red once spent), with a tick at warn_at.
function budgetBar(b) {
  const share = b.monthly_limit > 0 ? b.spent / b.monthly_limit : b.spent > 0 ? 1 : 0;
  const label = `${money(b.spent, b.currency)} of ${money(b.monthly_limit, b.currency)} (${Math.round(100 * share)} %)`;
  return `<div class="bar budget ${esc(b.state)}" data-testid="budget-bar" data-spent="${b.spent}" data-limit="${b.monthly_limit}"
    title="${esc(label)}"><span style="width:${Math.min(100, 100 * share).toFixed(1)}%"></span>
    <i class="warn-at" style="left:${(100 * b.warn_at).toFixed(1)}%"></i><em>${label}</em></div>
    <span class="muted" data-testid="budget-warn-at">warns at ${Math.round(100 * b.warn_at)} %</span>`;
}

async function usagePage(params) {
  const days = USAGE_DAYS.includes(Number(params.get("days"))) ? Number(params.get("days")) : 30;
  const d = await api(`/api/v1/dashboard/usage?days=${days}`);
  const rows = d.institutions;
  // Own use (an institution's jobs on its own sites) is neither lent nor borrowed: a bar of its own.
  const kinds = [["lent", "#1f8a4c", "lent to others"], ["borrowed", "#2458c6", "borrowed from others"], ["own", "#9aa3b2", "own use"]];
  const max = Math.max(0.0001, ...rows.flatMap((r) => kinds.map(([k]) => r[`${k}_cpu_hours`])));
  const w = 900, rowH = 60, h = Math.max(80, rows.length * rowH + 30), left = 140;
  const bars = rows.map((r, i) => {
    const y = 20 + i * rowH, sc = (v) => ((w - left - 20) * v) / max;
    return `<text x="4" y="${y + 26}">${esc(r.institution)}</text>${kinds.map(([k, color, label], j) =>
      `<rect x="${left}" y="${y + j * 17}" width="${sc(r[`${k}_cpu_hours`]).toFixed(1)}" height="15" fill="${color}"><title>${label} ${r[`${k}_cpu_hours`]} CPU-h</title></rect>`).join("")}`;
  }).join("");
  const table = rows.map((r) => `<tr data-testid="usage-row" data-institution="${esc(r.institution)}"><td>${esc(r.institution)}</td>
    <td>${r.lent_cpu_hours}</td><td>${r.borrowed_cpu_hours}</td><td>${r.own_cpu_hours}</td>
    <td>${r.lent_gpu_hours}</td><td>${r.borrowed_gpu_hours}</td><td>${r.own_gpu_hours}</td></tr>`).join("");
  const legend = kinds.map(([, color, label]) => `<span><i class="swatch" style="background:${color}"></i>${label}</span>`).join("");
  const costs = d.costs.map((c) => `<tr data-testid="cost-row" data-institution="${esc(c.institution)}"><td>${esc(c.institution)}</td>
    <td data-testid="cost-month">${money(c.month, d.currency)}</td><td data-testid="cost-period">${money(c.period, d.currency)}</td>
    <td>${c.budget ? budgetBar(c.budget) : '<span class="muted">no budget</span>'}</td>
    <td data-testid="budget-mode">${c.budget ? `${c.budget.enforce ? "enforced" : "warn only"} ${pill(c.budget.state)}` : ""}</td></tr>`).join("");
  const period = `<select id="usage-days" data-testid="usage-days">${USAGE_DAYS.map((n) =>
    `<option value="${n}" ${n === days ? "selected" : ""}>last ${n} days</option>`).join("")}</select>`;
  const bind = () => document.getElementById("usage-days").addEventListener("change", (e) => { location.hash = `#/usage?days=${e.target.value}`; });
  return { bind, html: `<p>Period: ${period}</p>
    <h2>Cost and budgets <span class="muted">(in ${esc(d.currency)}; budgets are per calendar month, UTC)</span></h2>
    <table data-testid="costs"><tr><th>institution</th><th>this month (${esc(d.month)})</th><th>last ${days} days</th>
      <th>budget: spent of limit</th><th>when spent</th></tr>${costs || '<tr><td colspan="5" class="muted">nothing to show</td></tr>'}</table>
    <h2>Lent versus borrowed, last ${days} days (CPU-hours)</h2>
    <svg class="chart" viewBox="0 0 ${w} ${h}" style="height:${h}px" data-testid="usage-chart">${bars}</svg>
    <div class="legend">${legend}</div>
    <table data-testid="usage"><tr><th>institution</th><th>lent CPU-h</th><th>borrowed CPU-h</th><th>own use CPU-h</th>
      <th>lent GPU-h</th><th>borrowed GPU-h</th><th>own use GPU-h</th></tr>${table}</table>` };
}

function setupPage() {
  return `<h2>Set your password</h2><form id="setup" data-testid="setup">
    <label>Username <input name="username" required></label> <label>Setup code <input name="code" required></label>
    <label>New password (12+ characters) <input name="password" type="password" minlength="12" required></label>
    <button type="submit">Set password</button></form><p id="setup-result"></p>`;
}

// ---------------------------------------------------------------- routing

// Each render is numbered: an answer that arrives after a later render began (the person moved
// on, or a refresh overlapped a page change) is dropped rather than painted over the newer page.
let rendering = 0;

async function render() {
  const mine = ++rendering;
  const [path, query] = (location.hash.slice(1) || "/overview").split("?");
  const params = new URLSearchParams(query || "");
  const page = path.split("/")[1];
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page || (page === "job" && a.dataset.page === "jobs") || (page === "dataset" && a.dataset.page === "data")));
  const main = document.getElementById("main");
  try {
    const out = page === "jobs" ? await jobsPage(params) : page === "job" ? await jobPage(path.split("/")[2])
      : page === "dataset" ? await datasetPage(path.split("/")[2]) : page === "data" ? await dataPage() : page === "usage" ? await usagePage(params) : await overview(params);
    if (mine !== rendering) return;
    // A page is its HTML, or its HTML and what to wire up once that HTML is in place.
    const { html, bind } = typeof out === "string" ? { html: out } : out;
    main.innerHTML = html;
    bind?.();
    document.getElementById("chart-site")?.addEventListener("change", (e) => {
      const q = new URLSearchParams(params);
      if (e.target.value) q.set("site", e.target.value); else q.delete("site");
      location.hash = `#/overview?${q}`;
    });
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000} s`;
  } catch (e) {
    if (mine === rendering && e.message !== "signed out") main.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

async function start() {
  if ((location.hash || "").startsWith("#/setup")) {
    document.getElementById("main").innerHTML = setupPage();
    document.getElementById("setup").addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = Object.fromEntries(new FormData(e.target));
      const r = await fetch("/api/v1/accounts/setup", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(f) });
      document.getElementById("setup-result").innerHTML = r.ok ? `Password set. <a href="/dashboard/?signin#/overview" data-testid="signin-link">Sign in</a>`
        : `<span class="error">${esc((await r.json()).detail)}</span>`;
    });
    return;
  }
  try { await finishSignIn(); } catch (e) { document.getElementById("main").innerHTML = `<p class="error">${esc(e.message)}</p>`; return; }
  if (!store.getItem("token")) { await signIn(); return; }
  const me = await api("/api/v1/session");
  // The person's name, then their username (what they sign in with); a client id only for accounts without either.
  const name = me.name || me.username || me.client_id, login = me.username && me.username !== name ? ` (${me.username})` : "";
  document.getElementById("who").innerHTML = `<b data-testid="who-name">${esc(name)}</b>${esc(login)} · ${esc(me.role)}${
    me.site ? ` of ${esc(me.site)}` : ""}${me.institution ? ` · ${esc(me.institution)}` : ""}`;
  const out = document.getElementById("signout");
  out.hidden = false;
  out.addEventListener("click", signOut);
  window.addEventListener("hashchange", render);
  await render();
  // Not while the person is typing into a filter: the page would be rewritten under them.
  refreshTimer = setInterval(() => {
    const detail = location.hash.startsWith("#/job/") || location.hash.startsWith("#/dataset/");
    if (!detail && !document.activeElement?.matches("main input")) render();
  }, REFRESH_MS);
}

start();
