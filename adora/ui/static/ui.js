// adora ui: one page, three views (#/ the grids, #/xp/SIG, #/compare?sigs=..&by=KEY).
// State comes from one server-sent-events stream: a "reset" with everything, then a
// "delta" per refresh with what changed and the new lines of the curves this view draws.
"use strict";

const TOKEN = window.ADORA_TOKEN;
const S = {
  v: 0, grids: [], xps: {}, rows: {},   // from the server
  curves: {},      // sig -> {n, series: {metric: [values]}} (only the XPs this view draws)
  selected: new Set(), sort: {}, filter: "",
};
window.adora = S;  // for tests and the curious

// ---------------------------------------------------------------- helpers
function esc(x) {
  return String(x ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;"}[c]));
}
function api(path) {
  const sep = path.includes("?") ? "&" : "?";
  return fetch(path + sep + "token=" + encodeURIComponent(TOKEN)).then(r => {
    if (!r.ok) throw new Error(r.status + " " + path);
    return r.json();
  });
}
function fmt(value, spec) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") {
    const m = /^\.(\d+)([fe%g])$/.exec(spec || "");
    if (m) {
      const d = +m[1];
      if (m[2] === "f") return value.toFixed(d);
      if (m[2] === "e") return value.toExponential(d);
      if (m[2] === "%") return (100 * value).toFixed(d) + "%";
      return String(+value.toPrecision(Math.max(d, 1)));
    }
    return Number.isInteger(value) ? String(value) : String(+value.toPrecision(4));
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}
function stateClass(s) { return "s-" + String(s || "").replace("?", ""); }
function reasonOf(x) {
  if (!x) return "";
  if (x.stale) return "state unknown right now (retrying)";
  const bad = ["FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "CANCELLED", "MISSING",
               "PREEMPTED", "BOOT_FAIL", "DEADLINE"];
  if (!bad.includes(x.state) && !x.reason) return "";
  const parts = [];
  if (x.reason) parts.push(x.reason);
  if (x.exit_code !== null && x.exit_code !== undefined && x.exit_code !== 0)
    parts.push("exit code " + x.exit_code);
  return parts.join("; ");
}
// Patterns as on the command line: every word must match the name (fnmatch *word*),
// !word excludes, integers then pick by index among what is left.
function globToRe(p) {
  let re = "";
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "[") {
      const j = p.indexOf("]", i + 1);
      if (j < 0) { re += "\\["; continue; }
      let body = p.slice(i + 1, j);
      if (body[0] === "!") body = "^" + body.slice(1);
      re += "[" + body.replace(/\\/g, "\\\\") + "]";
      i = j;
    } else re += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return new RegExp("^.*" + re + ".*$", "s");
}
function selectRows(items, patterns) {
  const words = patterns.filter(p => !/^-?\d+$/.test(p));
  const indexes = patterns.filter(p => /^-?\d+$/.test(p)).map(Number);
  const tests = words.map(w => {
    const neg = w.startsWith("!");
    return [neg, globToRe(w.replace(/^!+/, ""))];
  });
  let out = items.filter(it => tests.every(([neg, re]) => re.test(it.name) !== neg));
  if (indexes.length) out = indexes.map(i => out[i < 0 ? out.length + i : i]).filter(Boolean);
  return out;
}
function flatten(obj, prefix, out) {
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? prefix + "." + k : k;
    if (typeof v === "number") out[key] = v;
    else if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
  }
  return out;
}
function nameOf(sig) {
  // The table's short name; an XP with nothing of its own (defaults, or alone in its
  // grid) goes by its grid's base name, else its signature.
  for (const g of S.grids) {
    const r = (S.rows[g.name] || {})[sig];
    if (r) return r.name || g.base_name || sig;
  }
  return sig;
}

// ---------------------------------------------------------------- curves (incremental)
function addLines(sig, start, lines) {
  let c = S.curves[sig];
  if (!c || start === 0) c = S.curves[sig] = {n: 0, series: {}};
  if (start !== c.n) { c.n = 0; c.series = {}; }  // should not happen: start again
  for (const line of lines) {
    const flat = (line && typeof line === "object") ? flatten(line, "", {}) : {};
    for (const key of Object.keys(flat)) {
      if (!c.series[key]) c.series[key] = new Array(c.n).fill(null);
    }
    for (const [key, arr] of Object.entries(c.series)) arr.push(key in flat ? flat[key] : null);
    c.n += 1;
  }
}

