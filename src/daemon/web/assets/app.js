// cohort dashboard: live process list (server-sent events from /events), cpu/memory charts from
// the daemon's history ring (/history) extended live, a log tail per process (/logs/sse), balancers
// with their upstreams, and restart/reload/stop/scale with confirmation. Plain DOM, no framework.
"use strict";

const $ = (sel) => document.querySelector(sel);
const rows = new Map(); // process id -> <tr>
let procs = [];
let selected = null; // process id shown in the detail panel
let history = { cpu: [], memory: [], interval: 2000, last: 0 };
let logSource = null;
const MAX_POINTS = 150;
const MAX_LOG_LINES = 1000;

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function duration(ms) {
  if (!ms) return "0s";
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}

function toast(text) {
  const t = $("#toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

async function api(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = await r.json().catch(() => ({}));
  if (r.status === 401) { location.href = "/login"; }
  if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
  return data;
}

// ----- confirmation -----

function confirmAction(text, withCount) {
  const dlg = $("#confirm");
  $("#confirm-text").textContent = text;
  $("#confirm-count-label").hidden = !withCount;
  $("#confirm-count").value = "";
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === "yes" ? ($("#confirm-count").value || true) : null);
    }, { once: true });
    dlg.showModal();
    if (withCount) $("#confirm-count").focus();
  });
}

async function act(action, p) {
  if (action === "scale") {
    const n = await confirmAction(`Scale ${p.name} to how many instances? (N, +N or -N)`, true);
    if (!n || n === true) return;
    try { await api("/scale", { name: p.name, target: String(n).trim() }); toast(`${p.name} scaled to ${n}`); }
    catch (e) { toast("scale failed: " + e.message); }
    return;
  }
  const ok = await confirmAction(`${action[0].toUpperCase() + action.slice(1)} ${p.name}:${p.instance} (id ${p.id})?`, false);
  if (!ok) return;
  try { await api("/action", { action, selector: { id: p.id } }); toast(`${action}: ${p.name}:${p.instance} done`); }
  catch (e) { toast(action + " failed: " + e.message); }
}

// ----- process table -----

function cell(tr, cls) { return tr.querySelector("td." + cls); }

function makeRow(p) {
  const tr = document.createElement("tr");
  tr.id = "proc-" + p.id;
  tr.dataset.id = p.id;
  for (const cls of ["id", "name", "mode wide", "pid", "st", "cpu num", "mem num", "restarts num", "uptime num wide", "actions"]) {
    const td = document.createElement("td");
    td.className = cls;
    tr.appendChild(td);
  }
  const status = document.createElement("span");
  status.className = "status";
  cell(tr, "st").appendChild(status);
  for (const action of ["restart", "reload", "stop", "scale"]) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = action;
    b.className = "act-" + action + (action === "stop" ? " danger" : "");
    b.addEventListener("click", (ev) => {
      ev.stopPropagation();
      const cur = procs.find((x) => x.id === p.id);
      if (cur) act(action, cur);
    });
    cell(tr, "actions").appendChild(b);
  }
  tr.addEventListener("click", () => select(p.id));
  return tr;
}

function renderProcesses(list) {
  procs = list;
  const body = $("#procs tbody");
  const seen = new Set();
  for (const p of list) {
    seen.add(p.id);
    let tr = rows.get(p.id);
    if (!tr) { tr = makeRow(p); rows.set(p.id, tr); }
    body.appendChild(tr); // keeps id order
    cell(tr, "id").textContent = p.id;
    cell(tr, "name").textContent = p.name + (p.instance ? ":" + p.instance : "");
    cell(tr, "mode").textContent = p.mode;
    cell(tr, "pid").textContent = p.pid ?? "";
    const st = cell(tr, "st").firstChild;
    st.textContent = p.status;
    st.className = "status " + p.status;
    cell(tr, "cpu").textContent = p.cpu.toFixed(1) + "%";
    cell(tr, "mem").textContent = bytes(p.memory);
    cell(tr, "restarts").textContent = p.restarts;
    cell(tr, "uptime").textContent = duration(p.uptime_ms);
    tr.classList.toggle("selected", p.id === selected);
  }
  for (const [id, tr] of rows) {
    if (!seen.has(id)) { tr.remove(); rows.delete(id); }
  }
  $("#empty").hidden = list.length > 0;
  if (selected !== null) {
    const p = list.find((x) => x.id === selected);
    if (p) extendHistory(p); else { selected = null; $("#detail").hidden = true; closeLog(); }
  }
}

// ----- charts -----

function drawChart(svg, values, max) {
  const line = svg.querySelector("polyline");
  if (!values.length) { line.setAttribute("points", ""); return; }
  // Head-room above the highest value; the x axis spans at least 30 samples (a minute).
  const top = Math.max(max, Math.max(...values) * 1.2) || 1;
  const step = 300 / (Math.max(values.length, 30) - 1);
  const start = 300 - (values.length - 1) * step;
  line.setAttribute("points", values.map((v, i) => `${(start + i * step).toFixed(1)},${(78 - (v / top) * 74).toFixed(1)}`).join(" "));
}

function drawCharts() {
  drawChart($("#cpu-chart"), history.cpu, 100);
  drawChart($("#mem-chart"), history.memory, 1);
  const n = history.cpu.length;
  $("#cpu-now").textContent = n ? history.cpu[n - 1].toFixed(1) + "%" : "";
  $("#mem-now").textContent = n ? bytes(history.memory[n - 1]) : "";
}

