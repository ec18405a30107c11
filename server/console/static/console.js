// dtx console: reads the coordinator's admin API every second and draws it.
// Every value from the server is put in the page as text (textContent),
// never as markup: transaction ids come from clients.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "dtx-admin-token";
const SVG = "http://www.w3.org/2000/svg";
const history = []; // {t, committed, rolledBack} of the last samples
let last = null;
let paused = false;

function el(tag, attrs, ...kids) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v;
    else if (k === "on") for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

// api calls the admin API with the bearer token, if one was entered (a
// client certificate, if any, is presented by the browser on its own).
async function api(method, path) {
  const headers = {};
  const tok = sessionStorage.getItem(TOKEN_KEY);
  if (tok) headers["Authorization"] = "Bearer " + tok;
  const r = await fetch(path, { method, headers, credentials: "same-origin", cache: "no-store" });
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: r.statusText }; }
  if (r.status === 401 || r.status === 403) {
    showLogin(body.error || r.statusText);
    throw new Error("not authorized: " + (body.error || r.status));
  }
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}

function showLogin(msg) {
  $("login").hidden = false;
  $("login-error").textContent = msg || "";
  setConn("not authorized", "bad");
}

function setConn(text, cls) {
  const c = $("conn");
  c.textContent = text;
  c.className = "pill " + (cls || "");
}

function toast(msg) {
  const t = $("toast");
  t.textContent = msg;
  t.classList.add("show");
  setTimeout(() => t.classList.remove("show"), 3500);
}

function ms(v) {
  if (v == null) return "–";
  if (v >= 10000) return (v / 1000).toFixed(0) + " s";
  if (v >= 1000) return (v / 1000).toFixed(1) + " s";
  if (v >= 10) return v.toFixed(0) + " ms";
  return v.toFixed(1) + " ms";
}

// confirmAction asks before an action that changes something.
function confirmAction(title, text) {
  return new Promise((resolve) => {
    const d = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    d.returnValue = "cancel";
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.showModal();
  });
}

async function retry(id) {
  const ok = await confirmAction("Resend now?",
    "Resend what transaction " + id + " waits for (PREPARE to participants that have not voted, COMMIT to those that have not acknowledged) now, instead of waiting for the next timer.");
  if (!ok) return;
  try {
    const r = await api("POST", "/v1/admin/transactions/" + encodeURIComponent(id) + "/retry");
    toast("resent " + id + " to " + (r.sent.join(", ") || "nobody"));
  } catch (e) { toast("retry " + id + ": " + e.message); }
}

function renderOverview(o) {
  $("epoch").textContent = "epoch " + o.epoch + (o.draining ? " · draining" : "") + " · " + o.participants.join(", ");
  $("inflight").textContent = o.in_flight;
  const now = { t: o.unix_ms, committed: o.committed, rolledBack: o.rolled_back };
  if (last && now.t > last.t) {
    const dt = (now.t - last.t) / 1000;
    const c = Math.max(0, (now.committed - last.committed) / dt), a = Math.max(0, (now.rolledBack - last.rolledBack) / dt);
    history.push({ c, a });
    if (history.length > 60) history.shift();
    $("tps-commit").textContent = c.toFixed(0);
    $("tps-abort").textContent = a.toFixed(0);
  }
  last = now;
  $("totals").textContent = o.committed + " committed, " + o.rolled_back + " rolled back, " +
    o.deadlock_restarts + " deadlock restarts, " + o.commit_retries + " commit resends" +
    (o.heuristic_mismatches ? ", " + o.heuristic_mismatches + " HEURISTIC MISMATCHES" : "");
  drawSpark();
  const lt = $("latency").tBodies[0];
  lt.replaceChildren();
  for (const k of ["prepare", "commit", "submit"]) {
    const l = o.latency[k];
    if (!l) continue;
    lt.append(el("tr", {}, el("th", { text: k }), el("td", { class: "num", text: l.count }),
      el("td", { class: "num", text: ms(l.p50_ms) }), el("td", { class: "num", text: ms(l.p90_ms) }), el("td", { class: "num", text: ms(l.p99_ms) })));
  }
  const rt = $("reasons").tBodies[0];
  rt.replaceChildren();
  const reasons = Object.entries(o.reasons).sort((a, b) => b[1] - a[1]);
  if (!reasons.length) rt.append(el("tr", { class: "empty" }, el("td", { colspan: 2, text: "none" })));
  for (const [r, n] of reasons) rt.append(el("tr", {}, el("td", { text: r || "other" }), el("td", { class: "num", text: n })));
}