// ---------------------------------------------------------------- the event stream
let source = null, sourceCurves = null;
function connect(curves) {
  const key = curves.slice().sort().join(",");
  if (source && sourceCurves === key) return;
  if (source) source.close();
  sourceCurves = key;
  S.curves = {};
  const url = "events?token=" + encodeURIComponent(TOKEN) + "&curves=" + encodeURIComponent(key);
  source = new EventSource(url);
  const conn = document.getElementById("conn");
  source.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
  source.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; };
  source.addEventListener("reset", ev => {
    const d = JSON.parse(ev.data);
    S.v = d.v; S.grids = d.grids; S.xps = d.xps; S.rows = d.rows; S.curves = {};
    for (const [sig, [start, lines]] of Object.entries(d.curves || {})) addLines(sig, start, lines);
    for (const sig of curves) if (!S.curves[sig]) S.curves[sig] = {n: 0, series: {}};
    render();
  });
  source.addEventListener("delta", ev => {
    const d = JSON.parse(ev.data);
    S.v = d.v;
    if (d.grids) S.grids = d.grids;
    const changed = new Set();
    for (const [sig, x] of Object.entries(d.xps || {})) {
      S.xps[sig] = Object.assign(S.xps[sig] || {}, x); changed.add(sig);
    }
    for (const [grid, rows] of Object.entries(d.rows || {})) {
      const g = S.rows[grid] = S.rows[grid] || {};
      for (const [sig, row] of Object.entries(rows)) { g[sig] = row; changed.add(sig); }
    }
    const grown = new Set();
    for (const [sig, [start, lines]] of Object.entries(d.curves || {})) {
      addLines(sig, start, lines); grown.add(sig);
    }
    update(changed, grown, !!d.grids);
  });
}

