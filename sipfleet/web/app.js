// sipfleet dashboard: one live stream (GET /ui/stream, Server-Sent Events read with
// fetch so it can carry the token), actions as JSON-RPC calls to the RPC path.
"use strict";

const RPC_PATH = document.querySelector('meta[name="sipfleet-rpc"]').content;
const TOKEN_KEY = "sipfleet-token";
const WINDOW = 120;  // seconds of history in the chart
const MAX_EVENTS = 100;
const COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2",
                "#ca8a04", "#db2777", "#4b5563", "#65a30d"];

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(TOKEN_KEY) || "";
const series = new Map();  // key -> {label, color, points: [cps...]}
let totalPoints = [];
const rows = new Map();    // key -> {tr, cells}

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

function keyOf(d) { return d.set + "|" + d.uri; }

// -- the stream ---------------------------------------------------------------------
let retryMs = 1000;

async function connect() {
  setConn("wait", "connecting");
  let resp;
  try {
    resp = await fetch("/ui/stream", { headers: authHeaders(), cache: "no-store" });
  } catch (e) {
    return retryLater();
  }
  if (resp.status === 401) {
    setConn("bad", "token needed");
    $("login").hidden = false;
    $("token").focus();
    return;  // the login button connects again
  }
  if (!resp.ok || !resp.body) {
    setConn("bad", "HTTP " + resp.status);
    return retryLater();
  }
  $("login").hidden = true;
  setConn("ok", "live");
  retryMs = 1000;
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        handleBlock(block);
      }
    }
  } catch (e) {
    // the connection broke: fall through and reconnect
  }
  retryLater();
}

function retryLater() {
  setConn("bad", "reconnecting");
  setTimeout(connect, retryMs);
  retryMs = Math.min(retryMs * 2, 10000);
}

function handleBlock(block) {
  let kind = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) kind = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  const value = JSON.parse(data);
  if (kind === "hello") {
    $("events").textContent = "";
    for (const ev of value.events) addEvent(ev);
    resetRates();
    for (const h of value.history) pushSample(h.time, h.total, Object.entries(h.routed));
  } else if (kind === "fleet") {
    renderFleet(value);
  } else if (kind === "event") {
    addEvent(value);
  }
}

function setConn(cls, text) {
  const el = $("conn");
  el.className = "pill " + cls;
  el.textContent = text;
}

// -- rates: calls/s from the routed counts of consecutive samples -----------------------
let prevTime = null;
let prevTotal = null;
const prevRouted = new Map();
let lastRates = new Map();
let lastTotalRate = 0;

function resetRates() {
  prevTime = null;
  prevTotal = null;
  prevRouted.clear();
  lastRates = new Map();
  series.clear();
  totalPoints = [];
}

// One sample (a second apart, or skipped): rates per destination and in total, and
// a point on each line of the chart.
function pushSample(time, total, entries) {
  if (prevTime !== null && time - prevTime < 0.5) return;
  const dt = prevTime === null ? null : time - prevTime;
  const rates = new Map();
  for (const [key, n] of entries) {
    const old = prevRouted.get(key);
    rates.set(key, dt && old !== undefined ? Math.max(n - old, 0) / dt : 0);
    prevRouted.set(key, n);
  }
  const totalRate = dt && prevTotal !== null ? Math.max(total - prevTotal, 0) / dt : 0;
  if (dt) {
    totalPoints.push(totalRate);
    if (totalPoints.length > WINDOW) totalPoints.shift();
    for (const [key, cps] of rates) {
      let s = series.get(key);
      if (!s) {
        s = { label: key.replace("|", " "), color: COLORS[series.size % COLORS.length], points: [] };
        series.set(key, s);
      }
      s.points.push(cps);
      if (s.points.length > WINDOW) s.points.shift();
    }
  }
  prevTime = time;
  prevTotal = total;
  lastRates = rates;
  lastTotalRate = totalRate;
}

// -- the fleet -------------------------------------------------------------------------
function renderFleet(snap) {
  const entries = [];
  for (const s of snap.sets) for (const d of s.destinations) entries.push([keyOf(d), d.routed]);
  pushSample(snap.time, snap.totals.routed, entries);
  const seen = new Set();
  const sets = $("sets");
  for (const s of snap.sets) {
    const tbody = setTable(sets, s.id);
    for (const d of s.destinations) {
      const key = keyOf(d);
      seen.add(key);
      renderRow(tbody, key, d, lastRates.get(key) || 0);
    }
  }
  for (const [key, row] of rows) {
    if (!seen.has(key)) { row.tr.remove(); rows.delete(key); }
  }
  for (const key of series.keys()) if (!seen.has(key)) series.delete(key);
  for (const table of sets.querySelectorAll("table")) {
    if (!snap.sets.some((s) => String(s.id) === table.dataset.set)) table.remove();
  }
  const t = snap.totals;
  $("summary").textContent =
    `v${snap.version} · up ${fmtDuration(snap.uptime)} · ${t.dialogs} calls up` +
    ` · ${snap.accepting ? "accepting" : "NOT accepting (stopping)"}` +
    ` · loop lag ${t.loop_lag_ms} ms` + (snap.lost_events ? ` · ${snap.lost_events} events lost` : "");
  $("cps-now").textContent = prevTime === null ? "" : `${lastTotalRate.toFixed(1)} now`;
  drawChart();
}

