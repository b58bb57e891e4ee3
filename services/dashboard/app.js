// FastTrack ops dashboard: polls the JSON ops API every 2 s and redraws. No libraries, no CDN.
"use strict";

const POLL_MS = 2000;
const COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1"];
const state = { expanded: new Set(), selected: null, heatCenter: null, centers: [], busy: false };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(tbody, rows, empty, columns) {
  tbody.replaceChildren(...(rows.length ? rows
    : [el("tr", {}, el("td", { colspan: columns, class: "muted" }, empty))]));
}

const fmt = {
  int: (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US")),
  rate: (n) => (n || 0).toFixed(n >= 10 ? 0 : 1),
  secs(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 120) return `${s.toFixed(1)} s`;
    if (s < 7200) return `${(s / 60).toFixed(1)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  },
  time: (iso) => (iso ? new Date(iso).toLocaleTimeString("en-GB") : "–"),
  local: (iso) => (iso ? iso.replace("T", " ").slice(0, 16) : "–"),
  pct: (r) => (r === null || r === undefined ? "–" : `${Math.round(r * 100)}%`),
};

async function api(path, options) {
  const response = await fetch(path, { credentials: "same-origin", ...options,
    headers: { "Content-Type": "application/json", ...((options || {}).headers || {}) } });
  if (response.status === 401 || response.status === 403) {
    window.location.assign("/dashboard");
    throw new Error("signed out");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail ? JSON.stringify(body.detail) : response.statusText);
  return body;
}

// --- charts ----------------------------------------------------------------------------------

function lineChart(canvas, series, unit) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width, height = canvas.clientHeight || canvas.height;
  canvas.width = width * ratio; canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const pad = { l: 44, r: 10, t: 10, b: 22 };
  const points = series.flatMap((s) => s.points);
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const now = Date.now() / 1000;
  const x0 = xs.length ? Math.min(...xs) : now - 60, x1 = xs.length ? Math.max(...xs, x0 + 1) : now;
  const y1 = Math.max(1, ...ys) * 1.15;
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - (y / y1) * (height - pad.t - pad.b);
  ctx.font = "11px system-ui, sans-serif"; ctx.fillStyle = "#8a94a6"; ctx.strokeStyle = "#e6e9ef";
  for (let i = 0; i <= 4; i++) {
    const y = (y1 * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad.l, Y(y)); ctx.lineTo(width - pad.r, Y(y)); ctx.stroke();
    ctx.fillText(y >= 10 ? Math.round(y) : y.toFixed(1), 4, Y(y) + 4);
  }
  ctx.fillText(`${Math.round((x1 - x0) / 60 * 10) / 10} min${unit ? " · " + unit : ""}`, pad.l, height - 5);
  series.forEach((s) => {
    if (!s.points.length) return;
    ctx.strokeStyle = s.color; ctx.lineWidth = 2; ctx.setLineDash(s.dashed ? [5, 4] : []);
    ctx.beginPath();
    s.points.forEach(([x, y], i) => (i ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
    ctx.stroke();
  });
  ctx.setLineDash([]);
  canvas.dataset.points = String(points.length);
}

function legend(container, series) {
  container.replaceChildren(...series.map((s) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = s.color;
    return el("span", { class: "legend-item" }, swatch, `${s.label} `, el("b", {}, s.value));
  }));
}

function bars(container, counts, testid) {
  const entries = Object.entries(counts || {}).sort((a, b) => b[1] - a[1]);
  const max = Math.max(1, ...entries.map((e) => e[1]));
  container.replaceChildren(...(entries.length ? entries.map(([label, n]) => {
    const fillBar = el("span", { class: `bar-fill s-${label}` });
    fillBar.style.width = `${(n / max) * 100}%`;
    return el("div", { class: "bar-row" }, el("span", { class: "bar-label" }, label),
      el("span", { class: "bar-track" }, fillBar),
      el("span", { class: "bar-value", "data-testid": testid ? `${testid}-${label}` : null }, fmt.int(n)));
  }) : [el("div", { class: "muted" }, "No requests yet.")]));
}

// --- sections --------------------------------------------------------------------------------

function renderKpis(summary, dead, lag) {
  const s = summary.by_status || {};
  const totalLag = (lag.groups || []).reduce((a, g) => a + g.total_lag, 0);
  const open = Object.values(dead.open_by_class || {}).reduce((a, b) => a + b, 0);
  const invited = summary.latency_seconds?.invited || {};
  const items = [
    ["total", "Requests", fmt.int(summary.total)],
    ["invited", "Invited", fmt.int(s.invited || 0)],
    ["in-flight", "In flight", fmt.int((s.accepted || 0) + (s.routed || 0) + (s.booked || 0))],
    ["escalated", "Escalated", fmt.int(s.escalated || 0)],
    ["deadletters", "Open dead letters", fmt.int(open)],
    ["lag", "Consumer lag", fmt.int(totalLag)],
    ["p95", "p95 to invited", fmt.secs(invited.p95)],
  ];
  document.getElementById("kpis").replaceChildren(...items.map(([id, label, value]) =>
    el("div", { class: `kpi kpi-${id}${id === "deadletters" && open ? " alert" : ""}` },
      el("div", { class: "kpi-value", "data-testid": `kpi-${id}` }, value),
      el("div", { class: "kpi-label" }, label))));
}

function renderFlow(topics, lag) {
  const short = (t) => t.split(".").slice(-2).join(".");
  const flow = topics.topics.map((t, i) => ({
    label: short(t.topic), color: COLORS[i % COLORS.length], value: `${fmt.rate(t.in_per_second)}/s`,
    points: t.series.map((p) => [p.at, p.in_per_second]),
  }));
  lineChart(document.getElementById("flow-chart"), flow, "msg/s");
  legend(document.getElementById("flow-legend"), flow);
  const lagSeries = lag.groups.map((g, i) => ({
    label: g.group, color: COLORS[(i + 3) % COLORS.length], value: fmt.int(g.total_lag),
    points: g.trend.map((p) => [p.at, p.lag]),
  }));
  lineChart(document.getElementById("lag-chart"), lagSeries, "records");
  legend(document.getElementById("lag-legend"), lagSeries);
  fill(document.querySelector("#topics-table tbody"), topics.topics.map((t) => el("tr", {},
    el("td", { class: "mono" }, short(t.topic)),
    el("td", { class: "num", "data-testid": `end-offset-${short(t.topic)}` }, fmt.int(t.end_offset_total)),
    el("td", { class: "num" }, fmt.rate(t.in_per_second)),
    el("td", { class: "num" }, fmt.rate(t.out_per_second)),
    el("td", { class: "partitions mono" }, t.partitions.map((p) => el("span", { title: `partition ${p.partition}` }, p.end_offset))))),
  "No topics.", 5);
  const rows = lag.groups.flatMap((g) => g.partitions.map((p) => el("tr", { class: p.lag ? "warn" : "" },
    el("td", {}, g.group), el("td", { class: "mono" }, short(p.topic)), el("td", { class: "num" }, p.partition),
    el("td", { class: "num" }, fmt.int(p.committed)), el("td", { class: "num" }, fmt.int(p.end_offset)),
    el("td", { class: "num" }, fmt.int(p.lag)))));
  fill(document.querySelector("#lag-table tbody"), rows, "Nothing committed yet.", 6);
}

function renderRequests(summary, recent) {
  bars(document.getElementById("by-status"), summary.by_status, "status");
  bars(document.getElementById("by-region"), summary.by_region, "region");
  bars(document.getElementById("by-language"), summary.by_language, "language");
  fill(document.querySelector("#latency-table tbody"), Object.entries(summary.latency_seconds).map(([stage, l]) =>
    el("tr", {}, el("td", {}, stage), el("td", { class: "num", "data-testid": `latency-count-${stage}` }, fmt.int(l.count)),
      el("td", { class: "num" }, fmt.secs(l.p50)), el("td", { class: "num" }, fmt.secs(l.p95)),
      el("td", { class: "num" }, fmt.secs(l.p99)))), "", 5);
  fill(document.querySelector("#recent-table tbody"), recent.requests.map((r) => el("tr", {
    class: r.request_id === state.selected ? "selected" : "", "data-request": r.request_id,
    onclick: () => selectRequest(r.request_id),
  }, el("td", { class: "mono" }, r.request_id), el("td", {}, el("span", { class: `pill s-${r.status}` }, r.status)),
  el("td", {}, r.center_id || "–"), el("td", {}, r.region), el("td", {}, r.language),
  el("td", { class: "timeline" }, r.timeline.map((e) => el("span", { class: `step s-${e.status}`, title: e.at }, `${e.status} ${fmt.time(e.at)}`))))),
  "No requests yet.", 6);
}

async function selectRequest(id) {
  state.selected = id;
  document.querySelectorAll("#recent-table tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.request === id));
  const box = document.getElementById("request-detail");
  try {
    const d = await api(`/v1/ops/requests/${encodeURIComponent(id)}`);
    const x = d.explanation;
    box.classList.remove("muted");
    box.replaceChildren(
      el("div", { class: "detail-head" }, el("span", { class: "mono" }, d.request_id), " ", el("span", { class: `pill s-${d.status}` }, d.status)),
      el("dl", {},
        el("dt", {}, "Center"), el("dd", {}, d.center_id || "–"),
        el("dt", {}, "Language"), el("dd", {}, x.language || "–"),
        el("dt", {}, "Reasons"), el("dd", { "data-testid": "detail-reasons" }, (x.reasons || []).join(", ") || "–"),
        el("dt", {}, "Meeting"), el("dd", {}, d.meeting ? `${fmt.local(d.meeting.start)} UTC · ${d.meeting.specialist_id}` : "–"),
        x.escalation ? [el("dt", {}, "Escalated"), el("dd", {}, `${x.escalation.stage}: ${(x.escalation.reasons || []).join(", ")}`)] : null,
        x.deadletter ? [el("dt", {}, "Dead-lettered"), el("dd", {}, JSON.stringify(x.deadletter))] : null),
      el("h3", {}, "Rejected centers"),
      (x.rejected || []).length ? el("ul", { "data-testid": "detail-rejected" }, x.rejected.map((r) => el("li", {}, `${r.center_id}: ${r.reason}`))) : el("p", { class: "muted" }, "None."),
      el("h3", {}, "Candidates"),
      (x.candidates || []).length ? el("ul", {}, x.candidates.map((c) => el("li", {}, `${c.center_id} from ${fmt.local(c.earliest_start)} UTC`))) : el("p", { class: "muted" }, "None."),
      el("h3", {}, "Timeline"),
      el("ol", { class: "tl" }, d.timeline.map((e) => el("li", {}, el("span", { class: `pill s-${e.status}` }, e.status), ` ${fmt.local(e.at)} UTC`))));
  } catch (error) {
    box.textContent = `Could not load ${id}: ${error.message}`;
  }
}

function renderCenters(centers, escalations) {
  state.centers = centers.centers;
  fill(document.querySelector("#centers-table tbody"), centers.centers.map((c) => el("tr", {},
    el("td", {}, el("b", {}, c.name), el("div", { class: "muted mono" }, c.center_id)),
    el("td", {}, c.region), el("td", { class: "mono" }, `${c.local_time.slice(11, 16)} ${c.timezone}`),
    el("td", {}, el("span", { class: `pill ${c.open_now ? "open" : "closed"}`, "data-testid": `open-${c.center_id}` }, c.open_now ? "open" : "closed")),
    el("td", { class: "mono" }, fmt.local(c.next_opening_local)),
    el("td", { class: "specialists" }, c.specialists.map((s) => {
      const today = el("span", { class: "util-fill" }); today.style.width = `${Math.min(100, (s.utilisation_today || 0) * 100)}%`;
      const week = el("span", { class: "util-fill week" }); week.style.width = `${Math.min(100, (s.utilisation_week || 0) * 100)}%`;
      return el("div", { class: "util", title: `${s.name}: ${s.meetings_today}/${s.capacity_today} today, ${s.meetings_week}/${s.capacity_week} this week` },
        el("span", { class: "util-name mono" }, s.specialist_id),
        el("span", { class: "util-track" }, today), el("span", { class: "util-num" }, fmt.pct(s.utilisation_today)),
        el("span", { class: "util-track" }, week), el("span", { class: "util-num" }, fmt.pct(s.utilisation_week)));
    })))), "No centers.", 6);
  const select = document.getElementById("heatmap-center");
  if (select.options.length !== centers.centers.length + 1) {
    select.replaceChildren(el("option", { value: "" }, "all centers"),
      ...centers.centers.map((c) => el("option", { value: c.center_id }, c.name)));
    select.value = state.heatCenter || "";
  }
  renderHeatmap();
  fill(document.querySelector("#escalations-table tbody"), escalations.escalations.map((e) =>
    el("tr", {}, el("td", {}, e.stage), el("td", {}, e.reason), el("td", { class: "num" }, fmt.int(e.count)))),
  "No escalations.", 3);
}

function renderHeatmap() {
  const chosen = state.centers.filter((c) => !state.heatCenter || c.center_id === state.heatCenter);
  const grid = Array.from({ length: 7 }, (_, d) => Array.from({ length: 24 }, (_, h) =>
    chosen.reduce((sum, c) => sum + c.heatmap_hours[d][h], 0)));
  const max = Math.max(0, ...grid.flat());
  const days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
  const cells = [el("span", { class: "hm-corner" })];
  for (let h = 0; h < 24; h++) cells.push(el("span", { class: "hm-hour" }, h % 3 ? "" : String(h).padStart(2, "0")));
  grid.forEach((row, d) => {
    cells.push(el("span", { class: "hm-day" }, days[d]));
    row.forEach((v, h) => {
      const cell = el("span", { class: "hm-cell", title: `${days[d]} ${h}:00 local: ${v.toFixed(1)} booked h` });
      if (v > 0) cell.style.background = `rgba(78, 121, 167, ${0.15 + 0.85 * (v / max)})`;
      cells.push(cell);
    });
  });
  document.getElementById("heatmap").replaceChildren(...cells);
}

function renderDeadLetters(summary, letters, audit) {
  const oldest = summary.oldest_open_age_seconds;
  document.getElementById("dl-oldest").textContent = oldest === null ? "No open dead letters."
    : `Oldest open: ${fmt.secs(oldest)} ago (${fmt.local(summary.oldest_open_at)} UTC)`;
  fill(document.querySelector("#dl-classes tbody"), Object.entries(summary.open_by_class).map(([cls, n]) =>
    el("tr", {}, el("td", { class: "mono" }, cls), el("td", { class: "num", "data-testid": `dl-class-${cls}` }, fmt.int(n)),
      el("td", {}, el("button", { class: "small", onclick: () => act(`redrive all ${n} ${cls}`, "/v1/ops/deadletters/redrive", { error_class: cls }) }, "Redrive all")))),
  "Nothing open.", 3);
  fill(document.querySelector("#audit-table tbody"), audit.audit.map((a) => el("tr", {},
    el("td", {}, fmt.time(a.at)), el("td", {}, a.actor), el("td", {}, el("span", { class: `pill a-${a.action}` }, a.action)),
    el("td", { class: "num" }, `#${a.deadletter_id}`), el("td", { class: "detail-cell", title: a.detail || "" }, a.detail || ""))),
  "Nothing redriven or discarded yet.", 5);
  const body = document.querySelector("#dl-table tbody");
  if (body.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return;
  const open = document.getElementById("dl-state").value === "open";
  fill(body, letters.deadletters.flatMap((d) => {
    const shown = state.expanded.has(d.id);
    const row = el("tr", { "data-testid": `dl-row-${d.id}`, class: "dl-row" },
      el("td", { class: "num" }, `#${d.id}`),
      el("td", {}, el("b", { class: "mono" }, d.error_class), el("div", { class: "muted clip", title: d.error_message }, d.error_message)),
      el("td", { class: "mono" }, `${(d.origin_topic || "?").split(".").slice(-2).join(".")} / ${d.origin_partition} / ${d.origin_offset}`),
      el("td", { class: "num" }, d.attempts), el("td", {}, fmt.local(d.at)), el("td", { class: "mono clip" }, d.key || "–"),
      el("td", { class: "actions" },
        el("button", { class: "small ghost", onclick: () => { shown ? state.expanded.delete(d.id) : state.expanded.add(d.id); refresh(); } }, shown ? "Hide" : "Inspect"),
        open ? el("button", { class: "small", "data-testid": `redrive-${d.id}`, onclick: () => act(`redrive #${d.id}`, `/v1/ops/deadletters/${d.id}/redrive`) }, "Redrive") : null,
        open ? el("button", { class: "small danger", "data-testid": `discard-${d.id}`, onclick: () => { state.expanded.add(d.id); refresh(); } }, "Discard…") : null));
    if (!shown) return [row];
    const reason = el("input", { type: "text", placeholder: "why discard it?", "data-testid": `discard-reason-${d.id}` });
    return [row, el("tr", { class: "dl-detail" }, el("td", { colspan: 7 },
      el("div", { class: "dl-grid" },
        el("div", {}, el("h3", {}, "Headers"), el("table", { class: "kv" }, Object.entries(d.headers).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", { class: "mono" }, v))))),
        el("div", {}, el("h3", {}, `Payload (${d.payload_bytes} bytes${d.payload_text === null ? ", base64" : ""})`),
          el("pre", {}, d.payload_text !== null ? pretty(d.payload_text) : d.payload_base64))),
      open ? el("div", { class: "discard" }, reason, el("button", { class: "small danger", "data-testid": `discard-confirm-${d.id}`,
        onclick: () => act(`discard #${d.id}`, `/v1/ops/deadletters/${d.id}/discard`, { reason: reason.value }) }, "Discard with this reason")) : null))];
  }), open ? "No open dead letters." : "None.", 7);
}

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2).slice(0, 20000); } catch { return text.slice(0, 20000); }
}