// ---------------------------------------------------------------- routing
function route() {
  const h = location.hash.replace(/^#/, "") || "/";
  const [path, query] = h.split("?");
  const params = new URLSearchParams(query || "");
  if (path.startsWith("/xp/")) return {view: "xp", sig: decodeURIComponent(path.slice(4))};
  if (path.startsWith("/compare")) {
    const sigs = (params.get("sigs") || "").split(",").filter(Boolean);
    return {view: "compare", sigs, by: params.get("by") || ""};
  }
  return {view: "table"};
}
let current = route();
window.addEventListener("hashchange", () => {
  current = route();
  connect(curvesOf(current));
  render();
});
function curvesOf(r) {
  if (r.view === "xp") return [r.sig];
  if (r.view === "compare") return r.sigs;
  return [];
}

function render() {
  if (current.view === "xp") renderXP();
  else if (current.view === "compare") renderCompare();
  else renderTables();
  const link = document.getElementById("compare-link");
  link.textContent = S.selected.size ? `compare (${S.selected.size})` : "compare";
  link.href = "#/compare?sigs=" + [...S.selected].join(",");
}
function update(changed, grown, layout) {
  if (current.view === "table") {
    if (layout) renderTables(); else patchTables(changed);
  } else if (current.view === "xp") {
    if (changed.has(current.sig)) renderXPHeader();
    if (grown.has(current.sig)) drawXPPlots();
  } else if (current.view === "compare") {
    if (current.sigs.some(s => grown.has(s))) drawCompare();
    if (current.sigs.some(s => changed.has(s))) renderChips();
  }
}

// ---------------------------------------------------------------- the grids' tables
const META = [
  {key: "index", header: "#", num: true}, {key: "name", header: "name"},
  {key: "state", header: "state"}, {key: "job_id", header: "job"},
  {key: "n", header: "lines", num: true}, {key: "reason", header: "failure"},
];
function items(grid) {
  const rows = S.rows[grid.name] || {};
  return grid.sigs.filter(s => rows[s]).map(s => ({sig: s, ...rows[s]}));
}
function cellValue(grid, item, key) {
  const x = S.xps[item.sig] || {};
  if (key === "index") return item.index;
  if (key === "name") return item.name;
  if (key === "state") return x.short;
  if (key === "job_id") return x.job_id;
  if (key === "n") return x.n;
  if (key === "reason") return item.error || reasonOf(x);
  return item.cells[key];
}
function rowHTML(grid, item) {
  const x = S.xps[item.sig] || {};
  const checked = S.selected.has(item.sig) ? " checked" : "";
  let html = `<td><input type="checkbox" data-sig="${esc(item.sig)}"${checked}></td>`;
  html += `<td class="num">${item.index}</td>`;
  html += `<td><a href="#/xp/${encodeURIComponent(item.sig)}">${esc(item.name || nameOf(item.sig))}</a></td>`;
  html += `<td class="state ${stateClass(x.short)}" title="${esc(x.state || "no job")}">${esc(x.short)}</td>`;
  html += `<td>${esc(x.job_id || "")}</td><td class="num">${x.n ?? 0}</td>`;
  const reason = item.error || reasonOf(x);
  html += `<td class="reason" title="${esc(reason)}">${esc(reason)}</td>`;
  grid.columns.forEach((c, i) => {
    html += `<td class="num">${esc(fmt(item.cells[i], c.format))}</td>`;
  });
  return html;
}
function sortedItems(grid) {
  const its = selectRows(items(grid), S.filter.split(/\s+/).filter(Boolean));
  const sort = S.sort[grid.name];
  if (sort) {
    const [key, dir] = sort;
    its.sort((a, b) => {
      const va = cellValue(grid, a, key), vb = cellValue(grid, b, key);
      if (va === vb) return a.index - b.index;
      if (va === null || va === undefined || va === "") return 1;
      if (vb === null || vb === undefined || vb === "") return -1;
      return (va < vb ? -1 : 1) * dir;
    });
  }
  return its;
}
function summary(grid) {
  const counts = {};
  for (const sig of grid.sigs) {
    const s = (S.xps[sig] || {}).state || "no job";
    counts[s] = (counts[s] || 0) + 1;
  }
  return `${grid.sigs.length} XPs: ` + Object.entries(counts).sort()
    .map(([s, n]) => `${n} ${esc(s)}`).join(", ");
}
function renderTables() {
  const app = document.getElementById("app");
  let html = `<div class="toolbar"><input type="text" id="filter" placeholder="patterns, as on the command line: lr=0.1 !adam 3" value="${esc(S.filter)}">
    <button id="compare-btn">compare selected</button><button id="clear-btn">clear selection</button>
    <span class="muted">${S.grids.length} grid(s), version ${S.v}</span></div>`;
  for (const grid of S.grids) {
    html += `<section data-grid="${esc(grid.name)}"><h2>Grid ${esc(grid.name)}</h2>`;
    if (grid.base_name) html += `<div class="muted">Base name: ${esc(grid.base_name)}</div>`;
    html += `<div class="summary">${summary(grid)}</div>`;
    html += `<table class="grid"><thead><tr><th></th>`;
    const sort = S.sort[grid.name] || [];
    const th = (key, header) => {
      const cls = sort[0] === key ? (sort[1] > 0 ? "sorted-asc" : "sorted-desc") : "";
      return `<th data-key="${key}" class="${cls}">${esc(header)}</th>`;
    };
    for (const m of META) html += th(m.key, m.header);
    grid.columns.forEach((c, i) => { html += th(i, c.header); });
    html += `</tr></thead><tbody>`;
    for (const it of sortedItems(grid)) {
      html += `<tr data-sig="${esc(it.sig)}">${rowHTML(grid, it)}</tr>`;
    }
    html += `</tbody></table></section>`;
  }
  app.innerHTML = html;
  const filter = document.getElementById("filter");
  filter.addEventListener("input", () => {
    S.filter = filter.value;
    for (const grid of S.grids) renderBody(grid);
  });
  document.getElementById("compare-btn").onclick = () => {
    location.hash = "#/compare?sigs=" + [...S.selected].join(",");
  };
  document.getElementById("clear-btn").onclick = () => { S.selected.clear(); render(); };
  app.querySelectorAll("th[data-key]").forEach(th => th.addEventListener("click", () => {
    const grid = th.closest("section").dataset.grid;
    const raw = th.dataset.key, key = /^\d+$/.test(raw) ? +raw : raw;
    const prev = S.sort[grid];
    S.sort[grid] = [key, prev && prev[0] === key ? -prev[1] : 1];
    renderTables();
  }));
}
document.addEventListener("change", ev => {
  const box = ev.target;
  if (box.type !== "checkbox" || !box.dataset.sig) return;
  if (box.checked) S.selected.add(box.dataset.sig); else S.selected.delete(box.dataset.sig);
  const link = document.getElementById("compare-link");
  link.textContent = S.selected.size ? `compare (${S.selected.size})` : "compare";
  link.href = "#/compare?sigs=" + [...S.selected].join(",");
});
function renderBody(grid) {
  const section = [...document.querySelectorAll("section[data-grid]")]
    .find(s => s.dataset.grid === grid.name);
  if (!section) return;
  section.querySelector("tbody").innerHTML = sortedItems(grid)
    .map(it => `<tr data-sig="${esc(it.sig)}">${rowHTML(grid, it)}</tr>`).join("");
  section.querySelector(".summary").innerHTML = summary(grid);
}
function patchTables(changed) {
  if (!changed.size) return;
  for (const grid of S.grids) {
    const section = [...document.querySelectorAll("section[data-grid]")]
      .find(s => s.dataset.grid === grid.name);
    if (!section) continue;
    if (S.sort[grid.name] || S.filter.trim()) { renderBody(grid); continue; }
    const rows = S.rows[grid.name] || {};
    for (const tr of section.querySelectorAll("tbody tr")) {
      const sig = tr.dataset.sig;
      if (changed.has(sig) && rows[sig]) tr.innerHTML = rowHTML(grid, {sig, ...rows[sig]});
    }
    section.querySelector(".summary").innerHTML = summary(grid);
  }
  const info = document.querySelector(".toolbar .muted");
  if (info) info.textContent = `${S.grids.length} grid(s), version ${S.v}`;
}

// ---------------------------------------------------------------- plotting
let plotlyLoading = null;
function plotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyLoading) plotlyLoading = new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = "static/plotly.min.js?token=" + encodeURIComponent(TOKEN);
    s.onload = () => resolve(window.Plotly);
    s.onerror = reject;
    document.head.appendChild(s);
  });
  return plotlyLoading;
}
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf"];
function plotInto(container, metric, traces) {
  let div = [...container.querySelectorAll(".plot")].find(d => d.dataset.metric === metric);
  if (!div) {
    div = document.createElement("div");
    div.className = "plot"; div.dataset.metric = metric;
    container.appendChild(div);
  }
  const longest = Math.max(0, ...traces.map(t => t.x.length));
  const xaxis = {title: {text: "line"}};
  if (longest <= 12) xaxis.dtick = 1;  // no half lines on short histories
  const layout = {title: {text: metric, font: {size: 14}}, margin: {l: 50, r: 10, t: 35, b: 35},
                  xaxis, showlegend: traces.length > 1,
                  legend: {font: {size: 10}}};
  window.Plotly.react(div, traces, layout, {displaylogo: false, responsive: true});
}
function metricsOf(sigs) {
  const keys = new Set();
  for (const sig of sigs) for (const k of Object.keys((S.curves[sig] || {series: {}}).series)) keys.add(k);
  return [...keys].sort();
}
function xs(n) { return Array.from({length: n}, (_, i) => i + 1); }

