// Outages on the room page: what the page says when media between the two parties breaks, and the
// practitioner's "technical problem: end and reschedule". Kept apart from room.js: it listens to the
// room's socket (every WebSocket the page opens is watched for `outage` and `joined` messages) and adds
// its own banner above the videos. A page that comes in or back during an outage is told of it right
// after `joined`, so a reload shows the banner again. Loaded before room.js so that the first socket is
// watched too. Whenever what it shows changes it says so with a `room:outage` event on window
// (`detail`: `ongoing`, the `side` it blames, and the session's `final` verdict once there is one), so
// that room.js's stage line tells the same story.
(() => {
  "use strict";
  const WORDS = window.ROOM_I18N_OUTAGE || {};
  const Native = window.WebSocket;
  const state = { ws: null, role: null, outage: null, final: null, reported: false, resolvedTimer: 0 };

  class WatchedSocket extends Native {
    constructor(...args) {
      super(...args);
      state.ws = this;
      this.addEventListener("message", (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch (_) { return; }
        if (msg && msg.type === "joined" && msg.you) {
          state.role = msg.you.role;
          // the server follows `joined` with the outage going on, if any: one shown from before this
          // socket may have ended while the page was away
          if (state.outage && !state.outage.resolved) state.outage = null;
          render();
        }
        if (msg && msg.type === "outage") onOutage(msg);
      });
    }
  }
  window.WebSocket = WatchedSocket;

  function lang() {
    const l = document.documentElement.lang;
    return WORDS[l] ? l : "ar";
  }

  function t(key, vars) {
    const text = (WORDS[lang()] && WORDS[lang()][key]) || (WORDS.en && WORDS.en[key]) || key;
    return text.replace(/\{(\w+)\}/g, (_, k) => (vars && vars[k] != null ? vars[k] : ""));
  }

  function onOutage(msg) {
    clearTimeout(state.resolvedTimer);
    if (msg.state === "ongoing") {
      state.outage = { since: msg.since, side: msg.side, givesUpAt: msg.gives_up_at, resolved: false };
    } else if (msg.state === "resolved") {
      state.outage = { resolved: true };
      closeDialog();
      state.resolvedTimer = setTimeout(() => { state.outage = null; render(); }, 6000);
    } else if (msg.state === "ended") {
      state.final = msg.verdict;
      state.outage = null;
      closeDialog();
    }
    render();
  }

  function sideText(side) {
    const mine = (side === "client_connection" && state.role === "client")
      || (side === "practitioner_connection" && state.role === "practitioner");
    if (mine) return t("side_mine");
    if (side === "client_connection") return t("side_client");
    if (side === "practitioner_connection") return t("side_practitioner");
    if (side === "platform") return t("side_platform");
    return t("side_unknown");
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString(document.documentElement.lang || "ar",
      { hour: "2-digit", minute: "2-digit" });
  }

  let box = null;
  function banner() {
    if (box) return box;
    box = document.createElement("div");
    box.id = "outage";
    box.className = "outage";
    box.setAttribute("role", "alert");
    box.hidden = true;
    // under the page's header, outside the room's view: still shown once the room has closed
    const header = document.querySelector("body > header");
    if (header) header.after(box);
    else document.body.prepend(box);
    return box;
  }

  function line(text, cls) {
    const p = document.createElement("p");
    if (cls) p.className = cls;
    p.textContent = text;
    return p;
  }

  function endButton() {
    const b = document.createElement("button");
    b.type = "button";
    b.id = "outage-end";
    b.className = "warn";
    b.textContent = t("end_button");
    b.addEventListener("click", confirmEnd);
    return b;
  }

  // Ending a session cannot be undone and ends it for both: it is asked in a dialog of its own, whose
  // "end" answer does nothing for a moment after it opens, so a double click on the banner's button (or a
  // tap that lands twice) never ends a session by itself. Keeping the session is the answer in focus, and
  // stays open to the end: a request that could not go, or that has no answer after a while, says so and
  // may be sent again (the server ends a session once however often it is asked).
  let dialog = null;
  let waiting = 0;
  const CONFIRM_DELAY_MS = 800;
  const ANSWER_WAIT_MS = 10_000;
  function closeDialog() {
    clearTimeout(waiting);
    if (dialog && dialog.open) dialog.close();
  }
  function confirmEnd() {
    if (!dialog) {
      dialog = document.createElement("dialog");
      dialog.id = "confirm-end";
      dialog.setAttribute("aria-labelledby", "confirm-end-title");
      dialog.setAttribute("aria-describedby", "confirm-end-text");
      dialog.addEventListener("close", () => clearTimeout(waiting));
      document.body.append(dialog);
    }
    const title = document.createElement("h2");
    title.id = "confirm-end-title";
    title.textContent = t("end_dialog_title");
    const text = line(t("end_dialog_text"));
    text.id = "confirm-end-text";
    const said = line("", "outage-small");
    said.id = "confirm-end-status";
    said.setAttribute("role", "status");
    const keep = document.createElement("button");
    keep.type = "button";
    keep.id = "confirm-end-keep";
    keep.textContent = t("end_keep");
    keep.addEventListener("click", closeDialog);
    const yes = document.createElement("button");
    yes.type = "button";
    yes.id = "confirm-end-yes";
    yes.className = "danger";
    yes.textContent = t("end_confirm");
    yes.disabled = true;
    setTimeout(() => { yes.disabled = false; }, CONFIRM_DELAY_MS);
    yes.addEventListener("click", () => {
      const ws = state.ws;
      if (!ws || ws.readyState !== Native.OPEN) { said.textContent = t("end_not_sent"); return; }
      ws.send(JSON.stringify({ type: "session.end_technical", id: "end-" + Date.now().toString(36) }));
      yes.disabled = true;
      said.textContent = t("end_sending");
      clearTimeout(waiting);
      waiting = setTimeout(() => { yes.disabled = false; said.textContent = t("end_no_answer"); }, ANSWER_WAIT_MS);
    });
    const actions = document.createElement("div");
    actions.className = "dialog-actions";
    actions.append(keep, yes);
    dialog.replaceChildren(title, text, said, actions);
    if (!dialog.open) dialog.showModal();
    keep.focus();
  }

  // One truth on the page: the stage line (room.js) follows what this banner says.
  let announced = "";
  function announce() {
    const o = state.outage;
    const ongoing = Boolean(o && !o.resolved && !state.final);
    const detail = { ongoing, side: ongoing ? o.side : null, final: state.final || null };
    const key = JSON.stringify(detail);
    if (key === announced) return;
    announced = key;
    window.dispatchEvent(new CustomEvent("room:outage", { detail }));
  }

  function render() {
    announce();
    const el = banner();
    el.replaceChildren();
    if (state.final) {
      el.dataset.state = state.final === "interrupted" ? "interrupted" : "ended";
      el.append(line(t("ended_" + state.final), "outage-title"));
      el.hidden = false;
      return;
    }
    const o = state.outage;
    if (o && o.resolved) {
      el.dataset.state = "resolved";
      el.append(line(t("resolved"), "outage-title"));
      el.hidden = false;
      return;
    }
    if (o) {
      el.dataset.state = "ongoing";
      el.append(line(t("ongoing_title"), "outage-title"), line(sideText(o.side)), line(t("keep_trying")));
      if (o.givesUpAt) el.append(line(t("gives_up", { time: clock(o.givesUpAt) }), "outage-small"));
    }
    // the practitioner may end a broken session: while an outage is shown, or after reporting a problem
    if (state.role === "practitioner" && (o || state.reported)) el.append(endButton());
    el.hidden = el.childElementCount === 0;
  }

  // The demo of an outage (`session-server --demo-cut-after N`): the client's link carries ?demo_cut=N and
  // this page stops sending its camera and microphone N seconds after its media connected, as a dropped
  // network would.
  const demoCut = Number(new URLSearchParams(location.search).get("demo_cut") || 0);
  if (demoCut > 0) {
    let armed = false;
    const watch = setInterval(() => {
      const debug = window.roomDebug;
      const pc = debug && debug.pc && debug.pc();
      if (!state.role || !pc || pc.connectionState !== "connected" || armed) return;
      armed = true;
      clearInterval(watch);
      setTimeout(() => { pc.getSenders().forEach((s) => s.replaceTrack(null)); }, demoCut * 1000);
    }, 500);
  }

  window.addEventListener("room:problem-report", () => { state.reported = true; render(); });
  // the language switch changes <html lang>: say the same again in the new language
  new MutationObserver(render).observe(document.documentElement, { attributes: true, attributeFilter: ["lang"] });
})();
