// A practitioner's statement: what is available and when it is paid, what is held for a complaint, on its
// way or paid, a chart of what was earned each week, and every movement with its session (docs/ledger.md).
// Reads GET /v1/ledger/practitioners/{id}/statement with the token from the link's fragment.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const I18N = window.STATEMENT_I18N;
  const storeKey = "statement";
  const SHOWN_AT_ONCE = 50; // movements shown at first, and added by "show older"
  const WEEKS = 12;
  const SETTLEMENTS = new Set(["completed", "ended_early", "client_no_show", "practitioner_no_show", "both_no_show",
    "cancelled_in_time", "cancelled_late", "cancelled_by_practitioner", "cancelled_by_admin"]);

  const query = new URLSearchParams(location.search);
  let token = PAGE.token(storeKey);
  let lang = PAGE.language(I18N, storeKey);
  const words = PAGE.translator(I18N);
  const t = (key, vars) => words(lang, key, vars);
  const locale = () => PAGE.locale(lang);
  const money = (minor, currency) => PAGE.money(lang, minor, currency);
  // in the table, amounts without their currency, which the column's heading names once
  function plain(minor, currency) {
    const digits = new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
    return new Intl.NumberFormat(locale(), { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(minor / 10 ** digits);
  }
  const symbol = (currency) => new Intl.NumberFormat(locale(), { style: "currency", currency }).formatToParts(0)
    .find((part) => part.type === "currency").value;
  const signed = (minor, currency) => (minor > 0 ? "+" : minor < 0 ? "−" : "") + plain(Math.abs(minor), currency);
  // Times and weeks are Algeria's, as the payout weeks are (Sunday to Saturday there), wherever the reader is.
  const ZONE = "Africa/Algiers";
  const narrow = window.matchMedia("(max-width: 640px)");
  const when = (iso) => new Intl.DateTimeFormat(locale(), { dateStyle: narrow.matches ? "short" : "medium",
                                                            timeStyle: "short", timeZone: ZONE }).format(new Date(iso));
  // a calendar date (a payout date, the start of a week) shown as that date wherever the reader is
  const day = (date, options) => new Intl.DateTimeFormat(locale(), { timeZone: "UTC", ...options }).format(date);
  const utcDate = (iso) => new Date(iso + "T00:00:00Z");

  function applyLanguage() {
    document.documentElement.lang = lang;
    document.documentElement.dir = I18N[lang].dir;
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    if (adminView) $("title").textContent = t("title_of", { id: practitionerId });
    document.title = $("title").textContent;
    $("times-note").hidden = Intl.DateTimeFormat().resolvedOptions().timeZone === ZONE;
    $("lang").value = lang;
    if (problem) say(problem);
    render();
  }
  $("lang").addEventListener("change", (e) => {
    lang = e.target.value;
    PAGE.rememberLanguage("statement", lang);
    applyLanguage();
  });

  // --- state ---------------------------------------------------------------------------------------
  const who = token ? PAGE.claims(token) : null;
  const practitionerId = query.get("practitioner") || (who && who.sub) || "";
  const adminView = Boolean(who && who.role === "admin" && query.get("practitioner"));
  let statement = null;
  let shown = SHOWN_AT_ONCE;
  let problem = null; // the key of the message shown instead of the statement
  let retry = null;

  function say(key) {
    problem = key;
    document.body.dataset.state = key;
    $("notice").textContent = t(key);
    $("notice").hidden = false;
    $("main").hidden = key !== "err_unavailable" || !statement;
  }

  async function load() {
    clearTimeout(retry);
    if (!token) { say("err_no_token"); return; }
    if (who && who.role !== "practitioner" && who.role !== "admin") { say("err_role"); return; }
    if (who && who.role === "admin" && !query.get("practitioner")) { say("err_admin_needs_id"); return; }
    let res;
    try {
      res = await fetch(`/v1/ledger/practitioners/${encodeURIComponent(practitionerId)}/statement`,
                        { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
    } catch (e) {
      res = null;
    }
    if (res && res.status === 401) {
      PAGE.forget(storeKey);
      token = null;
      say("err_token");
      return;
    }
    if (res && res.status === 403) { say("err_not_yours"); return; }
    if (res && res.status >= 400 && res.status < 500) { say("err_invalid"); return; } // trying again cannot help
    if (!res || !res.ok) {
      say("err_unavailable"); // the server or the network: it comes back by itself
      retry = setTimeout(load, 10_000);
      return;
    }
    statement = await res.json();
    problem = null;
    $("notice").hidden = true;
    $("main").hidden = false;
    render();
    document.body.dataset.state = "ready";
  }

  // --- rendering -----------------------------------------------------------------------------------
  function render() {
    if (!statement) return;
    const s = statement;
    for (const name of ["available", "held", "in_transit", "paid"]) $(name).textContent = money(s[name + "_minor"], s.currency);
    const payday = utcDate(s.next_payout_date);
    const dateText = day(payday, { weekday: "long", day: "numeric", month: "long" });
    const moved = payday.getUTCDay() !== 0;
    let line;
    if (s.available_minor < s.payout_minimum_minor) {
      line = t("next_payout_below", { min: money(s.payout_minimum_minor, s.currency) }); // nothing is paid below it
    } else {
      line = t(moved ? "next_payout_moved" : "next_payout", { date: dateText });
      if (moved && !s.next_payout_date_announced) line += " · " + t("next_payout_unconfirmed");
    }
    $("next-payout").textContent = line;
    renderChart(s);
    renderEntries(s);
  }

  // The Sunday (as a UTC calendar date) that starts the week of an instant in Algeria.
  const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
  const partsIn = new Intl.DateTimeFormat("en-US", { timeZone: ZONE, year: "numeric", month: "numeric", day: "numeric",
                                                     weekday: "short" });
  function weekOf(instant) {
    const p = Object.fromEntries(partsIn.formatToParts(new Date(instant)).map((x) => [x.type, x.value]));
    return Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day) - WEEKDAYS.indexOf(p.weekday));
  }

  function renderChart(s) {
    const thisWeek = weekOf(Date.now());
    const weeks = [];
    for (let i = WEEKS - 1; i >= 0; i--) weeks.push({ start: thisWeek - i * 7 * 86400_000, earned: 0 });
    // what each week's sessions earned, less what an upheld complaint refunded from them later (a hold
    // still pending counts: it is shown apart, as held)
    const settledIn = new Map(); // booking -> the week its session was settled
    for (const e of s.entries) {
      if (e.account !== "available" || !SETTLEMENTS.has(e.kind) || e.amount_minor <= 0) continue;
      settledIn.set(e.booking_id, weekOf(e.time));
      const w = weeks.find((x) => x.start === weekOf(e.time));
      if (w) w.earned += e.amount_minor;
    }
    for (const e of s.entries) {
      if (e.kind !== "complaint_upheld") continue; // its entries sum to minus what the client got back
      const w = weeks.find((x) => x.start === settledIn.get(e.booking_id));
      if (w) w.earned += e.amount_minor;
    }
    const svg = $("chart");
    const short = (start) => day(new Date(start), { day: "numeric", month: "short" });
    CHART.bars(svg, weeks.map((w) => ({ label: short(w.start), title: t("week_of", { date: short(w.start) }),
                                        value: w.earned })),
               { rtl: I18N[lang].dir === "rtl", format: (v) => money(v, s.currency), labelWidth: 72 });
    const total = weeks.reduce((sum, w) => sum + w.earned, 0);
    svg.setAttribute("aria-label", t("chart_label", { n: WEEKS, list: weeks.map((w) =>
      `${day(new Date(w.start), { day: "numeric", month: "short" })} ${money(w.earned, s.currency)}`).join(lang === "ar" ? "، " : ", ") }));
    $("chart-caption").textContent = t("chart_caption", { n: WEEKS, this: money(weeks[WEEKS - 1].earned, s.currency),
                                                          total: money(total, s.currency) });
  }

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    const b = document.createElement("bdi");
    b.textContent = text;
    td.appendChild(b);
    return td;
  }

  // a movement of a complaint leads to the complaint (what is held or came back, and the client's words once
  // an administrator shares them), in the same language, with the same link's token
  function linkCell(text, bookingId) {
    const td = document.createElement("td");
    const a = document.createElement("a");
    a.href = `/complaint/${encodeURIComponent(bookingId)}?lang=${lang}#token=${encodeURIComponent(token)}`;
    a.title = t("see_complaint");
    const b = document.createElement("bdi");
    b.textContent = text;
    a.appendChild(b);
    td.appendChild(a);
    return td;
  }

  function renderEntries(s) {
    const rows = s.entries.slice().reverse(); // newest first
    $("no-entries").hidden = rows.length > 0;
    $("entries").hidden = rows.length === 0;
    $("csv").hidden = rows.length === 0;
    for (const key of ["col_amount", "col_after"]) {
      document.querySelector(`#entries th[data-i18n="${key}"]`).textContent = `${t(key)} (${symbol(s.currency)})`;
    }
    const body = $("entries").tBodies[0];
    body.replaceChildren(...rows.slice(0, shown).map((e) => {
      const tr = document.createElement("tr");
      tr.dataset.kind = e.kind;
      tr.dataset.account = e.account;
      const what = I18N.en[`kind_${e.kind}_${e.account}`] ? t(`kind_${e.kind}_${e.account}`) : t("kind_" + e.kind);
      tr.append(cell(when(e.time)), e.kind.startsWith("complaint_") && e.booking_id && !adminView ? linkCell(what, e.booking_id) : cell(what),
                cell(e.booking_id || "—", "session"), cell(t(e.account)),
                cell(signed(e.amount_minor, s.currency), "num " + (e.amount_minor < 0 ? "minus" : "plus")),
                cell(plain(e.balance_minor, s.currency), "num after"));
      return tr;
    }));
    $("more").hidden = rows.length <= shown;
  }
  $("more").addEventListener("click", () => { shown += SHOWN_AT_ONCE; render(); });
  let resized = null;
  window.addEventListener("resize", () => { clearTimeout(resized); resized = setTimeout(() => statement && renderChart(statement), 150); });

  // --- the CSV file: fetched with the token (a link could not carry it), then saved ------------------
  $("csv").addEventListener("click", async () => {
    let res = null;
    try {
      res = await fetch(`/v1/ledger/practitioners/${encodeURIComponent(practitionerId)}/statement.csv`,
                        { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
    } catch (e) {
      res = null;
    }
    if (res && res.status === 401) { say("err_token"); return; }
    if (!res || !res.ok) { say("err_unavailable"); retry = setTimeout(load, 10_000); return; }
    const url = URL.createObjectURL(await res.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = `statement-${practitionerId}-${new Date().toISOString().slice(0, 10)}.csv`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  });

  // fresh figures when the practitioner comes back to the tab, and every few minutes while it is open
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible" && token && statement) load(); });
  setInterval(() => { if (token && statement && document.visibilityState === "visible") load(); }, 300_000);

  applyLanguage();
  load();
})();