function drawSpark() {
  const s = $("spark");
  s.replaceChildren();
  if (history.length < 2) return;
  const top = Math.max(1, ...history.map((h) => h.c + h.a));
  const line = (f, cls) => {
    const pts = history.map((h, i) => (i * 300 / 59).toFixed(1) + "," + (58 - f(h) / top * 54).toFixed(1)).join(" ");
    s.append(el("svg:polyline", { points: pts, fill: "none", stroke: cls, "stroke-width": 2 }));
  };
  line((h) => h.c, "#1a7f37");
  line((h) => h.a, "#cf222e");
}

function tags(list, cls) {
  const td = el("td");
  for (const n of list) td.append(el("span", { class: "tag " + (cls || ""), text: n }));
  return td;
}

function txActions(id) {
  return el("td", {},
    el("button", { class: "link", type: "button", text: "timeline", on: { click: () => openTimeline(id) } }),
    el("button", { class: "link", type: "button", text: "retry now", on: { click: () => retry(id) } }));
}

function renderTxs(d) {
  const tb = $("txs").tBodies[0], ib = $("indoubt").tBodies[0];
  tb.replaceChildren();
  ib.replaceChildren();
  $("inflight-note").textContent = "(" + d.in_flight + (d.truncated ? ", oldest " + d.transactions.length + " shown" : "") + ")";
  for (const t of d.transactions) {
    const votes = el("td");
    for (const n of t.nodes) {
      const s = t.phase === "COMMITTING" ? (n.acked ? "ACK" : "…") : (n.vote || "…");
      const cls = s === "YES" || s === "ACK" ? "yes" : s === "…" ? "wait" : "no";
      votes.append(el("span", { class: "tag " + cls, text: n.node + " " + s }));
    }
    tb.append(el("tr", { "data-tx": t.id }, el("td", { text: t.id }), el("td", { text: t.phase }), el("td", { class: "num", text: t.attempt }),
      el("td", { class: "num", text: ms(t.age_ms) }), votes, tags(t.waiting, "wait"), txActions(t.id)));
    if (t.in_doubt.length) {
      ib.append(el("tr", { "data-tx": t.id }, el("td", { text: t.id }), el("td", { text: t.phase }), el("td", { class: "num", text: ms(t.age_ms) }),
        tags(t.in_doubt, "yes"), tags(t.waiting, "wait"), txActions(t.id)));
    }
  }
  if (!tb.rows.length) tb.append(el("tr", { class: "empty" }, el("td", { colspan: 7, text: "nothing in flight" })));
  if (!ib.rows.length) ib.append(el("tr", { class: "empty" }, el("td", { colspan: 6, text: "nothing in doubt" })));
}