// ---------------------------------------------------------------- one XP
function renderXP() {
  const sig = current.sig;
  const app = document.getElementById("app");
  app.innerHTML = `<h2>XP <span id="xp-name"></span> <span class="muted">${esc(sig)}</span></h2>
    <div class="cols"><div><h3>Job</h3><dl class="kv" id="xp-job"></dl></div>
    <div><h3>Hyper-parameters</h3><dl class="kv" id="xp-params"></dl></div>
    <div><h3>State history</h3><dl class="kv" id="xp-states"></dl></div></div>
    <h3>Curves</h3><div class="plots" id="xp-plots"></div>
    <h3>Last log lines</h3><pre class="log" id="xp-log">…</pre>`;
  renderXPHeader();
  drawXPPlots();
}
let logTimer = null;
function renderXPHeader() {
  const sig = current.sig;
  const x = S.xps[sig];
  if (!x) { document.getElementById("xp-name").textContent = "(unknown)"; return; }
  document.getElementById("xp-name").textContent = nameOf(sig);
  api("api/xp/" + encodeURIComponent(sig)).then(d => {
    if (current.view !== "xp" || current.sig !== sig) return;
    const job = d.job || {};
    const kv = (k, v, cls) => `<dt>${esc(k)}</dt><dd class="${cls || ""}">${esc(v)}</dd>`;
    document.getElementById("xp-job").innerHTML =
      kv("state", d.state || "no job", "state " + stateClass(d.state)) +
      kv("job id", d.job_id || "-") + kv("backend", job.backend || "-") +
      (reasonOf(d) ? kv("failure", reasonOf(d), "reason") : "") +
      kv("metric lines", d.n) + kv("previous jobs", (job.previous || []).join(", ") || "-") +
      kv("folder", d.static.folder) + kv("grids", d.grids.join(", "));
    document.getElementById("xp-params").innerHTML =
      (d.static.params.length ? d.static.params.map(([k, v]) => kv(k, JSON.stringify(v))).join("")
                              : kv("(defaults)", "")) +
      kv("argv", d.static.argv.join(" "));
    document.getElementById("xp-states").innerHTML = d.state_history.map(([t, s]) =>
      kv(new Date(t * 1000).toLocaleString(), s, "state " + stateClass(s))).join("");
  }).catch(() => {});
  loadLog();
}
function loadLog() {
  const sig = current.sig;
  clearTimeout(logTimer);
  api("api/xp/" + encodeURIComponent(sig) + "/log?bytes=8192").then(d => {
    if (current.view !== "xp" || current.sig !== sig) return;
    const pre = document.getElementById("xp-log");
    const lines = (d.log ?? "(no log yet)").split("\n");
    pre.textContent = lines.slice(-60).join("\n");
    pre.scrollTop = pre.scrollHeight;
    const x = S.xps[sig] || {};
    if (x.state === "RUNNING" || x.state === "PENDING") logTimer = setTimeout(loadLog, 5000);
  }).catch(() => {});
}
function drawXPPlots() {
  const sig = current.sig;
  const c = S.curves[sig];
  const box = document.getElementById("xp-plots");
  if (!box || !c) return;
  if (!c.n) { box.innerHTML = `<p class="muted">No metric line yet.</p>`; return; }
  const muted = box.querySelector("p.muted"); if (muted) muted.remove();
  plotly().then(() => {
    const x = xs(c.n);
    for (const metric of metricsOf([sig])) {
      plotInto(box, metric, [{x, y: c.series[metric], mode: "lines+markers", name: metric,
                              marker: {size: 4}, line: {color: PALETTE[0]}}]);
    }
  });
}

