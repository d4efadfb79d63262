// Live ops dashboard: plain JS + SVG, fed by server-sent events (/api/events), no libraries, no network
// beyond this gateway. The stats keys are documented at the top of gateway/http/dashboard.py.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const OUTBOX_STATES = ["queued", "sending", "sent", "delivered", "failed", "expired"];
const STATE_NAMES = { queued: "queued 排队", sending: "sending 发送中", sent: "sent 已发", delivered: "delivered 送达",
  failed: "failed 失败", expired: "expired 过期" };
const SCORE_COLORS = ["#f43f5e", "#fb923c", "#facc15", "#4ade80", "#22c55e"];

const $ = (id) => document.getElementById(id);
const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
const fmt = (v, digits = 0) => (num(v) === null ? "—" : v.toLocaleString("en-US", {
  minimumFractionDigits: digits, maximumFractionDigits: digits }));
const pct = (v) => (num(v) === null ? "—" : `${Math.round(v * 100)}%`);

function setText(id, value) {
  const el = $(id);
  if (el && el.textContent !== String(value)) el.textContent = value;
}

function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }

function duration(s) {
  if (num(s) === null) return "—";
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

// --- charts ------------------------------------------------------------------------------------------

function areaChart(svg, series) {
  const w = 640, h = 170, pad = 6;
  const n = Math.max(...series.map((s) => s.values.length), 2);
  const max = Math.max(4, ...series.flatMap((s) => s.values));
  const top = niceCeil(max);
  const x = (i) => pad + (i * (w - 2 * pad)) / (n - 1);
  const y = (v) => h - pad - (v / top) * (h - 2 * pad - 14);
  clear(svg);
  const defs = svgEl("defs", {}, svg);
  for (const s of series) {
    const g = svgEl("linearGradient", { id: `g-${s.key}`, x1: 0, y1: 0, x2: 0, y2: 1 }, defs);
    svgEl("stop", { offset: "0%", "stop-color": s.color, "stop-opacity": 0.45 }, g);
    svgEl("stop", { offset: "100%", "stop-color": s.color, "stop-opacity": 0.02 }, g);
  }
  for (const f of [0.25, 0.5, 0.75, 1]) {
    const gy = y(top * f);
    svgEl("line", { x1: pad, x2: w - pad, y1: gy, y2: gy, stroke: "#23304d", "stroke-width": 1,
      "stroke-dasharray": "3 5", "vector-effect": "non-scaling-stroke" }, svg);
  }
  const label = svgEl("text", { x: pad + 2, y: y(top) - 4, "text-anchor": "start", fill: "#8ea0bf",
    "font-size": 11 }, svg);
  label.textContent = `${fmt(top)}/min`;
  for (const s of series) {
    const pts = s.values.map((v, i) => [x(i), y(v)]);
    const line = smooth(pts);
    svgEl("path", { d: `${line} L ${x(pts.length - 1)} ${h - pad} L ${x(0)} ${h - pad} Z`,
      fill: `url(#g-${s.key})` }, svg);
    svgEl("path", { d: line, fill: "none", stroke: s.color, "stroke-width": 2.2,
      "vector-effect": "non-scaling-stroke", "stroke-linejoin": "round" }, svg);
    const [lx, ly] = pts[pts.length - 1];
    svgEl("circle", { cx: lx, cy: ly, r: 3.5, fill: s.color }, svg);
  }
}

function smooth(pts) {
  // Monotone-ish cubic through the points: a rate chart should not overshoot below zero.
  let d = `M ${pts[0][0]} ${pts[0][1]}`;
  for (let i = 1; i < pts.length; i++) {
    const [x0, y0] = pts[i - 1], [x1, y1] = pts[i];
    const mx = (x0 + x1) / 2;
    d += ` C ${mx} ${y0}, ${mx} ${y1}, ${x1} ${y1}`;
  }
  return d;
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function gauge(svg, value, caption) {
  const cx = 100, cy = 100, r = 78;
  const arc = (from, to) => {
    const a0 = Math.PI * (1 - from), a1 = Math.PI * (1 - to);
    const p0 = [cx + r * Math.cos(a0), cy - r * Math.sin(a0)], p1 = [cx + r * Math.cos(a1), cy - r * Math.sin(a1)];
    return `M ${p0[0]} ${p0[1]} A ${r} ${r} 0 0 1 ${p1[0]} ${p1[1]}`;
  };
  clear(svg);
  svgEl("path", { d: arc(0, 1), fill: "none", stroke: "#1e2a45", "stroke-width": 16, "stroke-linecap": "round" }, svg);
  const v = num(value);
  if (v !== null) {
    const clamped = Math.max(0, Math.min(1, v));
    const color = clamped >= 0.8 ? "#22c55e" : clamped >= 0.6 ? "#facc15" : "#f43f5e";
    if (clamped > 0.001) {
      svgEl("path", { d: arc(0, clamped), fill: "none", stroke: color, "stroke-width": 16,
        "stroke-linecap": "round" }, svg);
    }
  }
  const t = svgEl("text", { x: cx, y: cy - 8, "text-anchor": "middle", fill: "#e5ecf6", "font-size": 30,
    "font-weight": 700 }, svg);
  t.textContent = v === null ? "—" : pct(v);
  const c = svgEl("text", { x: cx, y: cy + 14, "text-anchor": "middle", fill: "#8ea0bf", "font-size": 11 }, svg);
  c.textContent = caption;
}

function bars(container, rows) {
  const max = Math.max(1, ...rows.map((r) => r.value || 0));
  if (container.children.length !== rows.length) {
    clear(container);
    for (const r of rows) {
      const row = document.createElement("div");
      row.className = "bar-row";
      row.innerHTML = `<span class="name"></span><div class="track"><div class="fill ${r.key}"></div></div>` +
        `<span class="num"></span>`;
      row.querySelector(".name").textContent = r.label;
      row.dataset.key = r.key;
      container.appendChild(row);
    }
  }
  rows.forEach((r, i) => {
    const row = container.children[i];
    row.querySelector(".fill").style.width = `${((r.value || 0) / max) * 100}%`;
    row.querySelector(".num").textContent = fmt(r.value);
  });
}

// --- cards -------------------------------------------------------------------------------------------

function renderQueue(q) {
  q = q || {};
  setText("queue-waiting", fmt(q.waiting));
  $("queue-waiting").classList.toggle("busy", !!q.busy);
  $("queue-busy").hidden = !q.busy;
  setText("queue-agents", num(q.agents) === null ? "—" : `${fmt(q.agents_busy)} / ${fmt(q.agents)}`);
  setText("queue-asa", num(q.asa_s) === null ? "—" : `${fmt(q.asa_s, 1)} s`);
  setText("queue-answered", fmt(q.answered));
  setText("queue-abandoned", fmt(q.abandoned));
  gauge($("sl-gauge"), q.service_level, "answered ≤ 20 s");
}

function renderSms(s) {
  s = s || {};
  const inMin = s.in_per_min || [], outMin = s.out_per_min || [];
  setText("sms-in-total", fmt(s.in_total));
  setText("sms-out-total", fmt(s.out_total));
  setText("sms-in-rate", inMin.length ? fmt(inMin[inMin.length - 1]) : "—");
  setText("sms-out-rate", outMin.length ? fmt(outMin[outMin.length - 1]) : "—");
  areaChart($("sms-chart"), [
    { key: "out", color: "#34d399", values: outMin.length ? outMin : [0, 0] },
    { key: "in", color: "#38bdf8", values: inMin.length ? inMin : [0, 0] },
  ]);
}

function renderOutbox(o) {
  o = o || {};
  bars($("outbox-bars"), OUTBOX_STATES.map((k) => ({ key: k, label: STATE_NAMES[k], value: o[k] })));
  setText("outbox-age", duration(o.oldest_queued_age_s));
}

function renderBusy(b) {
  b = b || {};
  const reasons = b.by_reason || {};
  setText("busy-sent", fmt(b.sent));
  setText("busy-diverted", fmt(b.diverted));
  setText("busy-over", fmt(reasons.over_threshold));
  setText("busy-abandon", fmt(reasons.abandon));
  const total = (reasons.over_threshold || 0) + (reasons.abandon || 0);
  const segs = $("busy-split").children;
  segs[0].style.width = total ? `${(100 * (reasons.over_threshold || 0)) / total}%` : "0";
  segs[1].style.width = total ? `${(100 * (reasons.abandon || 0)) / total}%` : "0";
}

function renderSurvey(s) {
  s = s || {};
  gauge($("sat-gauge"), s.satisfaction, "4–5 分占比");
  setText("survey-mean", num(s.mean) === null ? "—" : fmt(s.mean, 2));
  setText("survey-responses", fmt(s.responses));
  const h = s.histogram || {};
  const counts = [1, 2, 3, 4, 5].map((k) => h[String(k)] || 0);
  const max = Math.max(1, ...counts);
  const box = $("survey-histo");
  if (!box.children.length) {
    for (let k = 1; k <= 5; k++) {
      const col = document.createElement("div");
      col.className = "col";
      col.innerHTML = `<span class="n"></span><div class="colbar"></div><span class="cap">${k}★</span>`;
      col.querySelector(".colbar").style.background = SCORE_COLORS[k - 1];
      box.appendChild(col);
    }
  }
  counts.forEach((c, i) => {
    const col = box.children[i];
    col.querySelector(".colbar").style.height = `${Math.max(3, (c / max) * 56)}px`;
    col.querySelector(".n").textContent = fmt(c);
  });
}

function renderCampaigns(list) {
  const box = $("campaigns");
  if (!Array.isArray(list) || !list.length) return;
  clear(box);
  // Campaigns with traffic first: that is what ops watch; idle ones fill the rest.
  const activity = (c) => (c.sent || 0) + (c.queued || 0) + (c.targeted || 0) + (c.excluded_total || 0);
  const ranked = [...list].sort((a, b) => activity(b) - activity(a) || String(a.id).localeCompare(String(b.id)));
  for (const c of ranked.slice(0, 6)) {
    const el = document.createElement("div");
    el.className = "camp";
    el.innerHTML = `<div class="camp-head"><div><span class="camp-name"></span><span class="camp-id"></span></div>` +
      `<span class="state"></span></div><div class="progress"><div class="p-delivered"></div><div class="p-sent"></div>` +
      `<div class="p-queued"></div><div class="p-failed"></div></div><div class="camp-nums"></div><div class="chips"></div>`;
    el.querySelector(".camp-name").textContent = c.name || c.id;
    el.querySelector(".camp-id").textContent = c.name && c.name !== c.id ? c.id : "";
    const state = el.querySelector(".state");
    state.textContent = c.state || "—";
    state.classList.add(c.state || "none");
    const delivered = c.delivered || 0, failed = c.failed || 0, queued = c.queued || 0;
    const sentOnly = Math.max(0, (c.sent || 0) - delivered - failed);
    const whole = Math.max(1, c.targeted || 0, delivered + sentOnly + queued + failed);
    const parts = el.querySelector(".progress").children;
    [delivered, sentOnly, queued, failed].forEach((v, i) => { parts[i].style.width = `${(100 * v) / whole}%`; });
    const nums = el.querySelector(".camp-nums");
    for (const [label, v] of [["targeted 目标", c.targeted], ["sent 已发", c.sent], ["delivered 送达", delivered],
      ["queued 排队", queued], ["excluded 排除", c.excluded_total]]) {
      const span = document.createElement("span");
      span.textContent = `${label} `;
      const b = document.createElement("b");
      b.textContent = fmt(v);
      span.appendChild(b);
      nums.appendChild(span);
    }
    const chips = el.querySelector(".chips");
    for (const [reason, n] of Object.entries(c.excluded || {}).sort((a, b) => b[1] - a[1]).slice(0, 6)) {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = `${reason} ${fmt(n)}`;
      chips.appendChild(chip);
    }
    box.appendChild(el);
  }
}

function renderOutbound(runs) {
  const box = $("outbound");
  const list = Object.values(runs || {});
  clear(box);
  if (!list.length) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = "no project is dialling 暂无外呼";
    box.appendChild(p);
    return;
  }
  for (const r of list.slice(0, 6)) {
    const el = document.createElement("div");
    el.className = "camp";
    el.innerHTML = `<div class="camp-head"><div><span class="camp-name"></span></div><span class="state"></span></div>` +
      `<div class="camp-nums"></div><div class="chips"></div>`;
    el.querySelector(".camp-name").textContent = r.project;
    const state = el.querySelector(".state");
    state.textContent = r.stage === "trial" ? "trial 试呼" : "rollout 推广";
    state.classList.add("active");
    const pct = (v) => (v === null || v === undefined ? "—" : `${(100 * v).toFixed(1)}%`);
    const nums = el.querySelector(".camp-nums");
    for (const [label, v] of [["dialled 呼出", fmt(r.dialled)], ["answered 接通", fmt(r.answered)],
      ["live 通话中", fmt(r.live_calls)], ["abandoned 放弃", pct(r.abandon_rate)], ["occupancy 占用", pct(r.occupancy)]]) {
      const span = document.createElement("span");
      span.textContent = `${label} `;
      const b = document.createElement("b");
      b.textContent = v;
      span.appendChild(b);
      nums.appendChild(span);
    }
    const chips = el.querySelector(".chips");
    if (r.waiting_until) {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = `next call 下次呼出 ${r.waiting_until.slice(0, 16).replace("T", " ")}`;
      chips.appendChild(chip);
    }
    for (const [outcome, n] of Object.entries(r.outcomes || {}).sort((a, b) => b[1] - a[1])) {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = `${outcome} ${fmt(n)}`;
      chips.appendChild(chip);
    }
    for (const b of (r.over_time || []).slice(-8)) {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = `${new Date(b.t * 1000).toLocaleTimeString("zh-CN", { hour12: false }).slice(0, 5)} ` +
        `abandon ${pct(b.abandon_rate)} occ ${pct(b.occupancy)}`;
      chips.appendChild(chip);
    }
    box.appendChild(el);
  }
}

const interval = (ci) => (Array.isArray(ci) ? ` (${pct(ci[0])}–${pct(ci[1])})` : "");
const signed = (v) => (num(v) === null ? "—" : `${v >= 0 ? "+" : ""}${(v * 100).toFixed(1)} pt`);

function renderProducts(p) {
  if (!p || !Array.isArray(p.items) || !p.items.length) return;
  const arms = $("product-arms");
  clear(arms);
  for (const [arm, label] of [["learned", "learned shelf 学习排序"], ["fixed", "fixed holdout 固定排序"]]) {
    const a = (p.arms || {})[arm];
    const el = document.createElement("div");
    el.className = "arm";
    el.textContent = a ? `${label}: ${pct(a.conversion)}${interval(a.conversion_ci)} of ${fmt(a.exposures)} shown, ` +
      `¥${fmt(a.revenue, 2)}` : `${label}: —`;
    arms.appendChild(el);
  }
  const body = $("products");
  clear(body);
  for (const r of p.items) {
    const tr = document.createElement("tr");
    const cells = [`${r.product} ${r.name}`, fmt(r.exposures), `${pct(r.conversion)}${interval(r.conversion_ci)}`,
      signed(r.conversion_change), pct(r.confirmation_rate), pct(r.retention_7d), pct(r.complaint_rate),
      `¥${fmt(r.revenue, 2)}`];
    for (const v of cells) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

function renderBinds(b) {
  b = b || {};
  const up = b.upstream || {};
  const state = up.configured === false ? "off" : up.state || "off";
  const detail = $("upstream-detail");
  detail.className = `up-state ${state}`;
  detail.textContent = `${state}${up.peer ? ` · ${up.peer}` : ""}`;
  setText("upstream-state", state);
  const pill = $("upstream-pill");
  pill.classList.toggle("ok", state === "bound");
  pill.classList.toggle("bad", state === "down");
  const rows = Array.isArray(b.esme) ? b.esme : [];
  if (!rows.length) return;
  const body = $("esme-binds");
  clear(body);
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const v of [r.account, r.bind_type, fmt(r.count)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

function render(stats) {
  renderQueue(stats.queue);
  renderSms(stats.sms);
  renderOutbox(stats.outbox);
  renderBusy(stats.busy_hour);
  renderSurvey(stats.survey);
  renderCampaigns(stats.campaigns);
  renderOutbound(stats.outbound);
  renderProducts(stats.products);
  renderBinds(stats.binds);
  setText("fixtures-version", stats.fixtures_version ?? "—");
  setText("updated", `updated ${new Date().toLocaleTimeString("zh-CN", { hour12: false })}`);
}

function connect() {
  const conn = $("conn");
  const source = new EventSource("/api/events");
  source.addEventListener("stats", (ev) => {
    conn.className = "pill live";
    setText("conn-state", "live 实时");
    render(JSON.parse(ev.data));
  });
  source.onerror = () => {
    conn.className = "pill down";
    setText("conn-state", "reconnecting 重连中");
  };
}

document.addEventListener("DOMContentLoaded", () => {
  fetch("/api/stats").then((r) => r.json()).then(render).catch(() => {});
  connect();
});
