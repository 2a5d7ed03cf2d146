// A client's complaint about one of their sessions (docs/ledger.md, "Complaints"): the reasons from a fixed
// list and, if they wish, their own words (kept encrypted); then what became of it. One complaint per
// session: once filed, the page shows its status instead of the form (upheld: where its refund is). The
// session's practitioner, on the same page, follows it: what of their payment is held or came back, and the
// client's words once an administrator shares them (the statement links its holds here).
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const I18N = window.COMPLAINT_I18N;
  const REASONS = ["practitioner_late", "practitioner_absent", "session_cut_short", "conduct", "technical_problem",
    "billing", "other"];
  const MAX = 4000;
  const CLOSING_S = 15 * 60; // a session is closed (and its payment settled) about this long after its end
  const bookingId = decodeURIComponent(location.pathname.split("/").pop() || "");
  const storeKey = "complaint:" + bookingId;

  const token = PAGE.token(storeKey);
  const who = token ? PAGE.claims(token) : null;
  const practitioner = Boolean(who && who.role === "practitioner");
  let lang = PAGE.language(I18N, "complaint");
  const words = PAGE.translator(I18N);
  const t = (key, vars) => words(lang, key, vars);
  const when = (ms) => new Intl.DateTimeFormat(PAGE.locale(lang), { dateStyle: "full", timeStyle: "short" })
    .format(new Date(ms));
  const money = (minor, currency) => PAGE.money(lang, minor, currency);

  // --- state ---------------------------------------------------------------------------------------
  let booking = null;
  let complaint = null;
  let refund = null; // an upheld complaint's refund, as the client sees it (on its way, made, sent again)
  let notice = null; // [key, vars, final]: what the page says above the form (or instead of it)
  let busy = false;
  let retry = null;

  const api = (path, options) => fetch(path, { cache: "no-store", ...options,
    headers: { Authorization: "Bearer " + token, ...(options && options.headers) } });

  function say(key, vars, final) {
    notice = key ? [key, vars || {}, Boolean(final)] : null;
    document.body.dataset.state = key || "ready";
    render();
  }

  async function load() {
    clearTimeout(retry);
    if (!token) { say("err_no_token", {}, true); return; }
    if (who && who.role !== "client" && who.role !== "practitioner") { say("err_role", {}, true); return; }
    try {
      const res = await api(`/v1/bookings/${encodeURIComponent(bookingId)}`);
      if (res.status === 401) { say("err_token", {}, true); return; }
      if (res.status === 403 || res.status === 404 || res.status === 422) { say("not_yours", {}, true); return; }
      if (!res.ok) throw new Error(String(res.status));
      booking = await res.json();
      const list = await api("/v1/complaints?limit=500");
      if (!list.ok) throw new Error(String(list.status));
      complaint = (await list.json()).complaints.find((c) => c.booking_id === bookingId) || null;
      refund = null;
      if (complaint && !practitioner && complaint.status === "upheld") {
        const refunds = await api("/v1/ledger/refunds?limit=500");
        if (!refunds.ok) throw new Error(String(refunds.status));
        refund = (await refunds.json()).refunds.find((r) => r.complaint_id === complaint.id) || null;
      }
      if (complaint && practitioner) {
        // one at a time, with the client's words if an administrator shared them
        const one = await api(`/v1/complaints/${encodeURIComponent(complaint.id)}`);
        if (!one.ok) throw new Error(String(one.status));
        complaint = await one.json();
      }
    } catch (e) {
      say("err_unavailable");
      retry = setTimeout(load, 10_000);
      return;
    }
    if (!complaint && practitioner) { say("p_none", {}, true); return; }
    if (!complaint && (booking.status === "confirmed" || booking.status === "in_session")) {
      say("not_yet", { time: when(Date.parse(booking.ends_at) + CLOSING_S * 1000) }, true);
      return;
    }
    if (!complaint && (booking.status === "interrupted" || booking.status === "rescheduled")) {
      // stopped by a technical problem: nothing was paid out for it, the session is held again at no cost
      say("interrupted", {}, true);
      return;
    }
    say(null);
  }

  async function send(event) {
    event.preventDefault();
    if (busy) return;
    const chosen = document.querySelector('input[name="reason"]:checked');
    if (!chosen) {
      say("choose_reason");
      document.querySelector('input[name="reason"]').focus();
      return;
    }
    const text = $("text").value.trim();
    busy = true;
    render();
    let res = null;
    try {
      res = await api(`/v1/bookings/${encodeURIComponent(bookingId)}/complaints`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(text ? { reason: chosen.value, text } : { reason: chosen.value }) });
    } catch (e) {
      res = null;
    }
    busy = false;
    const problem = res && !res.ok ? await res.json().catch(() => ({})) : {};
    if (res && res.ok) {
      complaint = await res.json();
      $("text").value = "";
      cut = false;
      say(null);
    } else if (res && res.status === 401) {
      say("err_token", {}, true);
    } else if (problem.code === "already_complained") {
      await load();
    } else if (problem.code === "session_not_settled") {
      say("not_yet_soon");
    } else if (problem.code === "complaint_window_closed") {
      say("window_closed", {}, true);
    } else if (problem.code === "booking_not_found" || problem.code === "permission_denied") {
      say("not_yours", {}, true);
    } else {
      say("err_unavailable"); // the words stay in the form: nothing is lost
    }
  }

  // --- rendering -----------------------------------------------------------------------------------
  function renderReasons() {
    const checked = (document.querySelector('input[name="reason"]:checked') || {}).value;
    $("reasons").replaceChildren(...REASONS.map((reason) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio";
      input.name = "reason";
      input.value = reason;
      input.checked = reason === checked;
      label.append(input, document.createTextNode(t("reason_" + reason)));
      return label;
    }));
  }

  function render() {
    document.documentElement.lang = lang;
    document.documentElement.dir = I18N[lang].dir;
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    document.title = t("title");
    $("lang").value = lang;
    $("session").textContent = booking ? t("session_of", { time: when(Date.parse(booking.starts_at)) }) : "";
    $("notice").hidden = !notice;
    $("notice").textContent = notice ? t(notice[0], notice[1]) : "";
    const final = notice && notice[2];
    $("form").hidden = Boolean(final || complaint || !booking);
    $("status").hidden = !complaint;
    renderCount();
    $("send").disabled = busy;
    $("send").textContent = t(busy ? "sending" : "send");
    if (complaint) {
      const c = complaint;
      $("status").dataset.status = c.status;
      $("status").dataset.side = practitioner ? "practitioner" : "client";
      if (practitioner) {
        renderForPractitioner(c);
      } else {
        $("status-title").textContent = t("status_" + c.status);
        $("status-text").textContent = c.status === "upheld"
          ? (c.refund_minor != null ? t("status_upheld_text", { amount: money(c.refund_minor, c.currency) }) : t("status_upheld_all"))
          : t("status_" + c.status + "_text");
      }
      renderRefund(c);
      $("filed-on").textContent = when(Date.parse(c.filed_at));
      $("filed-reason").textContent = t("reason_" + c.reason);
    }
  }

  // Where the client's refund is: on its way (made by the ledger, or handed to the payment service), reached
  // them, or not through yet (the payment service could not make it: the administration follows it up).
  function renderRefund(c) {
    const shown = !practitioner && c.status === "upheld" && (c.refund_minor == null || c.refund_minor > 0);
    $("refund-state").hidden = !shown;
    if (!shown) return;
    $("refund-state").dataset.refund = refund ? refund.status : "coming";
    $("refund-state").textContent = refund && refund.status === "paid"
      ? t("refund_made", { date: new Intl.DateTimeFormat(PAGE.locale(lang), { dateStyle: "long" })
        .format(new Date(refund.answered_at)) })
      : t(refund && refund.status === "failed" ? "refund_retrying" : "refund_on_way");
  }

  // The practitioner's side of the complaint: what of their payment is held, or came back to them, and the
  // client's words once an administrator shared them (the server sends them only then).
  function renderForPractitioner(c) {
    const held = c.held_minor;
    $("status-title").textContent = t("p_" + c.status);
    if (c.status === "open") {
      $("status-text").textContent = held == null ? t("p_open_pending") : t("p_open_text", { amount: money(held, c.currency) });
    } else if (c.status === "upheld") {
      $("status-text").textContent = t("p_upheld_text", { refund: money(c.refund_minor || 0, c.currency),
                                                          rest: money((held || 0) - (c.refund_minor || 0), c.currency) });
    } else {
      $("status-text").textContent = t("p_rejected_text", { amount: money(held || 0, c.currency) });
    }
    $("words-box").hidden = false;
    $("words").textContent = c.text != null ? c.text : t(c.has_text ? "p_not_shared" : "p_no_text");
    $("words").classList.toggle("none", c.text == null);
  }

  // a reason chosen answers "choose a reason": that notice goes (it would read as if none were chosen)
  $("reasons").addEventListener("change", () => { if (notice && notice[0] === "choose_reason") say(null); });

  $("lang").addEventListener("change", (e) => {
    lang = e.target.value;
    PAGE.rememberLanguage("complaint", lang);
    renderReasons();
    render();
  });
  // the box keeps at most MAX characters: text pasted beyond that is cut, and the page says so
  let cut = false;
  function renderCount() {
    $("text-count").textContent = t(cut ? "count_cut" : "count", { n: $("text").value.length, max: MAX });
    $("text-count").classList.toggle("warn", cut);
    // said once to a screen reader when it happens (the count itself changes with every key)
    const told = cut ? t("count_cut", { n: MAX, max: MAX }) : "";
    if ($("text-cut").textContent !== told) $("text-cut").textContent = told;
  }
  $("text").addEventListener("paste", (e) => {
    const box = e.target;
    // (a textarea keeps a line break as one character, where a pasted Windows text has two)
    const pasted = ((e.clipboardData && e.clipboardData.getData("text")) || "").replace(/\r\n/g, "\n");
    const kept = box.value.length - (box.selectionEnd - box.selectionStart);
    cut = kept + pasted.length > MAX;
  });
  $("text").addEventListener("input", () => {
    if ($("text").value.length < MAX) cut = false;
    renderCount();
  });
  // words not sent yet are only in this page: the browser asks before a reload or a close loses them
  window.addEventListener("beforeunload", (e) => {
    if ($("text").value.trim() && !complaint && !$("form").hidden) {
      e.preventDefault();
      e.returnValue = "";
    }
  });
  $("form").addEventListener("submit", send);

  renderReasons();
  render();
  load();
})();