function extendHistory(p) {
  const now = Date.now();
  if (now - history.last < history.interval) return;
  history.last = now;
  history.cpu.push(p.cpu);
  history.memory.push(p.memory);
  if (history.cpu.length > MAX_POINTS) { history.cpu.shift(); history.memory.shift(); }
  drawCharts();
}

async function select(id) {
  selected = id;
  const p = procs.find((x) => x.id === id);
  $("#detail").hidden = false;
  $("#detail-title").textContent = p ? `${p.name}:${p.instance} (id ${p.id})` : "id " + id;
  for (const [pid, tr] of rows) tr.classList.toggle("selected", pid === id);
  history = { cpu: [], memory: [], interval: 2000, last: Date.now() };
  drawCharts();
  openLog(id);
  try {
    const [h] = await api("/history", { id });
    if (h && selected === id) {
      history.cpu = h.cpu.slice(-MAX_POINTS);
      history.memory = h.memory.slice(-MAX_POINTS);
      history.interval = h.interval_ms || 2000;
      drawCharts();
    }
  } catch (e) { toast("history: " + e.message); }
}

// ----- log tail -----

function closeLog() {
  if (logSource) { logSource.close(); logSource = null; }
}

function openLog(id) {
  closeLog();
  const pre = $("#log");
  pre.textContent = "";
  $("#log-state").textContent = "connecting…";
  logSource = new EventSource(`/logs/sse?id=${id}&lines=50`);
  logSource.addEventListener("open", () => { $("#log-state").textContent = "live"; });
  logSource.addEventListener("error", () => { $("#log-state").textContent = "reconnecting…"; });
  logSource.addEventListener("line", (ev) => {
    const l = JSON.parse(ev.data);
    const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const span = document.createElement("span");
    if (l.stream === "err") span.className = "err";
    span.textContent = l.line + "\n";
    pre.appendChild(span);
    while (pre.childNodes.length > MAX_LOG_LINES) pre.removeChild(pre.firstChild);
    if (stick) pre.scrollTop = pre.scrollHeight;
  });
  logSource.addEventListener("skipped", (ev) => {
    const n = JSON.parse(ev.data).skipped;
    pre.appendChild(document.createTextNode(`[${n} lines skipped: too slow; they are in the log files]\n`));
  });
}

// ----- balancers -----

// "2xx 10 · 5xx 2": the status classes that have responses.
function classes(r) {
  const parts = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"].filter((c) => r[c] > 0).map((c) => `${c} ${r[c]}`);
  return parts.length ? parts.join(" · ") : "none";
}

// Seconds (from the histogram's estimate) as milliseconds, or "-".
function ms(s) {
  return typeof s === "number" ? `${(s * 1000).toFixed(1)} ms` : "-";
}

function renderBalancers(list) {
  $("#balancers-section").hidden = list.length === 0;
  const root = $("#balancers");
  root.textContent = "";
  for (const b of list) {
    const div = document.createElement("div");
    div.className = "balancer";
    const h = document.createElement("h3");
    const st = b.status;
    h.textContent = `${b.name}:${b.instance}` + (st ? ` — ${st.mode}, ${st.strategy}, listening on ${st.listen}` : " — not answering");
    div.appendChild(h);
    if (st && st.responses) {
      const p = document.createElement("p");
      p.className = "classes";
      p.textContent = `responses ${classes(st.responses)} · queued ${st.queued || 0}`;
      div.appendChild(p);
    }
    if (st) {
      const t = document.createElement("table");
      t.innerHTML = "<thead><tr><th>upstream</th><th>state</th><th class=num>requests</th><th>responses</th><th class=num>p50</th><th class=num>p99</th><th class=num>errors</th><th class=num>retries</th><th class=num>active</th><th class=num>queued</th><th class=num>weight</th></tr></thead>";
      const tb = document.createElement("tbody");
      for (const u of st.upstreams) {
        const tr = document.createElement("tr");
        const rt = u.response_time || {};
        const cells = [[u.address, ""], [u.state, u.state], [u.requests, "num"], [u.responses ? classes(u.responses) : "", ""],
          [ms(rt.p50_seconds), "num"], [ms(rt.p99_seconds), "num"], [u.errors, "num"], [u.retries ?? "", "num"],
          [u.active, "num"], [u.queued ?? "", "num"], [u.weight, "num"]];
        for (const [v, cls] of cells) {
          const td = document.createElement("td");
          td.textContent = v;
          if (cls) td.className = cls;
          tr.appendChild(td);
        }
        tb.appendChild(tr);
      }
      t.appendChild(tb);
      div.appendChild(t);
    }
    root.appendChild(div);
  }
}

// ----- live connection -----

function connect() {
  const es = new EventSource("/events");
  es.addEventListener("open", () => { const c = $("#conn"); c.textContent = "live"; c.className = "conn on"; });
  es.addEventListener("error", () => { const c = $("#conn"); c.textContent = "reconnecting…"; c.className = "conn off"; });
  es.addEventListener("processes", (ev) => renderProcesses(JSON.parse(ev.data)));
  es.addEventListener("balancers", (ev) => renderBalancers(JSON.parse(ev.data)));
}

connect();
