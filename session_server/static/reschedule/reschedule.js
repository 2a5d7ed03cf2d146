// The reschedule page of an interrupted session (see docs/api.md, "Free reschedules"): the client picks a
// new time (a free slot, or a time the practitioner proposed) and confirms it; the practitioner proposes
// up to three times. Times are shown in the viewer's own time zone. No build step, no dependencies.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const I18N = window.RESCHEDULE_I18N;
  const bookingId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const storeKey = "reschedule:" + bookingId + ":token";
  const OFFER_WAIT_TRIES = 10; // an offer follows the session's verdict within moments: look a few times
  const DAYS_AT_ONCE = 4; // a short list to choose from; more days on request

  // --- the token: read once from the fragment, then kept off the address bar -------------------
  let token = null;
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    token = fragment.get("token");
    sessionStorage.setItem(storeKey, token);
    history.replaceState(null, "", location.pathname + location.search);
  } else {
    token = sessionStorage.getItem(storeKey) || sessionStorage.getItem("room:" + bookingId + ":token");
  }

  // --- language and time zone ------------------------------------------------------------------
  const query = new URLSearchParams(location.search);
  let lang = query.get("lang") || localStorage.getItem("room:lang") || (navigator.language || "ar").slice(0, 2);
  if (!I18N[lang]) lang = "ar";
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

  function t(key, vars) {
    const text = (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key;
    return text.replace(/\{(\w+)\}/g, (_, k) => (vars && vars[k] != null ? vars[k] : ""));
  }

  function format(iso, options) {
    return new Intl.DateTimeFormat(I18N[lang].locale, { timeZone: zone, ...options }).format(new Date(iso));
  }
  const when = (iso) => format(iso, { weekday: "long", day: "numeric", month: "long", hour: "2-digit",
    minute: "2-digit" });
  const dayOf = (iso) => format(iso, { weekday: "long", day: "numeric", month: "long" });
  const timeOf = (iso) => format(iso, { hour: "2-digit", minute: "2-digit" });
  const dayKey = (iso) => new Intl.DateTimeFormat("en-CA", { timeZone: zone }).format(new Date(iso));

  // --- state -----------------------------------------------------------------------------------
  const state = { me: null, offer: null, slots: null, chosen: null, message: null, messageKind: "error",
    busy: false, fatal: null, newBooking: null, daysShown: DAYS_AT_ONCE };

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + token };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    return { status: r.status, data: data || {} };
  }

  const offerPath = () => "/v1/bookings/" + encodeURIComponent(bookingId) + "/reschedule-offer";

  function say(key, kind) {
    state.message = key;
    state.messageKind = kind || "error";
  }

  function errorKey(res) {
    if (res.status === 401) return "err_token";
    const code = res.data && res.data.code;
    return I18N.en["err_" + code] ? "err_" + code : "err_generic";
  }

  // --- loading ---------------------------------------------------------------------------------
  async function load() {
    if (!token) { state.fatal = "err_token"; return render(); }
    const me = await api("GET", "/v1/me");
    if (me.status !== 200) { state.fatal = errorKey(me); return render(); }
    state.me = me.data;
    for (let i = 0; i < OFFER_WAIT_TRIES; i++) {
      const res = await api("GET", offerPath());
      if (res.status === 200) { state.offer = res.data; break; }
      if (res.status !== 404) { state.fatal = errorKey(res); return render(); }
      if (i === 0) {
        const may = await offerMayCome();
        if (may === false) break;
        if (may !== true) { state.fatal = may; return render(); } // no such session of theirs: say so at once
        $("explain").textContent = t("waiting_offer"); // the verdict is near: the offer follows within moments
      }
      await new Promise((ok) => setTimeout(ok, 1500));
    }
    if (!state.offer) { state.fatal = "no_offer"; return render(); }
    await refresh();
  }

  // An offer follows an interrupted session (or one whose verdict is still to come): for a booking that
  // ended any other way, none will, and the page says so at once instead of waiting.
  // A link to a booking that is not the reader's (or none at all) gets the reason instead.
  async function offerMayCome() {
    const b = await api("GET", "/v1/bookings/" + encodeURIComponent(bookingId));
    if ([403, 404, 422].includes(b.status)) return errorKey(b);
    return b.status !== 200 || b.data.status === "interrupted" || b.data.status === "in_session";
  }

  async function refresh() {
    const res = await api("GET", offerPath());
    if (res.status === 200) state.offer = res.data;
    const offer = state.offer;
    if (offer.status === "accepted" && offer.new_booking_id) {
      const b = await api("GET", "/v1/bookings/" + encodeURIComponent(offer.new_booking_id));
      state.newBooking = b.status === 200 ? b.data : null;
    } else if (offer.status === "open" && state.me.role === "client") {
      const s = await api("GET", offerPath() + "/slots");
      state.slots = s.status === 200 ? s.data : { slots: [], proposals: [] };
    }
    render();
  }

  // --- rendering -------------------------------------------------------------------------------
  function applyLanguage() {
    document.documentElement.lang = lang;
    document.documentElement.dir = I18N[lang].dir;
    $("lang").value = lang;
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    document.title = t("title");
    render();
  }

  function timeButton(item) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "when";
    b.dataset.startsAt = item.starts_at;
    b.textContent = timeOf(item.starts_at);
    b.setAttribute("aria-label", when(item.starts_at));
    b.addEventListener("click", () => {
      state.chosen = item.starts_at;
      state.message = null;
      render();
      $("confirm-btn").focus(); // the list is gone: keyboard and screen reader users land on the confirmation
    });
    li.append(b);
    return li;
  }

  function render() {
    const msg = $("message");
    msg.hidden = !state.message;
    msg.textContent = state.message ? t(state.message) : "";
    msg.className = "message" + (state.messageKind === "info" ? " info" : "");
    ["choose", "confirm", "propose", "done"].forEach((id) => { $(id).hidden = true; });
    $("deadline").textContent = "";
    $("zone").textContent = "";
    $("waiting").textContent = "";
    if (state.fatal) { $("explain").textContent = t(state.fatal); return; }
    const offer = state.offer;
    if (!offer || !state.me) { $("explain").textContent = t("loading"); return; }
    const role = state.me.role;
    const explain = role === "client" ? "explain_client" : role === "practitioner" ? "explain_practitioner"
      : "explain_staff";
    const settled = offer.status !== "open";
    $("explain").textContent = t(settled ? "explain_done" : explain, { when: when(offer.original_starts_at) });
    $("zone").textContent = t("zone", { zone });
    if (offer.status === "expired") { $("deadline").textContent = t("expired"); return; }
    if (offer.status === "accepted") {
      $("done").hidden = false;
      const b = state.newBooking;
      const mine = role === "client" ? "done" : "done_other";
      $("done-text").textContent = b ? t(mine, { when: when(b.starts_at) }) : t("err_offer_used");
      $("free-done").hidden = role !== "client";
      const link = $("room-link");
      link.hidden = !b;
      if (b) link.href = "/room/" + encodeURIComponent(b.id) + "?lang=" + lang + "#token=" + encodeURIComponent(token);
      return;
    }
    $("deadline").textContent = t(role === "client" ? "deadline" : "deadline_practitioner",
      { when: when(offer.expires_at) });
    if (role === "client") renderClient(); else if (role === "practitioner") renderPractitioner();
  }

  function renderClient() {
    if (state.chosen) {
      $("confirm").hidden = false;
      $("confirm-text").textContent = t("confirm_text", { when: when(state.chosen) });
      $("confirm-btn").disabled = state.busy;
      $("confirm-btn").textContent = state.busy ? t("sending") : t("confirm");
      return;
    }
    $("choose").hidden = false;
    const found = state.slots || { slots: [], proposals: [] };
    const proposals = $("proposals");
    proposals.replaceChildren(...found.proposals.map((p) => {
      const li = timeButton(p);
      li.firstChild.textContent = when(p.starts_at);
      return li;
    }));
    $("proposed-block").hidden = found.proposals.length === 0;
    const days = new Map();
    for (const s of found.slots) {
      const key = dayKey(s.starts_at);
      if (!days.has(key)) days.set(key, []);
      days.get(key).push(s);
    }
    const all = [...days.values()];
    $("slots").replaceChildren(...all.slice(0, state.daysShown).map((items) => {
      const box = document.createElement("div");
      box.className = "day";
      const h = document.createElement("h4");
      h.textContent = dayOf(items[0].starts_at);
      const ul = document.createElement("ul");
      ul.className = "times";
      ul.append(...items.map(timeButton));
      box.append(h, ul);
      return box;
    }));
    $("more-days").hidden = all.length <= state.daysShown;
    $("no-slots").hidden = found.slots.length > 0 || found.proposals.length > 0;
  }

  // The practitioner picks each time as a day and an hour from two lists written in the page's language:
  // a date input would show the browser's own format (mm/dd/yyyy in an American browser), whatever the
  // page's language. Days run from today (or the offer's start) to the offer's last day, in the viewer's
  // zone; hours every quarter of an hour. The server checks the lead time and the offer's end.
  const HOUR_STEP_MIN = 15;
  const pad = (n) => String(n).padStart(2, "0");
  const dayValue = (d) => d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());

  function offeredDays() {
    const from = new Date(Math.max(Date.now(), new Date(state.offer.offered_at).getTime()));
    const last = new Date(new Date(state.offer.expires_at).getTime() - 60 * 1000);
    const days = [];
    // local noon of each day: the date arithmetic of the viewer's zone, clear of daylight-saving edges
    for (let d = new Date(from.getFullYear(), from.getMonth(), from.getDate(), 12); d <= last || dayValue(d) === dayValue(last);
      d = new Date(d.getFullYear(), d.getMonth(), d.getDate() + 1, 12)) {
      days.push(d);
      if (days.length > 366) break;
    }
    return days;
  }

  function fillSelect(select, placeholder, items) {
    const kept = select.value;
    const none = document.createElement("option");
    none.value = "";
    none.textContent = placeholder;
    select.replaceChildren(none, ...items.map(([value, label]) => {
      const o = document.createElement("option");
      o.value = value;
      o.textContent = label;
      return o;
    }));
    if (items.some(([value]) => value === kept)) select.value = kept;
  }

  function renderChoices() {
    const days = offeredDays();
    const shown = lang + "|" + (days.length ? dayValue(days[0]) + "|" + dayValue(days[days.length - 1]) : "");
    const form = $("propose-form");
    if (form.dataset.shown === shown) return;
    form.dataset.shown = shown;
    const dayItems = days.map((d) => [dayValue(d), format(d.toISOString(), { weekday: "long", day: "numeric",
      month: "long" })]);
    const hourItems = [];
    for (let m = 0; m < 24 * 60; m += HOUR_STEP_MIN) {
      const at = new Date(2000, 0, 1, Math.floor(m / 60), m % 60);
      hourItems.push([pad(Math.floor(m / 60)) + ":" + pad(m % 60), timeOf(at.toISOString())]);
    }
    for (const n of [1, 2, 3]) {
      fillSelect(form.elements["d" + n], t("choose_day"), dayItems);
      fillSelect(form.elements["h" + n], t("choose_hour"), hourItems);
    }
  }

  function renderPractitioner() {
    $("propose").hidden = false;
    $("waiting").textContent = t("waiting_client");
    renderChoices();
    const mine = state.offer.proposals || [];
    $("my-proposals").replaceChildren(...mine.map((p) => {
      const li = document.createElement("li");
      li.className = "when";
      li.textContent = when(p.starts_at);
      return li;
    }));
    $("no-proposals").hidden = mine.length > 0;
  }

  // --- actions ---------------------------------------------------------------------------------
  async function confirmChoice() {
    if (state.busy || !state.chosen) return;
    state.busy = true;
    render();
    const res = await api("POST", "/v1/bookings/" + encodeURIComponent(bookingId) + "/reschedule",
      { starts_at: state.chosen });
    state.busy = false;
    state.chosen = null;
    if (res.status === 201) {
      state.offer = res.data.offer;
      state.newBooking = res.data.booking;
      state.message = null;
      return render();
    }
    say(errorKey(res));
    await refresh();
  }

  async function sendProposals(ev) {
    ev.preventDefault();
    const form = ev.target;
    if (state.busy) return;
    const rows = [1, 2, 3].map((n) => [form.elements["d" + n].value, form.elements["h" + n].value]);
    // a day without its hour (or an hour without its day) is said, in the page's language, not guessed
    if (rows.some(([day, hour]) => Boolean(day) !== Boolean(hour))) { say("err_incomplete_time"); return render(); }
    // the day and the hour in the viewer's own zone, as an instant
    const times = rows.filter(([day]) => day).map(([day, hour]) => new Date(day + "T" + hour).toISOString());
    if (!times.length) { say("err_choose_time"); return render(); }
    state.busy = true;
    const res = await api("PUT", offerPath() + "/proposals", { times });
    state.busy = false;
    if (res.status === 200) {
      state.offer = res.data;
      say("proposals_sent", "info");
      form.reset();  // every list back to its first line ("choose a day", "choose an hour")
    } else {
      say(errorKey(res));
    }
    render();
  }

  $("confirm-btn").addEventListener("click", confirmChoice);
  $("back-btn").addEventListener("click", () => { state.chosen = null; render(); });
  $("more-days").addEventListener("click", () => { state.daysShown += DAYS_AT_ONCE; render(); });
  $("propose-form").addEventListener("submit", sendProposals);
  // what the lists' words asked for is being done: they are not left on screen meanwhile
  $("propose-form").addEventListener("change", () => {
    if (state.message === "err_incomplete_time" || state.message === "err_choose_time") {
      state.message = null;
      render();
    }
  });
  $("lang").addEventListener("change", (ev) => {
    lang = ev.target.value;
    PAGE.rememberLanguage("room", lang);
    applyLanguage();
  });
  window.rescheduleDebug = { state: () => state };
  applyLanguage();
  load().catch(() => { state.fatal = "err_generic"; render(); });
})();