function renderGraph(w) {
  const g = $("graph");
  g.replaceChildren();
  $("policy").textContent = "(deadlock policy: " + w.policy + ")";
  const cyc = new Set();
  for (const c of w.cycles) for (let i = 0; i + 1 < c.length; i++) cyc.add(c[i] + "\u0000" + c[i + 1]);
  const txs = [...new Set(w.edges.flatMap((e) => [e.waiter, e.holder]))].sort();
  $("graph-note").textContent = w.edges.length ? w.edges.length + " edges, " + w.cycles.length + " cycles (red) being broken" : "no transaction waits for another";
  if (!txs.length) return;
  g.append(el("svg:defs", {}, el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" },
    el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#57606a" }))));
  const pos = {};
  const R = txs.length === 1 ? 0 : 115;
  txs.forEach((t, i) => {
    const a = 2 * Math.PI * i / txs.length - Math.PI / 2;
    pos[t] = [200 + R * Math.cos(a), 150 + R * Math.sin(a)];
  });
  for (const e of w.edges) {
    const [x1, y1] = pos[e.waiter], [x2, y2] = pos[e.holder];
    const len = Math.hypot(x2 - x1, y2 - y1) || 1, r = 14;
    const red = cyc.has(e.waiter + "\u0000" + e.holder);
    g.append(el("svg:line", { x1: x1 + (x2 - x1) * r / len, y1: y1 + (y2 - y1) * r / len, x2: x2 - (x2 - x1) * r / len, y2: y2 - (y2 - y1) * r / len,
      stroke: red ? "#cf222e" : "#57606a", "stroke-width": red ? 2.5 : 1.5, "marker-end": "url(#arrow)" },
      el("svg:title", { text: e.waiter + " waits for " + e.holder + " at " + e.node + " (" + ms(e.age_ms) + ")" })));
  }
  for (const t of txs) {
    const [x, y] = pos[t];
    g.append(el("svg:g", { class: "node", "data-tx": t, on: { click: () => openTimeline(t) } },
      el("svg:circle", { cx: x, cy: y, r: 14, fill: "#ddf4ff", stroke: "#0969da" }),
      el("svg:text", { x: x, y: y + 28, "text-anchor": "middle", text: t.length > 18 ? t.slice(0, 17) + "…" : t })));
  }
}

async function openTimeline(id) {
  $("tl-id").value = id;
  const box = $("timeline");
  box.replaceChildren(el("p", { class: "muted", text: "loading " + id + "…" }));
  try {
    const d = await api("GET", "/v1/admin/transactions/" + encodeURIComponent(id) + "/timeline");
    const tb = el("tbody");
    for (const e of d.entries) {
      const cls = e.type === "HEURISTIC_MISMATCH" ? "mismatch" : e.type.startsWith("HEURISTIC") ? "heur" : "";
      tb.append(el("tr", { class: cls }, el("td", { class: "c-" + e.component, text: e.component }),
        el("td", { class: "num", text: "#" + e.seq }), el("td", { text: e.text })));
    }
    if (!d.entries.length) tb.append(el("tr", { class: "empty" }, el("td", { colspan: 3, text: "no records about this id in any log" })));
    const errs = Object.entries(d.errors || {}).map(([k, v]) => k + ": " + v).join("; ");
    box.replaceChildren(el("p", {}, el("strong", { text: d.id }), " · " + d.status + (d.truncated ? " · truncated" : "")),
      errs ? el("p", { class: "error", text: "not read: " + errs }) : null,
      el("table", { id: "timeline-table" }, el("thead", {}, el("tr", {}, el("th", { text: "component" }), el("th", { text: "seq" }), el("th", { text: "record" }))), tb),
      el("p", { class: "muted", text: "Logs share no clock: records are merged by attempt and protocol step, each log's own order kept." }));
  } catch (e) {
    box.replaceChildren(el("p", { class: "error", text: e.message }));
  }
}

async function poll() {
  if (!paused) {
    try {
      const [o, t, w] = await Promise.all([api("GET", "/v1/admin/overview"), api("GET", "/v1/admin/transactions?limit=200"), api("GET", "/v1/admin/waits")]);
      renderOverview(o);
      renderTxs(t);
      renderGraph(w);
      $("login").hidden = true;
      setConn("live", "ok");
    } catch (e) {
      if (!$("login").hidden) paused = true; // wait for credentials
      else setConn(e.message, "bad");
    }
  }
  setTimeout(poll, 1000);
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const v = $("token").value.trim();
  if (v) sessionStorage.setItem(TOKEN_KEY, v);
  $("token").value = "";
  $("login").hidden = true;
  paused = false;
});
$("token-clear").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); toast("token forgotten"); });
$("token-btn").addEventListener("click", () => { $("login").hidden = !$("login").hidden; });
$("tl-form").addEventListener("submit", (ev) => { ev.preventDefault(); openTimeline($("tl-id").value.trim()); });
poll();
