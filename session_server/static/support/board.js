// The support board: every session whose room is open or opens within the hour, the problem reports as a
// queue with their response clock, and today's figures. Pushed over one WebSocket (docs/support.md); the
// agent's steps on a ticket go over HTTP. Shows ids, pseudonyms, times, states and network figures only.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const I18N = window.SUPPORT_I18N;
  const storeKey = "support";

  // --- the token: read once from the fragment, then kept off the address bar -----------------------
  let token = null;
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    token = fragment.get("token");
    sessionStorage.setItem(storeKey + ":token", token);
    history.replaceState(null, "", location.pathname + location.search);
  } else {
    token = sessionStorage.getItem(storeKey + ":token");
  }

  // --- language ------------------------------------------------------------------------------------
  const query = new URLSearchParams(location.search);
  let lang = query.get("lang") || localStorage.getItem("support:lang") || (navigator.language || "ar").slice(0, 2);
  if (!I18N[lang]) lang = "ar";

  function t(key, vars) {
    const text = (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key;
    return text.replace(/\{(\w+)\}/g, (_, k) => (vars && vars[k] != null ? vars[k] : ""));
  }
  const locale = () => (lang === "ar" ? "ar-DZ" : lang === "fr" ? "fr-FR" : "en-GB");
  const clockTime = (ms) => new Intl.DateTimeFormat(locale(), { hour: "2-digit", minute: "2-digit" }).format(new Date(ms));
  const number = (n, digits) => new Intl.NumberFormat(locale(), { maximumFractionDigits: digits || 0 }).format(n);
  const percent = (share) => new Intl.NumberFormat(locale(), { style: "percent", maximumFractionDigits: 0 }).format(share);

  function applyLanguage() {
    document.documentElement.lang = lang;
    document.documentElement.dir = I18N[lang].dir;
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    $("lang").value = lang;
    renderConn();
    render();
  }
  $("lang").addEventListener("change", (e) => {
    lang = e.target.value;
    PAGE.rememberLanguage("support", lang);
    applyLanguage();
  });

  let connState = "connecting";
  function renderConn() {
    $("conn").dataset.state = connState;
    $("conn").textContent = connState === "closed" ? "" : t("conn_" + connState);
  }

  // --- state ---------------------------------------------------------------------------------------
  const sessions = new Map(); // booking id -> session (with its series)
  const tickets = new Map();
  let figures = null;
  let answerWithinS = 300;
  let causes = [];
  let skew = 0; // server time minus ours
  let filter = "trouble";
  const now = () => Date.now() + skew;
  const TROUBLE = new Set(["media_down", "interrupted", "reconnecting"]);
  const WINDOW_MS = 10 * 60 * 1000;

  function takeSession(s) {
    const known = sessions.get(s.booking_id);
    if (s.series) {
      sessions.set(s.booking_id, s);
      return;
    }
    const series = known ? known.series : { "client.up": [], "client.down": [], "practitioner.up": [], "practitioner.down": [] };
    for (const [key, points] of Object.entries(s.points || {})) {
      series[key] = (series[key] || []).concat(points);
    }
    const cutoff = now() - WINDOW_MS;
    for (const key of Object.keys(series)) series[key] = series[key].filter((p) => p[0] >= cutoff);
    delete s.points;
    s.series = series;
    sessions.set(s.booking_id, s);
  }

  // --- rendering -----------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null) continue;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "href" || k === "type") node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) if (c) node.append(c);
    return node;
  }

  const toneOfState = { media_down: "bad", interrupted: "bad", reconnecting: "warn", waiting_for_practitioner: "warn",
    waiting_for_client: "warn", waiting_for_both: "warn", in_session: "ok", upcoming: "", ended: "" };
  const toneOfQuality = { excellent: "ok", good: "ok", poor: "warn", lost: "bad" };

  function duration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return t("seconds", { n: number(s) });
    const m = Math.floor(s / 60);
    return t("minutes_short", { n: number(m) }) + " " + t("seconds", { n: number(s % 60) });
  }

  function chart(series, field, scale, label) {
    const w = 160, h = 34;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const end = now(), start = end - WINDOW_MS;
    const all = [...series.up, ...series.down].map((p) => p[field] * scale);
    const top = Math.max(1, ...all);
    let last = null;
    for (const [dir, points] of [["up", series.up], ["down", series.down]]) {
      if (!points.length) continue;
      const d = points.map((p, i) => {
        const x = ((p[0] - start) / WINDOW_MS) * w;
        const y = h - 2 - ((p[field] * scale) / top) * (h - 4);
        return (i ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
      }).join(" ");
      const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
      path.setAttribute("d", d);
      path.setAttribute("class", dir);
      svg.append(path);
      last = last == null ? points[points.length - 1][field] * scale : last;
    }
    svg.setAttribute("aria-label", label + (last == null ? "" : ": " + number(last, 1)));
    const caption = el("div", { className: "chart-label" }, el("span", { text: label }),
      el("span", { text: last == null ? t("none") : number(last, 1) }));
    return el("div", {}, caption, svg);
  }

  function party(s, who) {
    const p = s.parties[who];
    const lines = [];
    lines.push(el("p", {}, el("span", { className: "badge", "data-tone": p.present ? "ok" : "warn",
      text: p.present ? t("present") : (p.left_at ? t("left_at", { time: clockTime(p.left_at) }) : t("absent")) })));
    const bits = [];
    if (p.media) bits.push(el("span", { className: "badge", "data-tone": p.media === "connected" ? "ok" : (p.media === "reconnecting" || p.media === "connecting" ? "warn" : "bad"), text: t("media_" + p.media) }));
    if (p.quality) bits.push(el("span", { className: "badge", "data-tone": toneOfQuality[p.quality] || "", text: t("quality_" + p.quality) }));
    if (bits.length) lines.push(el("p", {}, ...bits.flatMap((b, i) => (i ? [" ", b] : [b]))));
    return el("div", { className: "party", "data-party": who }, el("h3", { text: t(who) }), ...lines, charts(s, who));
  }

  function charts(s, who) {
    const series = { up: s.series[who + ".up"] || [], down: s.series[who + ".down"] || [] };
    return el("div", { className: "charts" },
      chart(series, 1, 1, t("rtt")), chart(series, 2, 100, t("loss")), chart(series, 3, 1 / 1000, t("bitrate")));
  }

  // both parties came before the hour: they are here, the session is not running yet
  const stateKey = (s) => (s.state === "in_session" && now() < s.starts_at ? "state_both_here_early" : "state_" + s.state);

  function cardTimes(s) {
    const times = [];
    times.push(t("scheduled", { start: clockTime(s.starts_at), end: clockTime(s.ends_at) }));
    if (s.state === "upcoming") times.push(t("opens_at", { time: clockTime(s.opens_at) }));
    // both came early: they are here, the session itself starts at its hour
    if (s.started_at) times.push(t(s.started_at < s.starts_at ? "both_here" : "started", { time: clockTime(s.started_at) }));
    if (s.state !== "upcoming" && s.state !== "ended") {
      if (now() < s.starts_at) {
        // the room is open and the hour not come: how long until it starts, not "0 min gone"
        times.push(t("starts_in", { n: number(Math.ceil((s.starts_at - now()) / 60000)) }));
      } else {
        const n = Math.max(0, Math.floor((Math.min(now(), s.ends_at) - s.starts_at) / 60000));
        const m = Math.max(0, Math.floor((s.ends_at - now()) / 60000));
        times.push(t("elapsed", { n: number(n), m: number(m) }));
      }
    }
    return times.join(" · ");
  }

  function card(s) {
    const trouble = TROUBLE.has(s.state) || s.open_tickets > 0;
    const foot = [];
    if (s.open_tickets) foot.push(el("span", { className: "badge", "data-tone": "bad", text: t("tickets_open", { n: number(s.open_tickets) }) }));
    if (s.support_present) foot.push(el("span", { className: "badge", text: t("support_here", { n: number(s.support_present) }) }));
    if (s.state !== "ended" && s.state !== "upcoming") {
      foot.push(el("a", { href: `/room/${encodeURIComponent(s.booking_id)}?lang=${lang}#token=${encodeURIComponent(token)}`,
        target: "_blank", rel: "noopener", text: t("open_room") }));
    }
    return el("li", { className: "card", "data-booking": s.booking_id, "data-state": s.state, "data-trouble": String(trouble) },
      el("header", {}, el("span", { className: "who" }, ids(s.client, s.practitioner_id)),
        el("span", { className: "badge", "data-tone": toneOfState[s.state] || "", "data-role": "state", text: t(stateKey(s)) })),
      el("p", { className: "times", text: cardTimes(s) }),
      el("div", { className: "parties" }, party(s, "client"), party(s, "practitioner")),
      el("p", { className: "legend" }, t("legend")),
      el("footer", {}, ...foot));
  }

  function visible(s) {
    if (filter === "all") return true;
    if (filter === "live") return s.state !== "upcoming" && s.state !== "ended";
    return s.state !== "ended" || s.open_tickets > 0;
  }

  function rankCompare(a, b) {
    for (let i = 0; i < a.rank.length; i++) if (a.rank[i] !== b.rank[i]) return a.rank[i] - b.rank[i];
    return 0;
  }

  // Keeps a list's items in order, rebuilding only those whose data changed, so that a button or a link a
  // person is about to press is never swapped under their pointer.
  function reconcile(list, items, keyOf, versionOf, build, refresh) {
    const existing = new Map([...list.children].map((n) => [n.dataset.key, n]));
    let prev = null;
    for (const item of items) {
      const key = keyOf(item);
      const version = versionOf(item);
      let node = existing.get(key);
      existing.delete(key);
      if (!node || node.dataset.version !== version) {
        const fresh = build(item);
        fresh.dataset.key = key;
        fresh.dataset.version = version;
        if (node) node.replaceWith(fresh);
        node = fresh;
      } else if (refresh) {
        refresh(node, item);
      }
      const want = prev ? prev.nextSibling : list.firstChild;
      if (want !== node) list.insertBefore(node, want);
      prev = node;
    }
    for (const n of existing.values()) n.remove();
  }

  function cardVersion(s) {
    const { series, ...rest } = s;
    return lang + JSON.stringify(rest) + cardTimes(s);
  }

  function refreshCharts(node, s) {
    for (const who of ["client", "practitioner"]) {
      const box = node.querySelector(`[data-party="${who}"] .charts`);
      if (box) box.replaceWith(charts(s, who));
    }
  }

  function renderSessions() {
    const list = [...sessions.values()].filter(visible);
    list.sort(filter === "all" ? (a, b) => a.starts_at - b.starts_at : rankCompare);
    reconcile($("sessions"), list, (s) => s.booking_id, cardVersion, card, refreshCharts);
    $("no-sessions").hidden = list.length > 0;
  }

  function ticketItem(tk) {
    const overdue = tk.status === "open" && now() - tk.opened_at > answerWithinS * 1000;
    const done = tk.closed_at != null;
    const age = duration((done ? tk.closed_at : now()) - tk.opened_at);
    const s = sessions.get(tk.booking_id);
    const actions = [];
    if (tk.status === "open") actions.push(el("button", { type: "button", text: t("acknowledge"), onclick: () => step(tk, "acknowledge") }));
    if (tk.status === "open" || tk.status === "acknowledged") {
      actions.push(el("button", { type: "button", text: t("resolve"), onclick: () => step(tk, "resolve") }));
      actions.push(el("button", { type: "button", className: "danger", text: t("unresolvable"),
        onclick: () => { if (confirm(t("confirm_unresolvable"))) step(tk, "unresolvable"); } }));
    }
    actions.push(el("button", { type: "button", text: t("add_note"), onclick: () => openNote(tk) }));
    return el("li", { className: "ticket", "data-ticket": tk.id, "data-status": tk.status, "data-overdue": String(overdue) },
      el("div", {}, el("span", { className: "age", "data-role": "age", text: t(ageKey(tk), { age }) }), " · ",
        el("span", { className: "badge", "data-role": "status", text: t("status_" + tk.status) })),
      el("p", {}, t("reported_by", { role: t("role_" + tk.reporter_role), kind: t("kind_" + tk.kind) }) + " — ",
        s ? ids(s.client, s.practitioner_id) : ids(tk.booking_id)),
      el("div", { className: "actions" }, ...actions));
  }

  // a ticket's clock: its age while open, how long it took once answered, or when its reporter left unanswered
  function ageKey(tk) {
    if (tk.closed_at == null) return "age";
    return tk.status === "abandoned" ? "closed_after" : "took";
  }

  // ids set apart from the sentence around them (an Arabic one too); the client's pseudonym is kept whole on
  // one line (a practitioner's id, of any length, may still wrap rather than push the card wider)
  function ids(first, practitionerId) {
    const out = el("bdi", { className: "ids" }, el("span", { className: "pseudonym", text: first }));
    if (practitionerId != null) out.append(" · ", practitionerId);
    return out;
  }

  function renderTickets() {
    const order = { open: 0, acknowledged: 1, resolved: 2, unresolvable: 2, abandoned: 2 };
    const list = [...tickets.values()].sort((a, b) => (order[a.status] - order[b.status]) || (a.opened_at - b.opened_at));
    reconcile($("tickets"), list, (tk) => tk.id, (tk) => lang + JSON.stringify(tk), ticketItem, tickAge);
    $("no-tickets").hidden = list.length > 0;
  }

  // the clock of a ticket, moved in place every second
  function tickAge(node, tk) {
    const done = tk.closed_at != null;
    node.querySelector('[data-role="age"]').textContent =
      t(ageKey(tk), { age: duration((done ? tk.closed_at : now()) - tk.opened_at) });
    node.dataset.overdue = String(tk.status === "open" && now() - tk.opened_at > answerWithinS * 1000);
  }

  function renderFigures() {
    const f = figures || {};
    const secs = (v) => (v == null ? t("none") : duration(v * 1000));
    const rows = [
      [t("fig_tickets"), number(f.tickets || 0)],
      [t("fig_in_time", { minutes: number(Math.round(answerWithinS / 60)) }), f.answered_in_time_share == null ? t("none") : percent(f.answered_in_time_share)],
      [t("fig_p50"), secs(f.wait_p50_s)], [t("fig_p90"), secs(f.wait_p90_s)],
      [t("fig_abandoned"), number(f.abandoned || 0)], [t("fig_open"), number(f.open_now || 0)],
      [t("fig_overdue"), number(f.overdue_now || 0)],
    ];
    $("figures").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  }

  function render() {
    renderFigures();
    renderTickets();
    renderSessions();
  }

  // --- the agent's steps ---------------------------------------------------------------------------
  async function call(path, body) {
    const res = await fetch(path, { method: "POST", headers: { Authorization: "Bearer " + token,
      "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
    if (!res.ok) {
      let why = res.statusText;
      try { why = (await res.json()).detail || why; } catch (_) { /* not JSON */ }
      alert(t("failed", { why }));
      return null;
    }
    return res.json();
  }

  async function step(tk, action) {
    const moved = await call(`/v1/support/tickets/${encodeURIComponent(tk.id)}/${action}`);
    if (moved) { tickets.set(moved.id, moved); renderTickets(); }
  }

  let noting = null;
  function openNote(tk) {
    noting = tk;
    $("note-cause").replaceChildren(el("option", { value: "", text: t("no_cause") }),
      ...causes.map((c) => el("option", { value: c, text: t("cause_" + c) })));
    $("note-text").value = "";
    $("note-dialog").showModal();
  }
  $("note-cancel").addEventListener("click", () => $("note-dialog").close());
  $("note-form").addEventListener("submit", async () => {
    if (!noting) return;
    const cause = $("note-cause").value || null;
    await call(`/v1/support/tickets/${encodeURIComponent(noting.id)}/notes`, { cause, text: $("note-text").value });
    noting = null;
  });

  document.querySelectorAll("[data-filter]").forEach((b) => b.addEventListener("click", () => {
    filter = b.dataset.filter;
    document.querySelectorAll("[data-filter]").forEach((o) => o.setAttribute("aria-pressed", String(o === b)));
    renderSessions();
  }));

  // --- signing out after inactivity ----------------------------------------------------------------
  let idleLimitS = 900, lastInput = Date.now(), socket = null, signedOut = false;
  for (const kind of ["pointerdown", "keydown", "wheel", "touchstart"]) {
    addEventListener(kind, () => { lastInput = Date.now(); }, { passive: true });
  }
  function signOut(message) {
    signedOut = true;
    token = null;
    sessionStorage.removeItem(storeKey + ":token");
    if (socket) socket.close(1000);
    $("main").hidden = true;
    $("signed-out").textContent = message;
    $("signed-out").hidden = false;
    connState = "closed";
    renderConn();
  }
  setInterval(() => {
    if (!signedOut && Date.now() - lastInput > idleLimitS * 1000) {
      signOut(t("signed_out", { minutes: number(Math.round(idleLimitS / 60)) }));
    }
    if (!signedOut) { renderTickets(); renderFigures(); }
  }, 1000);

  // --- the socket ----------------------------------------------------------------------------------
  // The page pings every PING_MS and gives up on a socket that said nothing for SILENT_MS (no update, no
  // pong): on a network that died without a word the socket would stay "live" with figures going stale, and
  // its close event waits for a closing handshake that never comes.
  const PING_MS = 5000;
  const SILENT_MS = 12000;
  let backoff = 500;
  let heard = Date.now();
  function connect() {
    if (!token) { signOut(t("err_no_token")); return; }
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/v1/support/ws`, ["support.v1", "bearer." + token]);
    socket = ws;
    heard = Date.now();
    connState = "connecting";
    renderConn();
    socket.onmessage = (e) => {
      heard = Date.now();
      const msg = JSON.parse(e.data);
      if (msg.type === "snapshot") {
        backoff = 500;
        connState = "live";
        renderConn();
        skew = msg.now - Date.now();
        answerWithinS = msg.answer_within_s;
        idleLimitS = msg.idle_logout_s || idleLimitS;
        causes = msg.causes;
        sessions.clear();
        tickets.clear();
        msg.sessions.forEach(takeSession);
        msg.tickets.forEach((tk) => tickets.set(tk.id, tk));
        figures = msg.figures;
        render();
      } else if (msg.type === "update") {
        skew = msg.now - Date.now();
        msg.sessions.forEach(takeSession);
        (msg.gone || []).forEach((id) => sessions.delete(id));
        msg.tickets.forEach((tk) => tickets.set(tk.id, tk));
        if (msg.figures) figures = msg.figures;
        render();
      }
    };
    socket.onclose = (e) => closed(ws, e.code);
  }

  function closed(ws, code) {
    if (socket !== ws || signedOut) return;
    socket = null;
    if (code === 4401) { signOut(t("err_token")); return; }
    if (code === 4403) { signOut(t("err_role")); return; }
    connState = "connecting";
    renderConn();
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
  }

  setInterval(() => {
    if (!socket || signedOut || socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - heard > SILENT_MS) {
      const ws = socket;
      try { ws.close(); } catch (_) { /* closing already */ }
      closed(ws, 1006);  // at once: its close event may be a minute away
      return;
    }
    try { socket.send('{"type":"ping"}'); } catch (_) { /* the close event follows */ }
  }, PING_MS);

  // for tests and for a curious agent's console: what the page holds (ids, states and figures only)
  window.supportDebug = {
    sessions: () => [...sessions.values()].map((s) => ({ booking_id: s.booking_id, state: s.state,
      points: Object.values(s.series).reduce((n, p) => n + p.length, 0) })),
    tickets: () => [...tickets.values()],
    figures: () => figures,
  };

  applyLanguage();
  connect();
})();
