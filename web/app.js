// POM's thin web client: reads the JSON API, follows server-sent events, and sends operators'
// actions with their token (kept for the browser session only, sent as a header, never in a URL).
"use strict";

const view = document.getElementById("view");
const flash = document.getElementById("flash");
let who = null;
let refreshTimer = null;

const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({
  "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
// Every time says its zone: UTC (`Z`) by default, or this browser's zone with its offset
// (`+01:00`) once the header's switch says so.
const localTimes = () => localStorage.getItem("pom-zone") === "local";
function time(t) {
  if (!t) return "—";
  if (!localTimes()) return esc(t.replace("T", " ").replace(/\.\d+Z$/, "Z"));
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return esc(t);
  const pad = (n) => String(Math.abs(n)).padStart(2, "0");
  const off = -d.getTimezoneOffset();
  return esc(`${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:` +
    `${pad(d.getSeconds())} ${off < 0 ? "-" : "+"}${pad(Math.trunc(off / 60))}:${pad(off % 60)}`);
}
const ago = (s) => s == null ? "never" : s < 90 ? `${s}s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` :
  s < 172800 ? `${Math.round(s / 3600)} h ago` : `${Math.round(s / 86400)} d ago`;
const badge = (state) => `<span class="badge s-${esc(state)}">${esc(String(state).replace("_", " "))}</span>`;
const runLink = (id) => (id ? `<a href="#/run/${encodeURIComponent(id)}">${esc(id)}</a>` : "—");
const fileLink = (id, text) => `<a href="#/file/${encodeURIComponent(id)}">${esc(text ?? id)}</a>`;

// Reads carry the signed-in token: from another host, reading needs it.
function authHeaders() {
  const token = sessionStorage.getItem("pom-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path) {
  const r = await fetch(path, { headers: { Accept: "application/json", ...authHeaders() } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

async function act(action) {
  const token = sessionStorage.getItem("pom-token");
  if (!token) { say("Sign in with an operator token to act.", true); return null; }
  const r = await fetch("/api/actions", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify(action),
  });
  const body = await r.json().catch(() => ({}));
  if (r.ok) say(body.message || "done");
  else say(body.reason || body.error || `HTTP ${r.status}`, true);
  refresh();
  return body;
}

function say(text, bad) {
  flash.textContent = text;
  flash.className = bad ? "bad" : "good";
  clearTimeout(say.t);
  say.t = setTimeout(() => { flash.textContent = ""; flash.className = ""; }, 6000);
}

function button(action, target, label, extra = {}) {
  const data = Object.entries(extra).map(([k, v]) => ` data-${k}="${esc(v)}"`).join("");
  return `<button class="act" data-action="${esc(action)}" data-target="${esc(target)}"${data}` +
    `${who ? "" : " disabled title=\"sign in to act\""}>${esc(label)}</button>`;
}

view.addEventListener("click", async (e) => {
  const b = e.target.closest("button.act");
  if (!b) return;
  const a = b.dataset.action, t = b.dataset.target;
  const key = { pause_model: "model", resume_model: "model", trigger: "model", pause_channel: "channel",
    resume_channel: "channel", cancel: "run", retry: "run", rerun: "run", hold: "file", release: "file",
    reinject: "file", cancel_replay: "session" }[a];
  const action = a === "reroute" ? { action: a, files: [t] } : { action: a, [key]: t };
  if (a === "trigger") {
    const input = document.querySelector(`input[data-time0="${CSS.escape(t)}"]`);
    // The picker's time is UTC, as every time POM shows: never the browser's zone.
    if (input && input.value) action.time0 = new Date(`${input.value}${input.value.length === 16 ? ":00" : ""}Z`).toISOString();
  }
  if (a === "reinject") {
    const area = document.getElementById("fixed");
    if (area && area.value.trim()) action.content = area.value;
  }
  b.disabled = true;
  await act(action);
  b.disabled = false;
});

// ---- pages -------------------------------------------------------------------------------

// What a model waits for: each slot filled (since when) or missing, and a join's window end.
function waitingFor(m) {
  if (m.trigger === "schedule" || !m.slots.some((s) => s.waiting)) return "";
  const slots = m.slots.map((s) => s.waiting
    ? `<span class="slot filled" data-slot="${esc(s.name)}">${esc(s.name)} ✓ <span class="muted">since ${time(s.since)}</span></span>`
    : `<span class="slot missing" data-slot="${esc(s.name)}">${esc(s.name)} ${s.required ? "missing" : "(optional)"}</span>`);
  return slots.join("<br>") + (m.window_ends ? `<div class="muted">window ends ${time(m.window_ends)}</div>` : "");
}

async function overview() {
  const o = await api("/api/overview");
  const alerts = o.alerts.length
    ? `<ul class="alerts">${o.alerts.map((a) => `<li class="alert k-${esc(a.kind)}" data-alert="${esc(a.kind)}">
        <b>${esc(a.kind.replace("_", " "))}</b> ${esc(a.message)} <span class="muted">since ${time(a.since)}</span>
        ${a.link && a.link !== "#/" ? `<a class="alert-link" href="${esc(a.link)}">open ${esc(a.subject)}</a>` : ""}</li>`).join("")}</ul>`
    : `<p class="ok-line">No alert.</p>`;
  const refused = o.rules.refused
    ? `<div class="refused"><b>Rule edit refused</b> at ${time(o.rules.refused.at)}; the previous rules stay in force (<a href="#/edit">the edit</a>).
        <ul>${o.rules.refused.problems.map((p) => `<li><code>${esc(p)}</code></li>`).join("")}</ul></div>` : "";
  const channels = o.channels.map((c) => `<tr data-channel="${esc(c.name)}">
      <td><b>${esc(c.name)}</b><div class="muted small">${esc(c.title)}</div></td>
      <td>${c.paused ? badge("paused") : c.late ? badge("late") : badge("flowing")}</td>
      <td class="num">${c.queue_depth}</td>
      <td>${time(c.last_arrival)}<div class="muted small">${ago(c.silent_s)}</div></td>
      <td class="small">${Object.entries(c.decided).map(([k, v]) => `${esc(k)} ${v}`).join(" · ") || "—"}</td>
      <td>${c.paused ? button("resume_channel", c.name, "Resume") : button("pause_channel", c.name, "Pause")}</td>
    </tr>`).join("");
  const models = o.models.map((m) => `<tr data-model="${esc(m.name)}">
      <td><b>${esc(m.name)}</b><div class="muted small">${esc(m.description)}</div></td>
      <td class="state">${badge(m.state)}${m.paused ? `<div class="muted small">by ${esc(m.paused.by)}</div>` : ""}</td>
      <td>${esc(m.trigger)}</td>
      <td class="num pending">${m.pending_inputs}</td>
      <td class="small waiting-for">${waitingFor(m)}</td>
      <td>${m.last_run ? `${runLink(m.last_run.id)} ${badge(m.last_run.state)}` : "—"}</td>
      <td>${time(m.next_time)}</td>
      <td class="actions">${m.paused ? button("resume_model", m.name, "Resume") : button("pause_model", m.name, "Pause")}
        <input type="datetime-local" data-time0="${esc(m.name)}" title="time0, in UTC (default: now)" aria-label="time0 in UTC">
        ${button("trigger", m.name, "Run now")}</td>
    </tr>`).join("");
  view.innerHTML = `<h1>Overview</h1>
    <section><h2>Alerts</h2>${alerts}${refused}</section>
    <section><h2>Channels</h2><table id="channels"><thead><tr><th>Channel</th><th>State</th><th>Queue</th>
      <th>Last arrival</th><th>Decided</th><th></th></tr></thead><tbody>${channels}</tbody></table></section>
    <section><h2>Models</h2><table id="models"><thead><tr><th>Model</th><th>State</th><th>Trigger</th>
      <th>Waiting inputs</th><th>Waiting for</th><th>Last run</th><th>Next scheduled</th><th>time0 (UTC)</th></tr></thead><tbody>${models}</tbody></table></section>
    ${o.products.length ? `<section><h2>Products</h2>${productsTable(o.products, o.now)}</section>` : ""}
    <section><h2>Disk</h2>${diskTable(o.disk, o.pruned)}</section>
    <p class="muted small">Rules ${esc(o.rules.version.slice(0, 12))} loaded ${time(o.rules.loaded_at)} · ${time(o.now)}</p>`;
}

// Each product's previous and next deadline: due, predicted (median, and 9 in 10), issued; and
// a timeline from 12 hours before now to 12 hours after, each deadline a line, each issue a dot.
function productsTable(products, now) {
  const rows = products.map((p) => {
    const cycles = p.cycles.map((c) => `<div class="cycle" data-deadline="${esc(c.deadline)}">
        ${badge(c.state)}${c.degraded ? ` ${badge("degraded")}` : ""} due ${time(c.deadline)}
        ${c.issued_at ? ` · issued ${time(c.issued_at)} ${runLink(c.run)}` : ""}
        ${c.predicted ? ` · predicted ${time(c.predicted)} (9 in 10 by ${time(c.predicted_p90)}), ${Math.round((c.miss ?? 0) * 100)}% chance of missing` : ""}
        ${c.cause ? ` · cause <b>${esc(c.cause)}</b>` : ""}
        ${c.waiting_for.length ? ` · waiting for ${c.waiting_for.map(esc).join(", ")}` : ""}
        ${c.fallback ? `<div class="muted small">fallback: ${esc(c.fallback)}</div>` : ""}</div>`).join("");
    return `<tr data-product="${esc(p.name)}"><td><a href="#/product/${encodeURIComponent(p.name)}"><b>${esc(p.name)}</b></a>
        <div class="muted small">${esc(p.description ?? "")} · ${esc(p.due)}</div></td>
      <td>${cycles}</td><td>${productTimeline(p, now)}</td>
      <td class="num">${p.punctuality == null ? "—" : `${Math.round(p.punctuality * 100)}%`}</td></tr>`;
  }).join("");
  return `<table id="products"><thead><tr><th>Product</th><th>Deadlines</th><th>Today</th><th>On time</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function productTimeline(p, now) {
  const mid = Date.parse(now), from = mid - 12 * 3600e3, to = mid + 12 * 3600e3, W = 320, H = 30;
  const x = (t) => ((Date.parse(t) - from) / (to - from)) * W;
  const inside = (t) => t && Date.parse(t) >= from && Date.parse(t) <= to;
  let out = `<svg class="product-timeline" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="deadlines of ${esc(p.name)}">`;
  out += `<line x1="0" x2="${W}" y1="15" y2="15" class="grid"/><line x1="${W / 2}" x2="${W / 2}" y1="2" y2="28" class="now"/>`;
  for (const c of p.cycles) {
    if (inside(c.deadline)) out += `<line x1="${x(c.deadline)}" x2="${x(c.deadline)}" y1="3" y2="27" class="due"><title>due ${esc(c.deadline)}</title></line>`;
    if (inside(c.predicted)) {
      const p90 = inside(c.predicted_p90) ? x(c.predicted_p90) : W;
      out += `<line x1="${x(c.predicted)}" x2="${p90}" y1="15" y2="15" class="spread"/><circle cx="${x(c.predicted)}" cy="15" r="4" class="predicted s-${esc(c.state.replace(" ", "_"))}"><title>predicted ${esc(c.predicted)}</title></circle>`;
    }
    if (inside(c.issued_at)) out += `<circle cx="${x(c.issued_at)}" cy="15" r="4" class="issued${c.degraded ? " degraded" : ""}"><title>issued ${esc(c.issued_at)}</title></circle>`;
  }
  for (const u of p.upcoming) if (inside(u)) out += `<line x1="${x(u)}" x2="${x(u)}" y1="3" y2="27" class="due"><title>due ${esc(u)}</title></line>`;
  return out + "</svg>";
}

async function product(name) {
  const p = await api(`/api/products/${encodeURIComponent(name)}`);
  const rows = [...p.history].reverse().map((c) => `<tr><td>${time(c.deadline)}</td><td>${badge(c.state)}${c.degraded ? ` ${badge("degraded")}` : ""}</td>
      <td>${time(c.issued_at)}</td><td>${runLink(c.run)}</td></tr>`).join("");
  view.innerHTML = `<h1>Product ${esc(p.name)}</h1><p>${esc(p.description ?? "")} · issued by ${esc(p.model)} · due ${esc(p.due)} · at risk from ${Math.round(p.risk * 100)}%</p>
    <p class="muted">Chain: ${p.chain.map(esc).join(" → ")}</p>
    <section><h2>Now</h2>${productsTable([p], new Date().toISOString())}</section>
    <section><h2>Punctuality</h2><p>${p.punctuality == null ? "No past issue yet." : `${Math.round(p.punctuality * 100)}% of the last ${p.history.length} deadlines on time.`}</p>
    <table id="history"><thead><tr><th>Deadline</th><th>Outcome</th><th>Issued</th><th>Run</th></tr></thead><tbody>${rows}</tbody></table></section>`;
}

// Disk use per area of the spool, as the daemon last measured it, and what retention removed.
function diskTable(d, pruned) {
  const areas = Object.entries(d.areas ?? {});
  if (!areas.length) return `<p class="muted">Not measured yet.</p>`;
  const rows = areas.map(([area, [bytes, files]]) => `<tr data-area="${esc(area)}">
      <td>${esc(area)}</td><td class="num">${size(bytes)}</td><td class="num">${files}</td></tr>`).join("");
  return `<table id="disk"><thead><tr><th>Area</th><th>Used</th><th>Files</th></tr></thead><tbody>${rows}</tbody></table>
    <p class="muted small">Measured ${time(d.at)} · removed by retention: ${pruned.files} files, ${pruned.runs} run folders</p>`;
}

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
  return `${u ? v.toFixed(1) : v} ${units[u]}`;
}

function timelineSvg(t) {
  const from = Date.parse(t.from), to = Date.parse(t.to), span = to - from;
  const names = Object.keys(t.models);
  if (!names.length) return `<p class="muted">No run in the last 24 hours.</p>`;
  const W = 1000, row = 22, left = 170, H = names.length * row + 24;
  const x = (ms) => left + ((ms - from) / span) * (W - left - 10);
  let out = `<svg id="timeline" viewBox="0 0 ${W} ${H}" role="img" aria-label="runs of the last 24 hours">`;
  for (let h = 0; h <= 24; h += 3) {
    const xx = x(from + (h / 24) * span);
    const label = new Date(from + (h / 24) * span).toISOString().slice(11, 16);
    out += `<line x1="${xx}" x2="${xx}" y1="0" y2="${H - 16}" class="grid"/><text x="${xx}" y="${H - 4}" class="axis">${label}</text>`;
  }
  names.forEach((m, i) => {
    const y = i * row + 4;
    out += `<text x="4" y="${y + 13}" class="label">${esc(m)}</text>`;
    // Runs that start within a few pixels of each other (a burst) are one mark that says how
    // many, coloured by the worst of them, linking to their list; a lone run links to itself.
    const runs = t.models[m].map((r) => ({ r, s: Date.parse(r.time0), e: r.ended_at ? Date.parse(r.ended_at) : to }))
      .sort((a, b) => a.s - b.s);
    const groups = [];
    for (const run of runs) {
      const g = groups[groups.length - 1];
      if (g && x(run.s) - x(g[0].s) < 4) g.push(run); else groups.push([run]);
    }
    const worst = ["failed", "timed_out", "interrupted", "running", "queued", "cancelled", "succeeded"];
    for (const g of groups) {
      const s0 = g[0].s, e0 = Math.max(...g.map((v) => v.e));
      const w = Math.max(2, x(e0) - x(s0));
      if (g.length === 1) {
        const r = g[0].r;
        out += `<a href="#/run/${encodeURIComponent(r.id)}"><rect x="${x(s0)}" y="${y}" width="${w}" height="${row - 6}" class="bar s-${esc(r.state)}"><title>${esc(r.id)} ${esc(r.state)}</title></rect></a>`;
        continue;
      }
      const state = worst.find((st) => g.some((v) => v.r.state === st)) ?? g[0].r.state;
      out += `<a href="#/runs?model=${encodeURIComponent(m)}"><rect x="${x(s0)}" y="${y}" width="${Math.max(w, 6)}" height="${row - 6}" class="bar burst s-${esc(state)}">` +
        `<title>${g.length} runs from ${esc(new Date(s0).toISOString().slice(11, 19))}Z</title></rect>` +
        `<text x="${x(s0) + Math.max(w, 6) + 2}" y="${y + 12}" class="count">×${g.length}</text></a>`;
    }
  });
  return out + "</svg>";
}

// What started a run: its model's trigger, or a retry or rerun of another run.
function triggerOf(r) {
  if (!r.retry_of) return esc(r.trigger);
  return `${r.attempt > 1 ? "retry" : "rerun"} of ${runLink(r.retry_of)}`;
}

// Operational traffic by default; a replay's has its own view and its mark.
function modeSelect(params) {
  const m = params.get("mode") ?? "operational";
  return `<label>Mode <select name="mode">${["operational", "replay", "all"].map((v) =>
    `<option${v === m ? " selected" : ""}>${v}</option>`).join("")}</select></label>`;
}

function replayMark(session) {
  return session ? ` <span class="badge replay" title="replay session ${esc(session)}">replay</span>` : "";
}

async function runs(params) {
  const q = new URLSearchParams(params);
  const [list, t, o] = await Promise.all([api(`/api/runs?${q}`), api("/api/timeline?hours=24"), api("/api/overview")]);
  const models = o.models.map((m) => `<option${m.name === params.get("model") ? " selected" : ""}>${esc(m.name)}</option>`).join("");
  const states = ["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "interrupted"]
    .map((s) => `<option${s === params.get("state") ? " selected" : ""}>${s}</option>`).join("");
  view.innerHTML = `<h1>Runs</h1>
    <section><h2>Last 24 hours</h2>${timelineSvg(t)}</section>
    <form id="runfilter" class="filters">
      <label>Model <select name="model"><option value="">all</option>${models}</select></label>
      <label>State <select name="state"><option value="">all</option>${states}</select></label>
      ${modeSelect(params)}
      <button type="submit">Filter</button></form>
    <table id="runs"><thead><tr><th>Run</th><th>Model</th><th>State</th><th>Trigger</th><th>time0</th>
      <th>Started</th><th>Ended</th><th>Reason</th></tr></thead><tbody>
      ${list.map((r) => `<tr data-run="${esc(r.id)}" data-model="${esc(r.model)}"${r.session ? ' data-mode="replay"' : ""}><td>${runLink(r.id)}${replayMark(r.session)}</td><td>${esc(r.model)}</td>
        <td>${badge(r.state)}</td><td>${triggerOf(r)}${r.requested_by ? ` <span class="muted small">by ${esc(r.requested_by)}</span>` : ""}</td>
        <td>${time(r.time0)}</td><td>${time(r.started_at)}</td><td>${time(r.ended_at)}</td><td class="small">${esc(r.reason)}</td></tr>`).join("")}
    </tbody></table>`;
  document.getElementById("runfilter").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const p = new URLSearchParams([...f].filter(([, v]) => v));
    location.hash = `#/runs?${p}`;
  });
}

async function run(id) {
  const d = await api(`/api/runs/${encodeURIComponent(id)}`);
  const r = d.run;
  const ended = !["queued", "running"].includes(r.state);
  view.innerHTML = `<h1>Run ${esc(r.id)} ${badge(r.state)}</h1>
    <div class="actions">${!ended ? button("cancel", r.id, "Cancel") : ""}
      ${ended && r.state !== "succeeded" ? button("retry", r.id, "Retry") : ""}
      ${ended ? button("rerun", r.id, "Rerun") : ""}</div>
    <dl class="facts"><dt>Model</dt><dd>${esc(r.model)}</dd><dt>Trigger</dt><dd>${triggerOf(r)}${r.requested_by ? ` by ${esc(r.requested_by)}` : ""}</dd>
      <dt>time0</dt><dd>${time(r.time0)}</dd><dt>Attempt</dt><dd>${r.attempt}${r.retry_of ? ` (of ${runLink(r.retry_of)})` : ""}</dd>
      <dt>Queued</dt><dd>${time(r.queued_at)}</dd><dt>Started</dt><dd>${time(r.started_at)}</dd><dt>Ended</dt><dd>${time(r.ended_at)}</dd>
      <dt>Exit code</dt><dd>${r.exit_code ?? "—"}</dd><dt>Reason</dt><dd>${esc(r.reason ?? "—")}</dd><dt>Folder</dt><dd><code>${esc(r.run_dir)}</code></dd>
      ${r.slurm_job != null ? `<dt>Slurm job</dt><dd><code>${r.slurm_job}</code></dd>` : ""}
      ${r.state_start ? `<dt>State</dt><dd>${r.state_start === "warm" ? `warm from ${runLink(r.state_from)} valid at ${time(r.state_valid_at)}` : "cold"}</dd>` : ""}</dl>
    <section><h2>Hydrograph</h2><div id="hydrograph" class="muted">Loading…</div></section>
    <section><h2>Inputs</h2><table><thead><tr><th>Slot</th><th>File</th><th>Channel</th><th>Produced by</th></tr></thead><tbody>
      ${d.inputs.map((i) => `<tr><td>${esc(i.slot)}</td><td>${fileLink(i.file, i.name)}</td><td>${esc(i.channel)}</td><td>${runLink(i.produced_by)}</td></tr>`).join("")}</tbody></table></section>
    <section><h2>Outputs</h2><table><thead><tr><th>Name</th><th>Channel</th><th>File</th><th>State</th></tr></thead><tbody>
      ${d.outputs.map((o) => `<tr><td>${esc(o.name)}</td><td>${esc(o.channel)}</td><td>${o.file ? fileLink(o.file) : "—"}</td><td>${o.state ? badge(o.state) : "—"}</td></tr>`).join("")}</tbody></table></section>
    <section><h2>Lineage</h2><p>Upstream: ${d.upstream.map(runLink).join(", ") || "—"}</p>
      <p>Downstream: ${d.downstream.map(runLink).join(", ") || "—"}</p><p>Retried or rerun as: ${d.copies.map(runLink).join(", ") || "—"}</p></section>
    <section><h2>Diagnostics</h2>${r.diag.length ? `<ul class="diag">${r.diag.map((l) => `<li class="lvl-${esc(l.level)}">${esc(l.level)}: ${esc(l.description)}</li>`).join("")}</ul>` : `<p class="muted">none</p>`}</section>
    <section><h2>Standard output (tail)</h2><pre id="stdout">${esc(d.stdout_tail) || "—"}</pre></section>
    <section><h2>Standard error (tail)</h2><pre id="stderr">${esc(d.stderr_tail) || "—"}</pre></section>`;
  await drawHydrograph(`/api/series?run=${encodeURIComponent(r.id)}`);
}

// ---- hydrographs -------------------------------------------------------------------------
// Drawn here as SVG from /api/series (thinned on the server: a peak is never lost): one chart
// per location and parameter family, the run's outputs against its inputs (the observations),
// time0 marked, ensemble members as a bundle of thin lines.

const PALETTE = ["#1f5fa8", "#c0392b", "#2e8b57", "#8e44ad", "#d68910", "#117a8b", "#6c3483", "#7f8c8d"];

function shortTime(ms) {
  if (localTimes()) {
    const d = new Date(ms), p = (n) => String(n).padStart(2, "0");
    return `${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
  }
  return new Date(ms).toISOString().slice(5, 16).replace("T", " ") + "Z";
}

async function drawHydrograph(url) {
  const box = document.getElementById("hydrograph");
  if (!box) return;
  let h;
  try { h = await api(url); } catch (e) { box.textContent = e.message; return; }
  if (!h.series.length) { box.textContent = "No PI time series to plot."; return; }
  const groups = new Map();
  for (const s of h.series) {
    const key = `${s.location} · ${s.family}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(s);
  }
  box.className = "";
  box.innerHTML = [...groups].map(([key, list]) => chart(key, list, h.time0)).join("");
}

function chart(title, list, time0) {
  const W = 1000, H = 280, L = 64, R = 12, T = 12, B = 28;
  let t0 = Infinity, t1 = -Infinity, v0 = Infinity, v1 = -Infinity;
  for (const s of list) {
    for (let i = 0; i < s.t.length; i++) {
      t0 = Math.min(t0, s.t[i]); t1 = Math.max(t1, s.t[i]);
      if (s.v[i] != null) { v0 = Math.min(v0, s.v[i]); v1 = Math.max(v1, s.v[i]); }
    }
  }
  if (time0 != null) { t0 = Math.min(t0, time0); t1 = Math.max(t1, time0); }
  if (!Number.isFinite(v0)) { v0 = 0; v1 = 1; }
  if (v1 <= v0) { v0 -= 1; v1 += 1; }
  const pad = (v1 - v0) * 0.05; v0 -= pad; v1 += pad;
  if (t1 <= t0) t1 = t0 + 3600e3;
  const x = (t) => (L + ((t - t0) / (t1 - t0)) * (W - L - R)).toFixed(1);
  const y = (v) => (T + (1 - (v - v0) / (v1 - v0)) * (H - T - B)).toFixed(1);
  const loc = list[0].location;
  const caption = `<a href="#/station/${encodeURIComponent(loc)}">${esc(loc)}</a> · ${esc(list[0].family)}`;
  let out = `<figure class="hydrograph" data-location="${esc(loc)}"><figcaption>${caption} <span class="muted small">${esc(list[0].unit)}</span></figcaption>
    <svg class="hydrograph" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">`;
  for (let k = 0; k <= 4; k++) {
    const v = v0 + ((v1 - v0) * k) / 4, yy = y(v);
    out += `<line class="grid" x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}"/><text class="axis" x="${L - 6}" y="${Number(yy) + 4}" text-anchor="end">${v.toPrecision(3)}</text>`;
  }
  for (let k = 0; k <= 5; k++) {
    const t = t0 + ((t1 - t0) * k) / 5, xx = x(t);
    out += `<line class="grid" x1="${xx}" x2="${xx}" y1="${T}" y2="${H - B}"/><text class="axis" x="${xx}" y="${H - 8}" text-anchor="${k === 5 ? "end" : "middle"}">${esc(shortTime(t))}</text>`;
  }
  const legend = [];
  list.forEach((s, i) => {
    const colour = PALETTE[i % PALETTE.length];
    let d = "", pen = "M";
    for (let k = 0; k < s.t.length; k++) {
      if (s.v[k] == null) { pen = "M"; continue; }
      d += `${pen}${x(s.t[k])},${y(s.v[k])}`; pen = "L";
    }
    const member = s.member != null;
    out += `<path class="series role-${esc(s.role)}${member ? " member" : ""}" data-parameter="${esc(s.parameter)}" d="${d}" stroke="${colour}"><title>${esc(s.parameter)} ${esc(s.name)}</title></path>`;
    if (!member || !legend.some((l) => l.includes(`>${esc(s.parameter)} (members)<`))) {
      legend.push(`<span><i style="background:${colour}"></i>${esc(s.parameter)}${member ? " (members)" : ""} <span class="muted">${esc(s.role)}, ${fileLink(s.file, s.name)}</span></span>`);
    }
  });
  if (time0 != null) {
    const xx = x(time0);
    // Its label on the side with room for it.
    const right = Number(xx) < W - R - 60;
    out += `<line class="time0" x1="${xx}" x2="${xx}" y1="${T}" y2="${H - B}"/><text class="time0-label" x="${Number(xx) + (right ? 4 : -4)}" y="${T + 12}" text-anchor="${right ? "start" : "end"}">time0</text>`;
  }
  return `${out}</svg><div class="legend">${legend.join("")}</div></figure>`;
}

async function stations() {
  const list = await api("/api/stations");
  view.innerHTML = `<h1>Stations</h1>
    <p class="muted small">Every location of the operational PI time series in the archive: open one for its latest forecast against its observations.</p>
    ${list.length ? `<table id="stations"><thead><tr><th>Location</th><th>Parameters</th><th>Observed until</th><th>Latest forecast</th><th>Files</th></tr></thead><tbody>
    ${list.map((s) => `<tr data-station="${esc(s.location)}"><td><a href="#/station/${encodeURIComponent(s.location)}">${esc(s.location)}</a></td>
      <td>${esc(s.parameters.join(", "))}</td><td>${s.observed_to ? time(s.observed_to) : "—"}</td><td>${s.forecast_at ? time(s.forecast_at) : "—"}</td><td>${s.files}</td></tr>`).join("")}
    </tbody></table>` : `<p id="stations" class="muted">No station yet: none of the archived PI time series has been indexed.</p>`}`;
}

async function station(loc, params) {
  const days = params.get("days") ?? "3";
  view.innerHTML = `<h1>Station ${esc(loc)}</h1>
    <form id="stationdays" class="filters"><label class="inline">Observations of the <select name="days">${["1", "3", "7", "14", "30"].map((d) =>
      `<option${d === days ? " selected" : ""}>${d}</option>`).join("")}</select> days before the latest forecast</label></form>
    <section><h2>Latest forecast and observations</h2><div id="hydrograph" class="muted">Loading…</div></section>`;
  document.getElementById("stationdays").addEventListener("change", (e) => {
    location.hash = `#/station/${encodeURIComponent(loc)}?days=${e.target.value}`;
  });
  await drawHydrograph(`/api/series?station=${encodeURIComponent(loc)}&days=${encodeURIComponent(days)}`);
}

async function files(params) {
  const q = new URLSearchParams(params);
  if (!q.has("limit")) q.set("limit", "100");
  const [list, o] = await Promise.all([api(`/api/files?${q}`), api("/api/overview")]);
  const sel = (name, values) => `<select name="${name}"><option value="">all</option>${values.map((v) =>
    `<option${v === params.get(name) ? " selected" : ""}>${esc(v)}</option>`).join("")}</select>`;
  view.innerHTML = `<h1>Files</h1>
    <form id="filefilter" class="filters">
      <label>Name <input name="name" value="${esc(params.get("name") ?? "")}"></label>
      <label>Channel ${sel("channel", o.channels.map((c) => c.name))}</label>
      <label>Format <input name="format" value="${esc(params.get("format") ?? "")}" size="10"></label>
      <label>State ${sel("state", ["archived", "rejected", "duplicate", "claimed"])}</label>
      ${modeSelect(params)}
      <button type="submit">Search</button></form>
    <table id="files"><thead><tr><th>Received</th><th>Name</th><th>Channel</th><th>Format</th><th>State</th><th>Route / reason</th></tr></thead><tbody>
      ${list.map((f) => `<tr data-file="${esc(f.id)}"${f.session ? ' data-mode="replay"' : ""}><td>${time(f.received_at)}</td><td>${fileLink(f.id, f.original)}${replayMark(f.session)}</td><td>${esc(f.channel)}</td>
        <td>${esc(f.format ?? "")} ${esc(f.version ?? "")}</td><td>${badge(f.state)}${f.held_by ? " " + badge("held") : ""}</td>
        <td class="small">${f.state === "rejected" ? `${esc(f.reason)}${f.errors.length ? `<ul class="errors">${f.errors.slice(0, 3).map((e) =>
          `<li>line ${esc(e.line ?? "?")}: ${esc(e.message)}</li>`).join("")}</ul>` : ""}` : (f.route ? badge(f.route) : "")}</td></tr>`).join("")}
    </tbody></table>`;
  document.getElementById("filefilter").addEventListener("submit", (e) => {
    e.preventDefault();
    const p = new URLSearchParams([...new FormData(e.target)].filter(([, v]) => v));
    location.hash = `#/files?${p}`;
  });
}

async function file(id) {
  const d = await api(`/api/files/${encodeURIComponent(id)}`);
  const f = d.file;
  view.innerHTML = `<h1>File ${esc(f.original)} ${badge(f.state)}${f.held_by ? " " + badge("held") : ""}</h1>
    <div class="actions">${f.state === "archived" && !f.held_by ? button("hold", f.id, "Hold") : ""}
      ${f.held_by ? button("release", f.id, "Release") : ""}
      ${f.state === "archived" && !f.session ? button("reroute", f.id, "Route again") : ""}</div>
    <dl class="facts"><dt>Id</dt><dd>${esc(f.id)}</dd><dt>Channel</dt><dd>${esc(f.channel)}</dd>
      <dt>Received</dt><dd>${time(f.received_at)}</dd><dt>Format</dt><dd>${esc(f.format ?? "—")} ${esc(f.version ?? "")}</dd>
      <dt>Checked</dt><dd>${esc(f.checked ?? "—")}</dd><dt>Size</dt><dd>${f.size ?? "—"}</dd><dt>SHA-256</dt><dd><code>${esc(f.sha256 ?? "—")}</code></dd>
      <dt>Stored</dt><dd><code>${esc(f.stored ?? "—")}</code></dd><dt>Route</dt><dd>${esc(f.route ?? "—")} ${esc(f.route_rules.join(", "))}</dd>
      <dt>Held by</dt><dd>${esc(f.held_by ?? "—")}</dd><dt>Produced by</dt><dd>${runLink(d.produced_by)}</dd>
      <dt>Re-injects</dt><dd>${f.origin ? fileLink(f.origin) : "—"}</dd><dt>Re-injected as</dt><dd>${d.reinjected_as.map((x) => fileLink(x)).join(", ") || "—"}</dd></dl>
    ${f.state === "rejected" ? `<section><h2>Why it was rejected</h2><p>${esc(f.reason)}</p>
      <ul class="errors">${f.errors.map((e) => `<li>line ${esc(e.line ?? "?")}, column ${esc(e.column ?? "?")}: ${esc(e.message)}</li>`).join("")}</ul>
      <h3>Re-inject after a fix</h3><p class="muted small">Paste the fixed file, or leave empty to take the file as fixed in place in <code>${esc(f.stored)}</code>.</p>
      <textarea id="fixed" rows="8"></textarea><div>${button("reinject", f.id, "Re-inject")}</div></section>` : ""}
    ${d.nearest.length ? `<section id="nearest"><h2>Why no rule takes it</h2>
      <p class="muted small">The nearest rules in force, and each of their conditions this file fails. Fix the rule, then route the file again.</p>
      <table><thead><tr><th>Rule</th><th>Condition</th><th>Wants</th><th>The file has</th></tr></thead><tbody>
      ${d.nearest.flatMap((n) => n.failed.length ? n.failed.map((c, i) => `<tr><td>${i ? "" : esc(n.rule)}</td><td><code>${esc(c.condition)}</code></td>
        <td><code>${esc(c.wanted)}</code></td><td><code>${esc(c.found)}</code></td></tr>`) : [`<tr><td>${esc(n.rule)}</td><td colspan="3">matches now: route the file again</td></tr>`]).join("")}
      </tbody></table></section>` : ""}
    ${d.reroutes.length ? `<section><h2>Routed again</h2><table><thead><tr><th>When</th><th>By</th><th>Before</th><th>After</th><th>Rules</th></tr></thead><tbody>
      ${d.reroutes.map((r) => `<tr><td>${time(r.at)}</td><td>${esc(r.by)}</td><td>${badge(r.route_before ?? "—")}</td><td>${badge(r.route)} ${esc(r.rules.join(", "))}</td>
        <td><code>${esc(r.rules_version.slice(0, 12))}</code></td></tr>`).join("")}</tbody></table></section>` : ""}
    <section><h2>Deliveries</h2><table><thead><tr><th>Model</th><th>Slot</th><th>State</th><th>Run</th></tr></thead><tbody>
      ${d.deliveries.map(({model: m, slot: s, state: st, run: r}) => `<tr><td>${esc(m)}</td><td>${esc(s)}</td><td>${badge(st)}</td><td>${runLink(r)}</td></tr>`).join("")}</tbody></table></section>
    ${f.state !== "rejected" && (f.format ?? "").startsWith("pi-timeseries") ? `<section><h2>Hydrograph</h2><div id="hydrograph" class="muted">Loading…</div></section>` : ""}`;
  await drawHydrograph(`/api/series?file=${encodeURIComponent(f.id)}`);
}

async function rules() {
  const r = await api("/api/rules");
  view.innerHTML = `<h1>Rules</h1>
    <dl class="facts"><dt>Version in force</dt><dd><code>${esc(r.version)}</code></dd><dt>Loaded</dt><dd>${time(r.loaded_at)}</dd>
      <dt>Files</dt><dd>${r.files.map((f) => `<code>${esc(f)}</code>`).join(" ")}</dd>
      <dt>Staged edit</dt><dd><a href="#/edit">What an edit would change, before it is in force</a></dd></dl>
    ${r.refused ? `<div class="refused" id="refused"><b>The last edit was refused</b> at ${time(r.refused.at)}; the version above stays in force.
      <ul>${r.refused.problems.map((p) => `<li><code>${esc(p)}</code></li>`).join("")}</ul></div>` : `<p class="ok-line">The last edit was accepted.</p>`}
    <section><h2>Channels</h2><table><tbody>${r.channels.map(([n, c, cad]) => `<tr><td>${esc(n)}</td><td>${esc(c)}</td><td>${cad ? `every ${cad} s` : ""}</td></tr>`).join("")}</tbody></table></section>
    <section><h2>Models</h2><table><tbody>${r.models.map(([n, t, i, o]) => `<tr><td>${esc(n)}</td><td>${esc(t)}</td><td>${esc(i.join(", "))}</td><td>${o ? "→ " + esc(o) : ""}</td></tr>`).join("")}</tbody></table></section>
    <section><h2>Routes</h2><table id="routes"><thead><tr><th>Rule</th><th>When</th><th>Then</th></tr></thead><tbody>
      ${r.routes.map(([n, c, a]) => `<tr><td>${esc(n)}</td><td>${c.length ? c.map(esc).join("<br>") : "every file"}</td><td>${a.map(esc).join("<br>")}</td></tr>`).join("")}</tbody></table></section>`;
}

async function edit(params) {
  const days = Math.min(90, Math.max(1, Number(params.get("days")) || 7));
  const e = await api(`/api/edit?days=${days}`);
  const m = e.impact;
  const ex = (x) => x.examples.map((id) => fileLink(id)).join(", ");
  const rows = (title, map) => Object.entries(map ?? {}).map(([k, x]) =>
    `<tr><td>${esc(title)}</td><td><code>${esc(k)}</code></td><td class="num">${x.count}</td><td class="small">${ex(x)}</td></tr>`).join("");
  const alone = (title, x) => x.count ? `<tr><td>${esc(title)}</td><td></td><td class="num">${x.count}</td><td class="small">${ex(x)}</td></tr>` : "";
  const impact = !e.staged ? `<p class="muted" id="staged">No staged edit: copy the rules folder to <code>${esc(e.staged_dir)}</code>, edit it there, and this page shows what it would change before you put it in force.</p>`
    : e.problems.length ? `<div class="refused" id="staged"><b>The staged edit does not load</b>; it could not be put in force.
        <ul>${e.problems.map((p) => `<li><code>${esc(p)}</code></li>`).join("")}</ul></div>`
    : !m ? `<p class="ok-line" id="staged">The staged edit is the set in force (<code>${esc(e.version.slice(0, 12))}</code>): nothing would change.</p>`
    : `<section id="staged"><h2>What the staged edit would change</h2>
        <p>Version <code>${esc(e.version.slice(0, 12))}</code> in <code>${esc(e.staged_dir)}</code>, weighed against the rules in force over
          <span id="impact-files">${m.files}</span> archived file(s) received ${time(e.since)} → ${time(e.until)}:
          <b id="impact-changed">${m.changed}</b> decided differently.
          ${[1, 7, 30].map((d) => d === days ? `<b>${d}&nbsp;d</b>` : `<a href="#/edit?days=${d}">${d}&nbsp;d</a>`).join(" · ")}</p>
        <table id="impact"><thead><tr><th>Change</th><th>What</th><th>Files</th><th>For example</th></tr></thead><tbody>
          ${rows("route", m.routes)}${rows("delivery added", m.deliveries_added)}${rows("delivery removed", m.deliveries_removed)}
          ${rows("refused by its slot", m.refused_by_slot)}${rows("publication added", m.publications_added)}${rows("publication removed", m.publications_removed)}
          ${alone("unrouted", m.unrouted)}${alone("dropped", m.dropped)}${alone("held", m.held)}${alone("refused (channel gone)", m.refused)}${alone("not readable", m.unreadable)}
        </tbody></table>
        ${Object.entries(m.runs_losing_input).map(([model, ids]) => `<p>Runs of <b>${esc(model)}</b> that would lose an input: ${ids.map(runLink).join(", ")}</p>`).join("")}
        <p class="muted small">Then <code>pom impact --rules ${esc(e.staged_dir)} --since ${esc(e.since)} --replay</code> runs the period again with it, and names the forecasts that change.</p></section>`;
  view.innerHTML = `<h1>Rule edit</h1>
    <p class="muted small">Rules in force: <code>${esc(e.in_force.slice(0, 12))}</code>. <a href="#/rules">The rules in force</a></p>
    ${e.refused ? `<div class="refused" id="refused"><b>The last live edit was refused</b> at ${time(e.refused.at)}; the rules in force stay.
      <ul>${e.refused.problems.map((p) => `<li><code>${esc(p)}</code></li>`).join("")}</ul></div>` : ""}
    ${impact}`;
}

async function replays() {
  const list = await api("/api/replays");
  view.innerHTML = `<h1>Replays</h1>
    <p class="muted small">Copy archived folders into <code>spool/replay/</code>, or run <code>pom replay --from … --to …</code>.</p>
    <table id="replays"><thead><tr><th>Session</th><th>Name</th><th>State</th><th>Progress</th><th>Runs</th><th>Period</th><th>Speed</th><th></th></tr></thead><tbody>
    ${list.map((s) => `<tr data-session="${esc(s.id)}"><td><a href="#/replay/${encodeURIComponent(s.id)}">${esc(s.id)}</a></td><td>${esc(s.name)}</td>
      <td>${badge(s.state)}</td><td><progress max="${s.files_total}" value="${s.files_decided}"></progress> ${s.files_decided}/${s.files_total}</td>
      <td class="num">${s.runs}</td><td class="small">${time(s.period_from)} → ${time(s.period_to)}</td><td>${s.speed ?? "max"}</td>
      <td>${s.state === "replaying" || s.state === "finishing" ? button("cancel_replay", s.id, "Cancel") : ""}</td></tr>`).join("")}</tbody></table>`;
}

async function replay(id) {
  const d = await api(`/api/replays/${encodeURIComponent(id)}`);
  const s = d.session, r = d.report;
  const cancel = s.state === "replaying" || s.state === "finishing" ? button("cancel_replay", s.id, "Cancel this replay") : "";
  const head = `<h1>Replay ${esc(s.name)} ${badge(s.state)} ${cancel}</h1>
    <dl class="facts"><dt>Session</dt><dd>${esc(s.id)}</dd><dt>Period</dt><dd>${time(s.period_from)} → ${time(s.period_to)}</dd>
      <dt>Files</dt><dd>${s.files_decided}/${s.files_total} decided</dd><dt>Runs</dt><dd>${s.runs}</dd><dt>Speed</dt><dd>${s.speed ?? "max"}</dd></dl>`;
  if (!r) { view.innerHTML = head + `<p class="muted">The comparison is made when the session is done.</p>`; return; }
  view.innerHTML = head + `<section><h2>Comparison with the original runs</h2>
    <p id="summary">${r.matched} output pair(s) matched, ${r.identical} identical, ${r.missing} missing, ${r.extra} extra;
      ${r.unmirrored_runs.length} replay run(s) mirror no original. <a href="/reports/replay/${encodeURIComponent(s.id)}.html">The page with plots</a></p>
    ${r.differing_series.length ? `<ul>${r.differing_series.map((x) => `<li>${esc(x)}</li>`).join("")}</ul>` : `<p class="ok-line">Every output is identical.</p>`}
    <table><thead><tr><th>Model</th><th>time0</th><th>Original</th><th>Replay</th><th>Outputs</th></tr></thead><tbody>
    ${r.runs.map((p) => `<tr><td>${esc(p.model)}</td><td>${time(p.time0)}</td><td>${runLink(p.original)}</td><td>${runLink(p.replay)}</td>
      <td>${p.outputs.map((o) => `${esc(o.name)} ${o.series.every((x) => x.identical) ? badge("identical") : badge("differs")}`).join("<br>")}</td></tr>`).join("")}</tbody></table></section>`;
}

async function audit() {
  const log = await api("/api/audit?limit=200");
  view.innerHTML = `<h1>Audit log</h1><table id="audit"><thead><tr><th>When</th><th>Who</th><th>Action</th><th>Target</th><th>Outcome</th><th>Detail</th></tr></thead><tbody>
    ${log.map((e) => `<tr><td>${time(e.at)}</td><td>${esc(e.who)}</td><td>${esc(e.action)}</td><td>${esc(e.target)}</td>
      <td>${e.outcome === "done" ? badge("done") : `<span class="badge s-failed">${esc(e.outcome)}</span>`}</td><td class="small">${esc(e.detail ?? "")}</td></tr>`).join("")}</tbody></table>`;
}

// ---- routing, live updates, session ----------------------------------------------------

async function render() {
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("here", a.dataset.nav === (parts[0] || "overview") ||
    (parts[0] === "run" && a.dataset.nav === "runs") || (parts[0] === "file" && a.dataset.nav === "files") || (parts[0] === "replay" && a.dataset.nav === "replays") || (parts[0] === "station" && a.dataset.nav === "stations") || (parts[0] === "edit" && a.dataset.nav === "rules")));
  try {
    switch (parts[0]) {
      case undefined: await overview(); break;
      case "runs": await runs(params); break;
      case "run": await run(decodeURIComponent(parts[1])); break;
      case "files": await files(params); break;
      case "file": await file(decodeURIComponent(parts[1])); break;
      case "stations": await stations(); break;
      case "station": await station(decodeURIComponent(parts[1]), params); break;
      case "rules": await rules(); break;
      case "edit": await edit(params); break;
      case "audit": await audit(); break;
      case "replays": await replays(); break;
      case "replay": await replay(decodeURIComponent(parts[1])); break;
      case "product": await product(decodeURIComponent(parts[1])); break;
      default: view.innerHTML = "<p>No such page.</p>";
    }
    document.body.dataset.rendered = String(Date.now());
  } catch (e) {
    view.innerHTML = `<p class="bad">${esc(e.message)}</p>`;
  }
}

function refresh() {
  clearTimeout(refreshTimer);
  // Not while someone types in a form.
  refreshTimer = setTimeout(() => {
    const a = document.activeElement;
    if (a && ["INPUT", "TEXTAREA", "SELECT"].includes(a.tagName) && view.contains(a)) return;
    render();
  }, 250);
}

// The event stream. An EventSource cannot send a header: signed in, the page trades its token
// for a one-use ticket (never the token in a URL), and for a new one at each reconnection.
let stream = null;
async function live() {
  const dot = document.getElementById("live");
  if (stream) stream.close();
  let url = "/api/events";
  if (sessionStorage.getItem("pom-token")) {
    const r = await fetch("/api/events/ticket", { method: "POST", headers: authHeaders() }).catch(() => null);
    if (r && r.ok) url += `?ticket=${encodeURIComponent((await r.json()).ticket)}`;
  }
  const es = new EventSource(url);
  stream = es;
  es.onopen = () => { dot.className = "live on"; document.body.dataset.live = "on"; };
  es.onerror = () => {
    dot.className = "live off"; document.body.dataset.live = "off";
    es.close();
    if (stream === es) setTimeout(live, 2000);
  };
  for (const kind of ["files", "run", "control", "alert", "rules", "replay", "lagged"]) es.addEventListener(kind, refresh);
}

async function session() {
  const token = sessionStorage.getItem("pom-token");
  who = null;
  if (token) {
    const r = await fetch("/api/whoami", { headers: { Authorization: `Bearer ${token}` } });
    if (r.ok) who = (await r.json()).who;
    else sessionStorage.removeItem("pom-token");
  }
  document.getElementById("who").textContent = who ? `signed in as ${who}` : "";
  document.getElementById("signin").hidden = !!who;
  document.getElementById("signout").hidden = !who;
}

document.getElementById("signin").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = document.getElementById("token");
  // A whole `name:token` line of the tokens file is taken for its token.
  const line = input.value.trim();
  sessionStorage.setItem("pom-token", line.includes(":") ? line.slice(line.indexOf(":") + 1).trim() : line);
  input.value = "";
  await session();
  if (!who) say("That token is not valid (paste the token, or its whole name:token line).", true);
  live();
  render();
});
document.getElementById("signout").addEventListener("click", async () => {
  sessionStorage.removeItem("pom-token");
  await session();
  live();
  render();
});

function showZone() {
  document.getElementById("zone").textContent = localTimes() ? "local time" : "UTC";
}
document.getElementById("zone").addEventListener("click", () => {
  localStorage.setItem("pom-zone", localTimes() ? "utc" : "local");
  showZone();
  render();
});

(async () => {
  showZone();
  try {
    const t = await api("/api/theme");
    document.getElementById("title").textContent = t.title;
    document.title = t.title;
  } catch (_) { /* the default title stays */ }
  await session();
  window.addEventListener("hashchange", render);
  live();
  render();
})();