function setTable(container, id) {
  let table = container.querySelector(`table[data-set="${id}"]`);
  if (!table) {
    table = document.createElement("table");
    table.dataset.set = String(id);
    table.innerHTML =
      `<caption>Set ${id}</caption><thead><tr><th>URI</th><th>duid</th><th>State</th>` +
      `<th class="num">Active calls</th><th class="num">Calls/s</th><th class="num">Routed</th>` +
      `<th class="num">Failovers</th><th class="num">Latency</th><th>Actions</th></tr></thead><tbody></tbody>`;
    container.appendChild(table);
  }
  return table.tBodies[0];
}

function renderRow(tbody, key, d, cps) {
  let row = rows.get(key);
  if (!row) {
    const tr = document.createElement("tr");
    tr.dataset.uri = d.uri;
    tr.dataset.set = String(d.set);
    const cells = {};
    for (const name of ["uri", "duid", "state", "active", "cps", "routed", "failovers", "latency", "actions"]) {
      const td = document.createElement("td");
      td.className = name;
      if (["active", "cps", "routed", "failovers", "latency"].includes(name)) td.classList.add("num");
      tr.appendChild(td);
      cells[name] = td;
    }
    cells.uri.textContent = d.uri;
    for (const [action, label] of [["drain", "Drain"], ["undrain", "Undrain"],
                                   ["disable", "Disable"], ["enable", "Enable"]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "act-" + action;
      b.dataset.action = action;
      b.textContent = label;
      b.addEventListener("click", () => act(action, row.d));
      cells.actions.appendChild(b);
    }
    row = { tr, cells, d };
    rows.set(key, row);
    tbody.appendChild(tr);
  }
  row.d = d;
  const c = row.cells;
  c.duid.textContent = d.duid || "";
  c.state.innerHTML = "";
  const st = document.createElement("span");
  st.className = "st " + d.state;
  st.textContent = d.state;
  c.state.appendChild(st);
  if (d.by && (d.state === "draining" || d.state === "disabled")) {
    st.title = `by ${d.by}`;
  }
  row.tr.dataset.state = d.state;
  c.active.textContent = String(d.active_calls);
  c.cps.textContent = cps.toFixed(1);
  c.routed.textContent = String(d.routed);
  c.failovers.textContent = String(d.failovers);
  // The probes' moving average; the last round trip in the tooltip.
  c.latency.textContent = d.latency_est_ms == null ? "–" : `${d.latency_est_ms.toFixed(1)} ms`;
  c.latency.title = d.latency_ms == null ? "" : `last probe: ${d.latency_ms.toFixed(1)} ms`;
  const show = {
    drain: d.admin === "enabled",
    undrain: d.admin === "draining",
    disable: d.admin !== "disabled",
    enable: d.admin === "disabled",
  };
  for (const b of c.actions.querySelectorAll("button")) b.hidden = !show[b.dataset.action];
}

// -- the chart: a hand-drawn canvas, one line per destination and the total ------------
function drawChart() {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  const left = 40, bottom = 18, top = 8;
  const ph = h - bottom - top, pw = w - left - 8;
  let peak = 1;
  for (const v of totalPoints) peak = Math.max(peak, v);
  const step = niceCeil(peak / 4);
  const max = 4 * step;
  g.strokeStyle = "#e5e7eb";
  g.fillStyle = "#6b7280";
  g.font = "11px system-ui, sans-serif";
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + ph - (ph * i) / 4;
    g.beginPath(); g.moveTo(left, y); g.lineTo(left + pw, y); g.stroke();
    g.fillText(String(+(step * i).toFixed(2)), 4, y + 4);
  }
  // The time axis spans what is known, from 30 s up to the whole window.
  const span = Math.min(WINDOW, Math.max(30, totalPoints.length));
  g.fillText(`-${span}s`, left, h - 4);
  g.fillText("now", left + pw - 22, h - 4);
  const line = (points, color, width) => {
    if (points.length < 2) return;
    g.strokeStyle = color;
    g.lineWidth = width;
    g.beginPath();
    const offset = span - points.length;
    points.forEach((v, i) => {
      const x = left + (pw * (offset + i)) / (span - 1);
      const y = top + ph - (ph * v) / max;
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  };
  for (const s of series.values()) line(s.points, s.color, 1.5);
  line(totalPoints, "#111827", 2.5);
  const legend = $("legend");
  legend.textContent = "";
  const item = (label, color) => {
    const span = document.createElement("span");
    span.style.setProperty("--c", color);
    span.textContent = label;
    legend.appendChild(span);
  };
  item("total", "#111827");
  for (const s of series.values()) item(s.label, s.color);
}

function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmtValue(v) {
  if (typeof v === "number" && !Number.isInteger(v)) return String(+v.toFixed(3));
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

function fmtDuration(s) {
  s = Math.floor(s);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60) + "s";
  return Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m";
}

// -- events ------------------------------------------------------------------------------
function addEvent(ev) {
  const li = document.createElement("li");
  const when = new Date((typeof ev.time === "number" ? ev.time : Date.parse(ev.time) / 1000) * 1000);
  const t = document.createElement("time");
  t.textContent = when.toLocaleTimeString();
  const b = document.createElement("b");
  b.textContent = ev.event;
  li.append(t, b);
  const rest = Object.entries(ev)
    .filter(([k, v]) => k !== "event" && k !== "time" && v !== null && v !== undefined)
    .map(([k, v]) => `${k}=${fmtValue(v)}`)
    .join(" ");
  li.append(document.createTextNode(rest));
  const list = $("events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

// -- actions: confirm, then JSON-RPC -------------------------------------------------------
const ACTIONS = {
  drain: (d) => ({
    text: `Drain ${d.uri} (set ${d.set})? It takes no new calls; the ${d.active_calls} calls up on it finish.`,
    method: "dispatcher.drain", params: [d.set, d.uri],
  }),
  undrain: (d) => ({
    text: `Undrain ${d.uri} (set ${d.set})? It takes new calls again.`,
    method: "dispatcher.undrain", params: [d.set, d.uri],
  }),
  disable: (d) => ({
    text: `Disable ${d.uri} (set ${d.set})? It takes no new calls until enabled (kept across restarts).`,
    method: "dispatcher.set_state", params: ["d", d.set, d.uri],
  }),
  enable: (d) => ({
    text: `Enable ${d.uri} (set ${d.set})? It takes new calls again.`,
    method: "dispatcher.set_state", params: [d.probe_flag ? "ap" : "a", d.set, d.uri],
  }),
  reload: () => ({
    text: "Reload the destinations from the store? Destinations that remain keep their state.",
    method: "dispatcher.reload", params: [],
  }),
};

function confirmDialog(text) {
  const dlg = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const done = (ok) => {
      $("confirm-ok").onclick = null;
      $("confirm-cancel").onclick = null;
      dlg.onclose = null;
      if (dlg.open) dlg.close();
      resolve(ok);
    };
    $("confirm-ok").onclick = () => done(true);
    $("confirm-cancel").onclick = () => done(false);
    dlg.onclose = () => done(false);
    dlg.showModal();
  });
}

async function act(action, d) {
  const a = ACTIONS[action](d);
  if (!(await confirmDialog(a.text))) return;
  const label = `${a.method} ${a.params.join(" ")}`;
  showResult("pending", `${label}: …`);
  try {
    const resp = await fetch(RPC_PATH, {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({ jsonrpc: "2.0", method: a.method, params: a.params, id: Date.now() }),
    });
    if (resp.status === 401) {
      showResult("error", `${label}: refused (401): the token is missing or wrong`);
      $("login").hidden = false;
      return;
    }
    const doc = await resp.json();
    if (doc.error) {
      showResult("error", `${label}: failed: ${doc.error.code} ${doc.error.message}`);
    } else {
      showResult("ok", `${label}: ok\n${summarize(doc.result)}`);
    }
  } catch (e) {
    showResult("error", `${label}: ${e}`);
  }
}

function summarize(result) {
  if (Array.isArray(result)) {
    return result.map((r) => (r && r.URI ? `${r.SET} ${r.URI}: ${r.STATE}, ${r.ACTIVE_CALLS} calls up` : JSON.stringify(r))).join("\n");
  }
  return typeof result === "string" ? result : JSON.stringify(result);
}

function showResult(cls, text) {
  const el = $("result");
  el.className = cls;
  el.textContent = text;
}

// -- start -----------------------------------------------------------------------------------
$("reload").addEventListener("click", () => act("reload", null));
$("login-go").addEventListener("click", () => {
  token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  connect();
});
$("token").addEventListener("keydown", (e) => { if (e.key === "Enter") $("login-go").click(); });
connect();