// ---------------------------------------------------------------- compare
function paramsOf(sig) {
  const x = S.xps[sig];
  return x && x.static ? (x.static.config || Object.fromEntries(x.static.params)) : {};
}
function renderCompare() {
  const app = document.getElementById("app");
  const keys = new Set();
  for (const sig of current.sigs) for (const k of Object.keys(paramsOf(sig))) keys.add(k);
  const options = ['<option value="">(each XP its own colour)</option>']
    .concat([...keys].sort().map(k =>
      `<option value="${esc(k)}"${k === current.by ? " selected" : ""}>${esc(k)}</option>`));
  app.innerHTML = `<h2>Compare ${current.sigs.length} XP(s)</h2>
    <div class="toolbar"><label>group by <select id="by">${options.join("")}</select></label>
    <span class="chips" id="chips"></span></div>
    ${current.sigs.length ? "" : '<p class="muted">Pick XPs in the grids\' tables (check boxes), then "compare selected".</p>'}
    <div class="plots" id="cmp-plots"></div>`;
  document.getElementById("by").onchange = ev => {
    location.hash = "#/compare?sigs=" + current.sigs.join(",") + (ev.target.value ? "&by=" + encodeURIComponent(ev.target.value) : "");
  };
  renderChips();
  drawCompare();
}
function renderChips() {
  const chips = document.getElementById("chips");
  if (!chips) return;
  chips.innerHTML = current.sigs.map(sig => {
    const rest = current.sigs.filter(s => s !== sig).join(",");
    const x = S.xps[sig] || {};
    return `<span><a href="#/xp/${encodeURIComponent(sig)}" style="color:inherit;margin:0">${esc(nameOf(sig))}</a>
      <span class="state ${stateClass(x.short)}" style="background:none;padding:0">${esc(x.short || "")}</span>
      <a href="#/compare?sigs=${rest}${current.by ? "&by=" + encodeURIComponent(current.by) : ""}" title="remove">×</a></span>`;
  }).join("");
}
function drawCompare() {
  const box = document.getElementById("cmp-plots");
  if (!box || !current.sigs.length) return;
  const by = current.by;
  const groups = [];
  const colour = sig => {
    if (!by) return PALETTE[current.sigs.indexOf(sig) % PALETTE.length];
    const value = JSON.stringify(paramsOf(sig)[by] ?? null);
    if (!groups.includes(value)) groups.push(value);
    return PALETTE[groups.indexOf(value) % PALETTE.length];
  };
  plotly().then(() => {
    for (const metric of metricsOf(current.sigs)) {
      const seen = new Set();
      const traces = [];
      for (const sig of current.sigs) {
        const c = S.curves[sig];
        if (!c || !c.series[metric]) continue;
        const value = by ? `${by}=${JSON.stringify(paramsOf(sig)[by] ?? null)}` : null;
        traces.push({x: xs(c.n), y: c.series[metric], mode: "lines", name: by ? value : nameOf(sig),
                     legendgroup: by ? value : sig, showlegend: by ? !seen.has(value) : true,
                     hovertext: nameOf(sig), line: {color: colour(sig)}});
        if (by) seen.add(value);
      }
      plotInto(box, metric, traces);
    }
  });
}

connect(curvesOf(current));
render();
