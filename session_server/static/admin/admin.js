// The platform administration's page (docs/ledger.md): the complaints waiting for a decision, each read and
// decided (upheld with all or part of the held money refunded, or rejected), the client's words shared with
// the practitioner when an admin chooses to; the platform's revenue per day as a chart and what it keeps for
// others now; the next payout dates, an estimated holiday's date confirmed or corrected, and this week's
// payouts; the refunds to clients not made yet, a failed one sent again. Reads and writes the /v1/complaints
// and /v1/ledger routes with the token from the link's fragment.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const I18N = window.ADMIN_I18N;
  const storeKey = "admin";
  const DAYS = 30;
  const DATES_SHOWN = 8;
  const LISTED = 500; // complaints listed at once (the waiting ones: the oldest first)
  const REFUNDS_WAITING = ["failed", "owed", "sending", "sent"]; // not made yet: the failed ones first
  const CONFIRM_DELAY_MS = 800; // a double click on "continue" must not land on "confirm"
  const ZONE = "Africa/Algiers";

  let token = PAGE.token(storeKey);
  let lang = PAGE.language(I18N, storeKey);
  const words = PAGE.translator(I18N);
  const t = (key, vars) => words(lang, key, vars);
  const locale = () => PAGE.locale(lang);
  const money = (minor, currency) => PAGE.money(lang, minor, currency);
  const symbol = (currency) => new Intl.NumberFormat(locale(), { style: "currency", currency }).formatToParts(0)
    .find((part) => part.type === "currency").value;
  const digitsOf = (currency) => new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
  const narrow = window.matchMedia("(max-width: 640px)");
  const when = (iso) => new Intl.DateTimeFormat(locale(), { dateStyle: narrow.matches ? "short" : "medium",
                                                            timeStyle: "short", timeZone: ZONE }).format(new Date(iso));
  // a calendar date shown as that date wherever the reader is
  const day = (iso, options) => new Intl.DateTimeFormat(locale(), { timeZone: "UTC", ...options })
    .format(new Date(iso + "T00:00:00Z"));
  // today in Algeria, as YYYY-MM-DD, and a calendar date moved by whole days
  const dayParts = new Intl.DateTimeFormat("en-US", { timeZone: ZONE, year: "numeric", month: "2-digit", day: "2-digit" });
  const today = () => {
    const p = Object.fromEntries(dayParts.formatToParts(new Date()).map((x) => [x.type, x.value]));
    return `${p.year}-${p.month}-${p.day}`;
  };
  const shift = (iso, days) => new Date(Date.parse(iso + "T00:00:00Z") + days * 86400_000).toISOString().slice(0, 10);

  const who = token ? PAGE.claims(token) : null;
  const state = { filter: "open", weeksBack: 0, complaints: null, openCount: 0, days: null, before: null, dates: null,
                  week: null, sunday: null, refunds: null, open: null, problem: null };
  let retry = null;

  // --- talking to the server ---------------------------------------------------------------------------
  // {status, body} (status 0: the request did not get through); a 401 signs the page out
  async function call(path, options = {}) {
    let res;
    try {
      res = await fetch(path, { cache: "no-store", ...options,
                                headers: { Authorization: "Bearer " + token, ...(options.body ? { "Content-Type": "application/json" } : {}) } });
    } catch (e) {
      return { status: 0, body: null };
    }
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (res.status === 401) {
      PAGE.forget(storeKey);
      token = null;
      problem("err_token");
    }
    return { status: res.status, body };
  }

  function problem(key) {
    state.problem = key;
    document.body.dataset.state = key;
    $("notice").textContent = t(key);
    $("notice").hidden = false;
    $("main").hidden = key !== "err_unavailable" || !state.complaints;
    if (key !== "err_unavailable") for (const d of document.querySelectorAll("dialog[open]")) d.close();
  }

  let saidTimer = null;
  function say(text) {
    $("said").textContent = text;
    $("said").hidden = false;
    clearTimeout(saidTimer);
    saidTimer = setTimeout(() => { $("said").hidden = true; }, 8000);
  }
  // what went wrong with the complaint open in the dialog, said there (the page behind a modal dialog is
  // neither seen nor read aloud), with the focus on it
  function sayInDialog(text) {
    if (!$("complaint").open) { say(text); return; }
    $("complaint-said").textContent = text;
    $("complaint-said").hidden = false;
    $("complaint-said").focus();
  }

  async function load() {
    clearTimeout(retry);
    if (!token) { problem("err_no_token"); return; }
    if (who && who.role !== "admin") { problem("err_role"); return; }
    const now = today();
    const year = Number(now.slice(0, 4));
    // the Sunday of the week whose payouts are shown: this week's in Algeria, or as many weeks back as asked
    const sunday = shift(now, -new Date(now + "T00:00:00Z").getUTCDay() - 7 * state.weeksBack);
    const [complaints, days, dates, later, week, ...refunds] = await Promise.all([
      // those waiting: the oldest first (answered first); the others: the newest first
      call(`/v1/complaints?limit=${LISTED}` + (state.filter === "all" ? "" : `&status=${state.filter}`)
           + (state.filter === "open" ? "&order=oldest" : "")),
      call(`/v1/ledger/revenue?from=${shift(now, -(DAYS - 1))}&to=${now}`),
      call(`/v1/ledger/payout-dates?year=${year}`),
      call(`/v1/ledger/payout-dates?year=${year + 1}`),
      call(`/v1/ledger/payouts?sunday=${sunday}`),
      ...REFUNDS_WAITING.map((status) => call(`/v1/ledger/refunds?status=${status}&limit=${LISTED}`)),
    ]);
    if (!token) return;
    const all = [complaints, days, dates, later, week, ...refunds];
    if (all.some((r) => r.status === 403)) { problem("err_role"); return; }
    if (all.some((r) => r.status !== 200)) {
      problem("err_unavailable"); // the server or the network: it comes back by itself
      retry = setTimeout(load, 10_000);
      return;
    }
    state.complaints = complaints.body.complaints;
    if (state.filter === "open") {
      state.openCount = state.complaints.length;
    } else {
      const open = await call(`/v1/complaints?limit=${LISTED}&status=open`);
      if (open.status === 200) state.openCount = open.body.complaints.length;
    }
    state.days = days.body.days;
    state.before = null;
    if (!state.days.length) {
      // nothing moved in the window: what the platform keeps now is the last day's figure, however old
      const ever = await call("/v1/ledger/revenue");
      if (ever.status === 200 && ever.body.days.length) state.before = ever.body.days[ever.body.days.length - 1];
    }
    state.dates = [...dates.body.payout_dates, ...later.body.payout_dates].filter((d) => d.date >= now).slice(0, DATES_SHOWN);
    state.sunday = sunday;
    state.week = week.body.payouts;
    // the failed ones first (they wait for an admin), then those waiting longest
    state.refunds = refunds.flatMap((r, i) => r.body.refunds.map((x) => ({ ...x, rank: i ? 1 : 0 })))
      .sort((a, b) => a.rank - b.rank || a.created_at.localeCompare(b.created_at));
    state.problem = null;
    $("notice").hidden = true;
    $("main").hidden = false;
    render();
    document.body.dataset.state = "ready";
  }

  // --- rendering ---------------------------------------------------------------------------------------
  function applyLanguage() {
    document.documentElement.lang = lang;
    document.documentElement.dir = I18N[lang].dir;
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    document.title = t("title");
    $("lang").value = lang;
    $("times-note").hidden = Intl.DateTimeFormat().resolvedOptions().timeZone === ZONE;
    if (state.problem) problem(state.problem);
    render();
    if (state.open) renderComplaint();
  }
  $("lang").addEventListener("change", (e) => {
    lang = e.target.value;
    PAGE.rememberLanguage(storeKey, lang);
    applyLanguage();
  });

  function render() {
    if (!state.complaints) return;
    renderComplaints();
    renderMoney();
    renderPayouts();
    renderRefunds();
  }

  function cell(content, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    if (content instanceof Node) {
      td.appendChild(content);
    } else {
      const b = document.createElement("bdi");
      b.textContent = content;
      td.appendChild(b);
    }
    return td;
  }

  const heldText = (c) => (c.held_minor == null ? t("held_pending") : money(c.held_minor, c.currency));

  function renderComplaints() {
    const open = state.openCount;
    $("open-count").textContent = open ? `(${open >= LISTED ? LISTED.toLocaleString(locale()) + "+" : open.toLocaleString(locale())})` : "";
    document.querySelectorAll("[data-filter]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.filter === state.filter)));
    const shown = state.complaints; // in the order asked for: the oldest first among those waiting
    $("no-complaints").textContent = t(state.filter === "open" ? "no_complaints_open" : "no_complaints");
    $("no-complaints").hidden = shown.length > 0;
    $("cut").hidden = shown.length < LISTED;
    $("complaints").hidden = shown.length === 0;
    $("complaints").tBodies[0].replaceChildren(...shown.map((c) => {
      const tr = document.createElement("tr");
      tr.dataset.complaint = c.id;
      tr.dataset.status = c.status;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = t("open_complaint");
      button.addEventListener("click", () => openComplaint(c.id));
      const status = document.createElement("span");
      status.className = "badge " + c.status;
      status.textContent = c.status === "upheld" ? t("status_upheld_refund", { amount: money(c.refund_minor || 0, c.currency) })
        : t("status_" + c.status);
      tr.append(cell(when(c.filed_at)), cell(t("reason_" + c.reason)), cell(c.practitioner_id, "who"),
                cell(heldText(c), "num"), cell(status), cell(button));
      return tr;
    }));
  }
  document.querySelectorAll("[data-filter]").forEach((b) => b.addEventListener("click", async () => {
    state.filter = b.dataset.filter;
    document.querySelectorAll("[data-filter]").forEach((x) => x.setAttribute("aria-pressed", String(x === b)));
    await load();
  }));

  function figure(list, label, minor, currency) {
    const dt = document.createElement("dt");
    dt.textContent = t(label);
    const dd = document.createElement("dd");
    dd.dataset.figure = label;
    const b = document.createElement("bdi");
    b.textContent = money(minor, currency);
    dd.appendChild(b);
    const box = document.createElement("div");
    box.className = "figure";
    box.append(dt, dd);
    list.appendChild(box);
  }

  function renderMoney() {
    const recorded = state.days;
    const last = recorded.length ? recorded[recorded.length - 1] : state.before;
    $("no-money").hidden = Boolean(last);
    $("money-body").hidden = !last;
    if (!last) return;
    const currency = last.currency;
    const now = today();
    const byDate = new Map(recorded.map((d) => [d.date, d]));
    const days = [];
    for (let i = DAYS - 1; i >= 0; i--) {
      const date = shift(now, -i);
      days.push({ date, revenue: byDate.has(date) ? byDate.get(date).revenue_minor : 0 });
    }
    $("days-title").textContent = t("money_days", { n: DAYS });
    drawChart(days, currency);
    const sum = (name) => recorded.reduce((total, d) => total + d[name], 0);
    $("period").replaceChildren();
    figure($("period"), "paid_in", sum("client_payments_minor"), currency);
    figure($("period"), "revenue", sum("revenue_minor"), currency);
    figure($("period"), "discounts", sum("discounts_funded_minor"), currency);
    const owes = last.liabilities;
    $("owes").replaceChildren();
    figure($("owes"), "escrow", owes.escrow_minor, currency);
    figure($("owes"), "practitioners_available", owes.practitioners_available_minor, currency);
    figure($("owes"), "practitioners_held", owes.practitioners_held_minor, currency);
    figure($("owes"), "payouts_in_transit", owes.payouts_in_transit_minor, currency);
    figure($("owes"), "refunds_payable", owes.refunds_payable_minor, currency);
    figure($("owes"), "referral_credits", owes.referral_credits_minor, currency);
    figure($("owes"), "paid_out", last.paid_out_total_minor, currency);
    figure($("owes"), "refunded", last.refunded_total_minor, currency);
  }

  function drawChart(days, currency) {
    const short = (date) => day(date, { day: "numeric", month: "short" });
    const svg = $("chart");
    CHART.bars(svg, days.map((d) => ({ label: short(d.date), title: short(d.date), value: d.revenue })),
               { rtl: I18N[lang].dir === "rtl", format: (v) => money(v, currency), labelWidth: 84 });
    const n = days.length;
    const total = days.reduce((s, d) => s + d.revenue, 0);
    svg.setAttribute("aria-label", t("chart_label", { n, list: days.filter((d) => d.revenue)
      .map((d) => `${short(d.date)} ${money(d.revenue, currency)}`).join(lang === "ar" ? "، " : ", ") }));
    $("chart-caption").textContent = t("chart_caption", { n, today: money(days[n - 1].revenue, currency),
                                                          total: money(total, currency) });
  }
  let resized = null;
  window.addEventListener("resize", () => { clearTimeout(resized); resized = setTimeout(() => state.days && renderMoney(), 150); });

  const holidayName = (d) => (d.holiday_names && (d.holiday_names[lang] || d.holiday_names.en)) || d.holiday || "";

  function renderPayouts() {
    const full = (iso) => day(iso, { weekday: "long", day: "numeric", month: "long", year: "numeric" });
    $("dates").tBodies[0].replaceChildren(...state.dates.map((d) => {
      const tr = document.createElement("tr");
      tr.dataset.sunday = d.sunday;
      const note = document.createElement("span");
      note.className = "note";
      const parts = [d.date !== d.sunday ? t("moved_from", { sunday: day(d.sunday, { day: "numeric", month: "long" }), holiday: holidayName(d) })
        : d.holiday ? t("holiday_kept", { holiday: holidayName(d) }) : t("on_sunday")];
      if (d.estimated) parts.push(t("estimated"));
      if (d.announced) parts.push(t("announced"));
      note.textContent = parts.join(" · ");
      if (d.estimated) {
        const fix = document.createElement("button");
        fix.type = "button";
        fix.textContent = t("correct");
        fix.addEventListener("click", () => openHoliday(d));
        note.append(" ", fix);
      }
      tr.append(cell(full(d.date), d.date !== d.sunday ? "moved" : ""), cell(note));
      return tr;
    }));
    $("week-title").textContent = t("week_payouts", { date: day(state.sunday, { day: "numeric", month: "long", year: "numeric" }) });
    $("week-next").disabled = state.weeksBack === 0;
    $("no-payouts").hidden = state.week.length > 0;
    $("week").hidden = state.week.length === 0;
    $("week").tBodies[0].replaceChildren(...state.week.map((p) => {
      const tr = document.createElement("tr");
      tr.dataset.payout = p.payout_id;
      const status = document.createElement("span");
      status.className = "badge " + p.status;
      status.textContent = t("payout_" + p.status);
      tr.append(cell(p.practitioner_id, "who"), cell(money(p.amount_minor, p.currency), "num"), cell(status));
      return tr;
    }));
  }

  // an earlier week's payouts (a bank answers days later: what is still on its way is looked for there)
  for (const [id, step] of [["week-prev", 1], ["week-next", -1]]) {
    $(id).addEventListener("click", async () => {
      state.weeksBack = Math.max(0, state.weeksBack + step);
      await load();
      $("week-title").focus();
    });
  }

  function renderRefunds() {
    const shown = state.refunds;
    $("no-refunds").hidden = shown.length > 0;
    $("refunds").hidden = shown.length === 0;
    $("refunds").tBodies[0].replaceChildren(...shown.map((r) => {
      const tr = document.createElement("tr");
      tr.dataset.refund = r.refund_id;
      tr.dataset.status = r.status;
      const status = document.createElement("span");
      status.className = "badge " + r.status;
      status.textContent = r.status === "failed"
        ? (r.answer_reason ? t("refund_failed", { reason: r.answer_reason }) : t("refund_failed_plain"))
        : t("refund_" + r.status);
      status.dir = "auto";
      let action = "";
      if (r.status === "failed") {
        action = document.createElement("button");
        action.type = "button";
        action.textContent = t("retry_refund");
        action.addEventListener("click", () => retryRefund(r.refund_id, action));
      }
      tr.append(cell(when(r.created_at)), cell(r.client_id, "who"), cell(money(r.amount_minor, r.currency), "num"),
                cell(t("refund_" + r.reason)), cell(status), cell(action));
      return tr;
    }));
  }

  // a refund the gateway could not make goes in the next refund file: sent again, never twice at once
  async function retryRefund(rid, button) {
    button.disabled = true;
    const r = await call(`/v1/ledger/refunds/${encodeURIComponent(rid)}/retry`, { method: "POST" });
    if (!token) return;
    if (r.status === 0) { button.disabled = false; say(t("err_reach_refund")); return; }
    say(t(r.status === 200 ? "refund_retried" : r.status === 409 ? "refund_not_failed" : "err_unavailable"));
    await load();
    $("refunds-title").focus();
  }

  // --- one complaint: read, share, decide --------------------------------------------------------------
  async function openComplaint(cid) {
    const found = await call(`/v1/complaints/${encodeURIComponent(cid)}`);
    if (!token) return;
    if (found.status !== 200) { sayInDialog(t(found.status === 0 ? "err_reach" : "err_unavailable")); return; }
    state.open = found.body;
    resetDecision();
    renderComplaint();
    if (!$("complaint").open) $("complaint").showModal();
    $("complaint-title").focus(); // not on an action: sharing and deciding are chosen, never landed on
  }

  function fact(list, label, value) {
    const dt = document.createElement("dt");
    dt.textContent = t(label);
    const dd = document.createElement("dd");
    const b = document.createElement("bdi");
    b.textContent = value;
    dd.appendChild(b);
    list.append(dt, dd);
  }

  function renderComplaint() {
    const c = state.open;
    $("complaint-title").textContent = t("complaint_title", { date: when(c.filed_at) });
    const facts = $("facts");
    facts.replaceChildren();
    fact(facts, "col_status", t("status_" + c.status));
    fact(facts, "col_reason", t("reason_" + c.reason));
    fact(facts, "session", c.booking_id);
    fact(facts, "practitioner", c.practitioner_id);
    fact(facts, "client", c.client_id);
    fact(facts, "held", heldText(c));
    if (c.status !== "open") {
      fact(facts, "refund", money(c.refund_minor || 0, c.currency));
      if (c.resolved_at) fact(facts, "resolved_on", when(c.resolved_at));
    }
    $("text").textContent = c.has_text ? c.text : t("no_text");
    $("text").classList.toggle("none", !c.has_text);
    $("text-private").hidden = !c.has_text || c.shared_with_practitioner;
    $("shared").hidden = !c.shared_with_practitioner;
    $("share-box").hidden = !c.has_text || c.shared_with_practitioner;
    $("decide-form").hidden = c.status !== "open";
    $("decide-full-label").textContent = t("decide_full", { amount: heldText(c) });
    $("part-label").textContent = t("part_amount", { currency: symbol(c.currency) });
    const link = new URL("/statement", location.origin);
    link.searchParams.set("practitioner", c.practitioner_id);
    link.searchParams.set("lang", lang);
    $("statement-link").href = link.pathname + link.search + "#token=" + encodeURIComponent(token || "");
  }

  function resetDecision() {
    $("decide-form").reset();
    $("part-box").hidden = true;
    $("decide-error").hidden = true;
    $("complaint-said").hidden = true;
    $("confirm-box").hidden = true;
    $("decide-actions").hidden = false;
    $("share-ask").hidden = true;
    $("share").hidden = false;
    setBusy(false);
  }

  function setBusy(busy) {
    for (const el of $("decide-form").querySelectorAll("input, button")) el.disabled = busy;
  }

  function decisionError(text) {
    $("decide-error").textContent = text;
    $("decide-error").hidden = false;
  }

  // a decision chosen: the amount asked for only with a partial refund; an error goes once the admin acts on
  // it (while typing, never on leaving the field: the button clicked must not move under the pointer)
  $("decide-form").addEventListener("change", (e) => {
    if (e.target.name !== "decision") return;
    const chosen = $("decide-form").elements.decision.value;
    $("part-box").hidden = chosen !== "part";
    $("decide-error").hidden = true;
    if (chosen === "part") $("part").focus();
  });
  $("part").addEventListener("input", () => {
    $("decide-error").hidden = true;
    $("part").removeAttribute("aria-invalid");
  });

  // The amount an admin typed, in minor units (null: not an amount in this currency's decimals), read as
  // people write amounts: Arabic or Persian digits, spaces or a thousands separator (3 000, 3.000,00,
  // 3,000.00, ٣٬٠٠٠), a comma or a point for the decimals; a lone separator followed by exactly three digits
  // is a thousands separator where the currency has fewer decimals (3,000 or 3.000 DZD: three thousand).
  function minorOf(text, currency) {
    const digits = digitsOf(currency);
    let clean = text.trim().replace(/[\s\u00a0\u202f'’٬]/g, "")
      .replace(/[٠-٩]/g, (d) => String("٠١٢٣٤٥٦٧٨٩".indexOf(d))).replace(/[۰-۹]/g, (d) => String("۰۱۲۳۴۵۶۷۸۹".indexOf(d)))
      .replace(/٫/g, ".");
    if (!/^[\d.,]+$/.test(clean)) return null;
    const last = Math.max(clean.lastIndexOf("."), clean.lastIndexOf(","));
    if (last >= 0) {
      const mark = clean[last];
      const grouping = (clean.includes(".") && clean.includes(",")) ? (mark === "." ? "," : ".")
        : (clean.split(mark).length > 2 || (clean.length - last - 1 === 3 && digits < 3)) ? mark : null;
      if (grouping) clean = clean.split(grouping).join("");
      if (grouping !== mark) clean = clean.replace(mark, ".");
    }
    const match = /^(\d+)(?:\.(\d*))?$/.exec(clean);
    if (!match || (match[2] || "").length > digits) return null;
    return Number(match[1]) * 10 ** digits + Number((match[2] || "").padEnd(digits, "0") || "0");
  }

  let chosen = null; // {decision, refund_minor?} once "continue" was pressed
  let confirmTimer = null;
  let shareTimer = null;
  $("decide-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const c = state.open;
    const held = c.held_minor;
    const pick = $("decide-form").elements.decision.value;
    if (!pick) { decisionError(t("err_choose")); return; }
    if (held == null) { decisionError(t("err_hold_pending")); return; }
    let text;
    if (pick === "full") {
      chosen = { decision: "upheld" };
      text = t("confirm_full", { amount: money(held, c.currency) });
    } else if (pick === "part") {
      const refund = minorOf($("part").value, c.currency);
      if (refund == null || refund <= 0 || refund > held) {
        decisionError(t("err_amount", { amount: money(held, c.currency) }));
        $("part").setAttribute("aria-invalid", "true");
        $("part").focus();
        return;
      }
      $("part").removeAttribute("aria-invalid");
      chosen = refund === held ? { decision: "upheld" } : { decision: "upheld", refund_minor: refund };
      text = refund === held ? t("confirm_full", { amount: money(held, c.currency) })
        : t("confirm_part", { refund: money(refund, c.currency), rest: money(held - refund, c.currency) });
    } else {
      chosen = { decision: "rejected" };
      text = t("confirm_reject", { amount: heldText(c) });
    }
    $("decide-error").hidden = true;
    $("confirm-text").textContent = text;
    $("decide-actions").hidden = true;
    $("confirm-box").hidden = false;
    $("confirm").disabled = true;
    clearTimeout(confirmTimer);
    confirmTimer = setTimeout(() => { $("confirm").disabled = false; }, CONFIRM_DELAY_MS);
    $("confirm-back").focus();
  });
  $("confirm-back").addEventListener("click", () => {
    clearTimeout(confirmTimer);
    $("confirm-box").hidden = true;
    $("decide-actions").hidden = false;
    chosen = null;
    $("decide").focus();
  });

  const RESOLVE_ERRORS = { hold_pending: "err_hold_pending", already_resolved: "err_already_resolved",
                           refund_too_large: "err_refund_too_large" };
  $("confirm").addEventListener("click", async () => {
    if (!chosen) return;
    const c = state.open;
    setBusy(true);
    const res = await call(`/v1/complaints/${encodeURIComponent(c.id)}/resolve`,
                           { method: "POST", body: JSON.stringify(chosen) });
    setBusy(false);
    if (!token) return;
    if (res.status === 200) {
      if ($("complaint").open) $("complaint").close();
      say(t(res.body.status === "upheld" ? "done_upheld" : "done_rejected"));
      await load();
      $("complaints-title").focus(); // the list it left, now without it
      return;
    }
    $("confirm-box").hidden = true;
    $("decide-actions").hidden = false;
    const code = res.body && res.body.code;
    if (code === "already_resolved") {
      // decided elsewhere meanwhile: shown as it now stands, and said why
      await load();
      if ($("complaint").open && state.open && state.open.id === c.id) await openComplaint(c.id);
      sayInDialog(t("err_already_resolved"));
      return;
    }
    const text = t(res.status === 0 ? "err_reach_decision" : RESOLVE_ERRORS[code] || "err_decide_failed");
    if ($("complaint").open && state.open && state.open.id === c.id) {
      decisionError(text);
      $("decide").focus();
    } else {
      say(text); // the dialog was closed while it was sent
    }
  });

  $("share").addEventListener("click", () => {
    $("share").hidden = true;
    $("share-ask").hidden = false;
    $("share-yes").disabled = true;
    clearTimeout(shareTimer);
    shareTimer = setTimeout(() => { $("share-yes").disabled = false; }, CONFIRM_DELAY_MS);
    $("share-no").focus();
  });
  $("share-no").addEventListener("click", () => {
    clearTimeout(shareTimer);
    $("share-ask").hidden = true;
    $("share").hidden = false;
    $("share").focus();
  });
  $("share-yes").addEventListener("click", async () => {
    $("share-yes").disabled = true;
    const res = await call(`/v1/complaints/${encodeURIComponent(state.open.id)}/share`, { method: "POST" });
    if (!token) return;
    if (res.status !== 200) {
      $("share-yes").disabled = false;
      sayInDialog(t(res.status === 0 ? "err_reach" : "err_share_failed"));
      return;
    }
    state.open = res.body;
    $("share-ask").hidden = true;
    renderComplaint();
    $("shared").focus();
  });
  $("complaint-close").addEventListener("click", () => $("complaint").close());
  $("complaint").addEventListener("close", () => { state.open = null; chosen = null; });

  // --- an estimated holiday confirmed or corrected -----------------------------------------------------
  let holiday = null;
  function openHoliday(d) {
    holiday = d;
    $("holiday-title").textContent = t("correct_title", { holiday: holidayName(d) });
    $("holiday-text").textContent = t("correct_text", { date: day(d.sunday, { weekday: "long", day: "numeric", month: "long", year: "numeric" }) });
    $("holiday-date").value = d.sunday;
    $("holiday-move").checked = false;
    $("holiday-error").hidden = true;
    $("holiday-save").disabled = false;
    $("holiday").showModal();
  }
  $("holiday-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!$("holiday-date").value) { $("holiday-date").focus(); return; }
    $("holiday-save").disabled = true;
    const res = await call("/v1/ledger/holidays", { method: "POST", body: JSON.stringify({
      estimated: holiday.sunday, date: $("holiday-date").value, move_announced: $("holiday-move").checked }) });
    $("holiday-save").disabled = false;
    if (!token) return;
    if (res.status !== 200) {
      const code = res.body && res.body.code;
      $("holiday-error").textContent = t(res.status === 0 ? "err_reach" : code === "not_an_estimated_holiday" ? "err_not_estimated" : "err_save_failed");
      $("holiday-error").hidden = false;
      return;
    }
    $("holiday").close();
    const kept = res.body.kept.map((k) => day(k.announced, { day: "numeric", month: "long" }));
    say(kept.length ? `${t("correct_done")} ${t("correct_kept", { list: kept.join(lang === "ar" ? "، " : ", ") })}` : t("correct_done"));
    await load();
    $("dates-title").focus();
  });
  $("holiday-close").addEventListener("click", () => $("holiday").close());

  // fresh figures when the admin comes back to the tab, and every minute while it is open (not while a
  // complaint or a date is being decided: the dialog keeps what it shows)
  const idle = () => token && state.complaints && document.visibilityState === "visible" && !document.querySelector("dialog[open]");
  document.addEventListener("visibilitychange", () => { if (idle()) load(); });
  setInterval(() => { if (idle()) load(); }, 60_000);

  applyLanguage();
  load();
})();