async function act(what, path, body) {
  try {
    await api(path, { method: "POST", body: body ? JSON.stringify(body) : undefined });
    flash(`Done: ${what}.`, false);
  } catch (error) {
    flash(`Could not ${what}: ${error.message}`, true);
  }
  refresh();
}

function flash(message, bad) {
  const box = document.getElementById("problems");
  box.replaceChildren(el("div", { class: bad ? "problem" : "notice", "data-testid": "flash" }, message));
}

// --- the loop --------------------------------------------------------------------------------

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try { await poll(); } finally { state.busy = false; }
}

async function poll() {
  const dlState = document.getElementById("dl-state").value;
  const calls = {
    topics: "/v1/ops/topics", lag: "/v1/ops/lag", summary: "/v1/ops/requests/summary",
    recent: "/v1/ops/requests/recent?limit=15", centers: "/v1/ops/centers",
    escalations: "/v1/ops/escalations", dlSummary: "/v1/ops/deadletters/summary",
    letters: `/v1/ops/deadletters?state=${dlState}&limit=50`, audit: "/v1/ops/audit?limit=15",
  };
  const names = Object.keys(calls);
  const results = await Promise.allSettled(names.map((n) => api(calls[n])));
  const data = {}, failed = [];
  results.forEach((r, i) => (r.status === "fulfilled" ? (data[names[i]] = r.value) : failed.push(`${names[i]}: ${r.reason.message}`)));
  const draw = (keys, fn) => keys.every((k) => data[k]) && fn(...keys.map((k) => data[k]));
  draw(["summary", "dlSummary", "lag"], renderKpis);
  draw(["topics", "lag"], renderFlow);
  draw(["summary", "recent"], renderRequests);
  draw(["centers", "escalations"], renderCenters);
  draw(["dlSummary", "letters", "audit"], renderDeadLetters);
  document.getElementById("live-dot").className = failed.length ? "dot down" : "dot up";
  document.getElementById("updated").textContent = failed.length
    ? `partial update ${new Date().toLocaleTimeString("en-GB")} (${failed.join("; ")})`
    : `live · updated ${new Date().toLocaleTimeString("en-GB")}`;
  document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("heatmap-center").addEventListener("change", (e) => { state.heatCenter = e.target.value; renderHeatmap(); });
  document.getElementById("dl-state").addEventListener("change", () => { state.expanded.clear(); refresh(); });
  refresh();
  setInterval(refresh, POLL_MS);
});
