// The session room page: signaling over one WebSocket (protocol v1, see docs/protocol.md), video
// through the server's SFU (`sfu` mode: one peer connection to the server) or directly between the two
// browsers (`relay` mode), chat that survives reconnects. No build step, no dependencies.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const I18N = window.ROOM_I18N;
  const bookingId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const storeKey = "room:" + bookingId;
  // Close codes after which reconnecting cannot help (see docs/protocol.md). 4425 (not open yet) is not
  // one of them: the page comes back by itself when the room opens.
  const CLOSE_FINAL = { 4401: "err_token", 4403: "err_not_a_party", 4404: "err_room_not_found",
    4409: "err_replaced", 4410: "err_room_closed", 4429: "err_too_many" };
  const CLOSE_NOT_OPEN = 4425;
  // The server's data store did not answer (a Redis outage): the page says so and tries again after the
  // pause the refusal's `retry_after_s` gives.
  const CLOSE_TRY_AGAIN_LATER = 1013;
  const CLOSING_FINAL = { session_over: "err_session_over", booking_cancelled: "err_booking_cancelled",
    practitioner_suspended: "err_practitioner_suspended", booking_ended: "err_booking_ended",
    booking_rescheduled: "err_booking_rescheduled", session_ended: "err_session_over" };
  // A long wait for the room to open is checked again now and then (the booking may move meanwhile).
  const NOT_OPEN_RECHECK_MS = 5 * 60 * 1000;

  // --- the token: read once from the fragment, then kept off the address bar -------------------
  let token = null;
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    token = fragment.get("token");
    sessionStorage.setItem(storeKey + ":token", token);
    history.replaceState(null, "", location.pathname + location.search);
  } else {
    token = sessionStorage.getItem(storeKey + ":token");
  }

  // The role the token states (read, not trusted: the server decides what the role may do).
  const ROLE = ((token && PAGE.claims(token)) || {}).role || "";
  const STAFF = ROLE === "support" || ROLE === "admin";

  // --- language --------------------------------------------------------------------------------
  const query = new URLSearchParams(location.search);
  let lang = query.get("lang") || localStorage.getItem("room:lang") || (navigator.language || "ar").slice(0, 2);
  if (!I18N[lang]) lang = "ar";

  function t(key, vars) {
    const text = (I18N[lang] && I18N[lang][key]) || I18N.en[key] || key;
    return text.replace(/\{(\w+)\}/g, (_, k) => (vars && vars[k] != null ? vars[k] : ""));
  }

  function applyLanguage() {
    document.documentElement.lang = lang;
    document.documentElement.dir = I18N[lang].dir;
    $("lang").value = lang;
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => {
      el.placeholder = t(el.dataset.i18nPlaceholder);
    });
    document.title = t("title");
    renderAll();
    renderNotice();
  }

  // --- state -----------------------------------------------------------------------------------
  const state = {
    ws: null, conn: "connecting", me: null, room: null, participants: new Map(), lastSeq: 0,
    joinedOnce: false, iceServers: [], heartbeatS: 10, lastHeard: 0, retry: 0, final: null, verdict: null, talked: false,
    unacked: new Map(), myMessages: new Map(), delivered: 0, typing: new Map(), docs: new Map(),
    pc: null, pendingCandidates: [], localStream: null, mic: true, cam: true, left: false,
    typingSent: 0, typingTimer: null,
    // what the person sees: connecting, lobby (device check before entering), room, ended (left, may
    // rejoin), not_open (comes back by itself at opensAt), final (an error nothing on the page can mend)
    view: "connecting", entered: false, mode: "full", audioOnly: false, opensAt: 0, openTimer: null,
    devices: { checked: false, camera: false, microphone: false, denied: false }, leftAt: 0, peerLeft: null,
    suggestDismissed: false, soundBlocked: false, notice: null, meter: null, tone: null,
    // sfu mode: the one peer connection to the server, the offer awaiting its answer, what was pushed
    mediaMode: "relay", offerId: null, remoteStream: null, rebuildTimer: null, lastBuild: 0,
    quality: new Map(), mediaStates: new Map(),
    // what the outage banner (outage.js) shows: an outage going on ({ side }) or none
    outage: null,
    // the service is briefly unavailable: { seconds } until the next try, `trying` once it has begun
    unavailable: null, unavailableRetryS: null,
  };

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
    return Math.random().toString(16).slice(2) + Date.now().toString(16);
  }

  function send(msg) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
    if (!msg.id) msg.id = newId();
    state.ws.send(JSON.stringify(msg));
    return true;
  }

  function peer() {
    if (!state.me) return null;
    const want = state.me.role === "client" ? "practitioner" : state.me.role === "practitioner" ? "client" : null;
    for (const p of state.participants.values()) if (p.role === want) return p;
    return null;
  }

  // A short message at the bottom; kept as a key so that it follows the language switch while shown.
  function notice(key, vars) {
    const shown = { key, vars };
    state.notice = shown;
    renderNotice();
    setTimeout(() => { if (state.notice === shown) { state.notice = null; renderNotice(); } }, 6000);
  }

  function renderNotice() {
    const el = $("notice");
    // on the gate ("connecting") the words about a service briefly away are its text; elsewhere they stay
    // here until the page is back in
    const away = state.unavailable && state.view !== "connecting" ? unavailableText() : "";
    el.textContent = away || (state.notice ? t(state.notice.key, state.notice.vars) : "");
    el.hidden = !el.textContent;
  }

  // Said once when the pause begins and once when the new try begins: no ticking countdown to hear.
  // Under its own title (the gate) it leaves out the sentence the title already says.
  function unavailableText(titled) {
    const u = state.unavailable;
    if (!u) return "";
    const suffix = titled ? "_next" : "";
    if (u.trying) return t("unavailable_trying" + suffix);
    const delay = new Intl.NumberFormat(locale(), { style: "unit", unit: "second", unitDisplay: "long",
      maximumFractionDigits: 0 }).format(u.seconds);
    return t("unavailable_wait" + suffix, { delay });
  }

  // --- rendering -------------------------------------------------------------------------------
  function renderAll() {
    renderGate(); renderConn(); renderWaiting(); renderMedia(); renderRemote(); renderLocal(); renderParticipants();
    renderControls();
    renderTyping(); renderDocs();
    document.querySelectorAll("#messages li").forEach(renderMessageMeta);
  }

  function renderConn() {
    const el = $("conn");
    el.dataset.state = state.conn;
    // an error is said once, on the page itself; the status only says that the page is not connected
    el.textContent = t("state_" + (state.final ? "closed" : state.conn));
    // nothing is wrong while the room waits to open; an error is said by the page itself, once
    el.hidden = state.view === "not_open" || state.view === "final" || state.view === "ended";
  }

  function renderWaiting() {
    const el = $("waiting");
    if (!state.me || state.final) { el.textContent = state.final ? t(state.final) : ""; el.dataset.waiting = "no"; return; }
    if (state.left) { el.textContent = t("left"); return; }
    const other = peer();
    let text;
    if (state.outage && mediaParty()) {
      // the outage banner (outage.js) says the connection between the two is cut: never "waiting" here
      text = other ? t("outage_with", { name: other.name }) : t("outage_between");
    } else if (!other && state.peerLeft) {
      text = t("peer_left_at", { name: state.peerLeft.name, time: clock(state.peerLeft.at) });
    } else if (state.me.role === "client" || state.me.role === "practitioner") {
      // "in session" once the media connected while the other was here (and from then on, through a
      // rebuilt connection), or in the chat only; before that the other is here, perhaps still checking
      // their camera, not yet talking
      if (other && state.pc && state.pc.connectionState === "connected") state.talked = true;
      const together = state.talked || state.mode === "chat";
      const client = state.me.role === "client";
      text = !other ? t(client ? "waiting_for_practitioner" : "waiting_for_client")
        : other.state === "reconnecting" ? t("peer_reconnecting", { name: other.name })
          : together ? t("in_session")
            : t(client ? "expected_here" : "client_waiting", { name: other.name });
    } else {
      text = t("staff_view");
    }
    el.textContent = text;
    el.dataset.waiting = other ? "no" : "yes";
    const p = peer();
    $("remote-name").textContent = p ? p.name : "";
    $("remote-flags").textContent = p ? flags(p).join(" · ") : "";
  }

  // What the other person can and cannot send, in words: said to the other party, not only drawn.
  function flags(p) {
    const out = [];
    if (p.microphone === false) out.push(t("no_microphone_flag"));
    else if (!p.audio) out.push(t("muted"));
    if (p.audio_only) out.push(t("audio_only_flag"));
    else if (p.camera === false) out.push(t("no_camera_flag"));
    else if (!p.video) out.push(t("camera_off"));
    return out;
  }

  // The other person's tile: their video when there is some to show, otherwise why not (never a frozen
  // last frame), and the "turn on the sound" button when the browser blocked playing it with sound.
  function renderRemote() {
    const v = $("remote-video");
    const p = peer();
    let why = "";
    if (state.mode === "chat") why = t("placeholder_chat_only");
    else if (state.audioOnly) why = t("placeholder_audio_only");
    else if (!p) why = state.peerLeft ? t("placeholder_left", { name: state.peerLeft.name }) : t("placeholder_nobody");
    else if (state.outage) why = t("placeholder_outage", { name: p.name });
    else if (p.audio_only) why = t("placeholder_audio_only");
    else if (p.camera === false) why = t("placeholder_no_camera", { name: p.name });
    else if (!p.video) why = t("placeholder_camera_off", { name: p.name });
    const ph = $("remote-placeholder");
    ph.textContent = why;
    ph.hidden = !why || !mediaParty();
    if (!p && v.srcObject) { v.srcObject = null; }  // they left: nothing of them stays on screen
    v.style.visibility = why ? "hidden" : "visible";
    $("start-sound").hidden = !state.soundBlocked || !p || state.mode === "chat";
  }

  // The remote stream plays with sound when the browser lets it; when it does not (no click on the page
  // yet, and no camera or microphone of ours in use), it plays muted and the page offers a button.
  function playRemote() {
    const v = $("remote-video");
    if (!v.srcObject) return;
    v.muted = false;
    v.play().then(() => { state.soundBlocked = false; renderRemote(); }).catch((err) => {
      if (!err || err.name !== "NotAllowedError") return;  // interrupted by a newer load: that one plays
      state.soundBlocked = true;
      v.muted = true;
      v.play().catch(() => {});
      renderRemote();
    });
  }

  function attachRemote(stream) {
    const v = $("remote-video");
    if (v.srcObject !== stream) v.srcObject = stream;
    playRemote();
  }

  // --- the gate: before entering, after leaving, and when the room cannot be entered --------------
  function setView(view) {
    if (state.view === view) return;
    state.view = view;
    renderAll();
    // a screen reader hears the new screen's title; a keyboard starts from it
    const focus = view === "room" ? null : $("gate-title");
    if (focus) focus.focus({ preventScroll: true });
  }

  function renderGate() {
    const view = state.view;
    $("gate").hidden = view === "room";
    $("room").hidden = view !== "room";
    let title = "";
    let text = "";
    let whenText = "";
    const show = { enter: false, audio: false, chat: false, rejoin: false, devices: false };
    if (view === "connecting") {
      title = t(state.unavailable ? "unavailable_title" : "connecting_title");
      text = unavailableText(true);
    } else if (view === "final" && state.verdict === "interrupted" && state.final !== "err_token") {
      // stopped by a technical problem: said as it is, and that it will be held again (the way to the new
      // time follows, reschedule.js)
      title = t("stopped_title");
      text = t("stopped_text");
    } else if (view === "final") {
      title = t(state.final === "err_token" ? "err_token_title" : "closed_title");
      text = t(state.final);
    } else if (view === "not_open") {
      title = t("not_open_title");
      text = t("not_open_text", { time: when(state.opensAt) });
    } else if (view === "lobby" && state.me) {
      const other = peer();
      const role = state.me.role;
      const staff = role !== "client" && role !== "practitioner";
      title = other ? t("lobby_with", { name: other.name })
        : role === "client" ? t("lobby_with_practitioner") : role === "practitioner" ? t("lobby_with_client")
          : t("lobby_title");
      text = staff ? t("staff_view") : other ? t("expected_here", { name: other.name })
        : t(role === "client" ? "expected_practitioner" : "expected_client");
      if (state.room) whenText = t("starts_at", { time: when(state.room.starts_at * 1000) });
      show.devices = !staff;
      const d = state.devices;
      show.enter = true;
      show.audio = !staff && d.checked && d.microphone;
      show.chat = !staff;
    } else if (view === "ended") {
      title = t("left_at", { time: clock(state.leftAt) });
      const open = state.room && Date.now() < state.room.closes_at * 1000;
      text = open ? t("can_rejoin", { time: clock(state.room.closes_at * 1000) }) : t("cannot_rejoin");
      show.rejoin = Boolean(open);
    }
    $("gate-title").textContent = title;
    $("gate-text").textContent = text;
    $("gate-when").textContent = whenText;
    $("device-check").hidden = !show.devices;
    const d = state.devices;
    const enter = $("enter");
    enter.hidden = !show.enter;
    enter.textContent = mediaParty() && d.checked && !d.camera && !d.microphone ? t("enter_receive") : t("enter_full");
    $("enter-audio").hidden = !show.audio;
    $("enter-chat").hidden = !show.chat;
    $("rejoin").hidden = !show.rejoin;
    // a client whose session is over may complain about it (a page of its own, the same token)
    const complaint = $("complaint-link");
    // (not for a session stopped by a technical problem: it is held again at no cost instead)
    complaint.hidden = ROLE !== "client" || state.verdict === "interrupted"
      || !(view === "ended" || (view === "final" && state.final === "err_session_over"));
    if (!complaint.hidden) {
      complaint.href = `/complaint/${encodeURIComponent(bookingId)}?lang=${lang}#token=${encodeURIComponent(token || "")}`;
    }
    if (show.devices) {
      $("device-note").textContent = !d.checked ? t("devices_checking") : d.denied ? t("devices_denied")
        : !d.camera && !d.microphone ? t("devices_none") : !d.camera ? t("devices_no_camera")
          : !d.microphone ? t("devices_no_mic") : t("devices_ok");
      $("preview").classList.toggle("off", !d.camera);
      $("mic-level").parentElement.hidden = !d.microphone;
    }
  }

  // sfu mode: the server's quality verdict for this participant, and what it says about the media
  function renderMedia() {
    let el = $("quality");
    if (!el) {
      el = document.createElement("span");
      el.id = "quality";
      el.className = "status";
      el.setAttribute("role", "status");
      el.setAttribute("aria-live", "polite");
      $("conn").after(el);
    }
    const mine = state.me ? state.quality.get(state.me.id) : null;
    el.hidden = state.mediaMode !== "sfu" || !mine || state.view !== "room";
    el.dataset.quality = mine ? mine.quality : "";
    el.textContent = mine ? t("quality_" + mine.quality) : "";
    let banner = $("media-status");
    if (!banner) {
      banner = document.createElement("p");
      banner.id = "media-status";
      banner.className = "waiting";
      banner.setAttribute("role", "status");
      $("waiting").after(banner);
    }
    const other = peer();
    const theirs = other ? state.mediaStates.get(other.id) : null;
    const own = state.me ? state.mediaStates.get(state.me.id) : null;
    let text = "";
    if (state.mediaMode === "sfu") {
      if (theirs === "media_stopped") text = t("peer_media_stopped");
      else if (own === "media_stopped") text = t("own_media_stopped");
      else if (own === "reconnecting" || own === "failed") text = t("media_reconnecting");
    }
    banner.textContent = text;
    banner.hidden = !text;
    banner.dataset.state = theirs === "media_stopped" ? "peer_media_stopped" : own || "";
    // the server keeps finding the connection poor: offer sound only (once, until the person says no)
    $("suggest").hidden = !(mine && mine.suggest_audio_only) || state.audioOnly || state.suggestDismissed
      || state.mode === "chat";
  }

  function renderParticipants() {
    const ul = $("participants");
    ul.replaceChildren();
    for (const p of state.participants.values()) {
      const li = document.createElement("li");
      li.dataset.state = p.state;
      li.dataset.role = p.role;
      const name = document.createElement("strong");
      // staff are not given a client's name, and are not shown the client's id in its place
      name.textContent = p.name || (STAFF ? "" : p.id);
      const role = document.createElement("span");
      role.className = "role";
      role.textContent = t("role_" + p.role);
      const st = document.createElement("span");
      st.className = "pstate";
      st.textContent = t("p_" + p.state);
      li.append(name, " ", role, " ", st);
      // support staff see each party's connection: the server's quality verdict and its figures, and the
      // state of their media (what they came to help with)
      if (STAFF && (p.role === "client" || p.role === "practitioner")) {
        const q = state.quality.get(p.id);
        const net = document.createElement("span");
        net.className = "pnet";
        net.dataset.role = "staff-quality";
        const parts = [];
        if (q) {
          parts.push(t("quality_" + q.quality));
          if (q.up && q.up.rtt_ms != null) parts.push(t("staff_figures", { rtt: Math.round(q.up.rtt_ms),
            loss: Math.round((q.up.loss || 0) * 1000) / 10, kbps: Math.round((q.up.bitrate_bps || 0) / 1000) }));
        }
        const ms = state.mediaStates.get(p.id);
        if (ms) parts.push(t("staff_media_" + ms));
        net.textContent = parts.join(" · ");
        li.append(" ", net);
      }
      ul.append(li);
    }
  }

  function renderControls() {
    // the buttons say what is true: no device, or one the person did not allow, cannot be turned on
    const d = state.devices;
    const hasMic = Boolean(state.localStream && state.localStream.getAudioTracks().length);
    const hasCam = Boolean(state.localStream && state.localStream.getVideoTracks().length);
    const mic = $("toggle-mic");
    mic.textContent = hasMic ? t(state.mic ? "mic_on" : "mic_off") : t(d.denied ? "mic_blocked" : "mic_none");
    mic.disabled = !hasMic;
    mic.setAttribute("aria-pressed", String(hasMic && state.mic));
    const cam = $("toggle-cam");
    cam.textContent = hasCam ? t(state.cam ? "cam_on" : "cam_off") : t(d.denied ? "cam_blocked" : "cam_none");
    cam.disabled = !hasCam || state.audioOnly;
    cam.setAttribute("aria-pressed", String(hasCam && state.cam && !state.audioOnly));
    const ao = $("toggle-audio-only");
    ao.setAttribute("aria-pressed", String(state.audioOnly));
    ao.hidden = state.mode === "chat" || !mediaParty();
    $("start-media").hidden = state.mode !== "chat" || !mediaParty();
    mic.hidden = cam.hidden = state.mode === "chat";
    const party = state.me && (state.me.role === "client" || state.me.role === "practitioner");
    $("chat-input").disabled = !party || state.left || Boolean(state.final);
    $("chat-send").disabled = !party || state.left || Boolean(state.final);
  }

  function renderTyping() {
    const names = [...state.typing.keys()].map((id) => (state.participants.get(id) || { name: "" }).name);
    $("typing").textContent = names.length ? t("typing", { name: names.join(", ") }) : "";
  }

  const locale = () => I18N[lang].locale || lang;
  const timeFormat = () => new Intl.DateTimeFormat(locale(), { hour: "2-digit", minute: "2-digit" });
  // an hour in the viewer's own time zone (the browser's), for "left at", "opens at"
  const clock = (ms) => timeFormat().format(new Date(ms));
  // a session's start: the day too when it is not today, and the zone's name so nobody has to guess
  function when(ms) {
    const d = new Date(ms);
    const today = new Date().toDateString() === d.toDateString();
    const opts = { hour: "2-digit", minute: "2-digit", timeZoneName: "short" };
    if (!today) Object.assign(opts, { weekday: "long", day: "numeric", month: "long" });
    return new Intl.DateTimeFormat(locale(), opts).format(d);
  }

  function renderMessageMeta(li) {
    const meta = li.querySelector(".meta");
    const when = Number(li.dataset.time || Date.now());
    let status = "";
    if (li.dataset.mine === "yes") {
      if (li.dataset.seq === "") status = " · " + t("sending");
      else if (Number(li.dataset.seq) <= state.delivered) status = " · " + t("delivered");
    }
    meta.textContent = (li.dataset.mine === "yes" ? t("you") : li.dataset.name) + " · "
      + timeFormat().format(new Date(when)) + status;
  }

  function addMessage({ seq, time, senderId, name, text, ref }) {
    const ol = $("messages");
    let li = ref ? ol.querySelector(`li[data-ref="${CSS.escape(ref)}"]`) : null;
    if (seq != null && ol.querySelector(`li[data-seq="${seq}"]`)) return;
    if (!li) {
      li = document.createElement("li");
      const meta = document.createElement("div");
      meta.className = "meta";
      const body = document.createElement("div");
      body.className = "text";
      body.dir = "auto"; // each message in its own direction: English in an Arabic room reads right
      body.textContent = text;
      li.append(meta, body);
      li.dataset.ref = ref || "";
      ol.append(li);
    }
    li.dataset.seq = seq == null ? "" : String(seq);
    li.dataset.time = String(time || Date.now());
    li.dataset.name = name || "";
    li.dataset.mine = state.me && senderId === state.me.id ? "yes" : "no";
    li.className = li.dataset.mine === "yes" ? "mine" : "theirs";
    renderMessageMeta(li);
    ol.scrollTop = ol.scrollHeight;
  }

  const DOC_KINDS = { "application/pdf": "PDF", "image/jpeg": "JPEG", "image/png": "PNG", "text/plain": "TXT" };

  function docDetails(d) {
    const kind = DOC_KINDS[d.media_type] || "";
    const size = typeof d.size === "number"
      ? new Intl.NumberFormat(lang, { style: "unit", unit: d.size < 1048576 ? "kilobyte" : "megabyte",
        maximumFractionDigits: d.size < 1048576 ? 0 : 1 }).format(d.size < 1048576
        ? Math.max(1, Math.round(d.size / 1024)) : d.size / 1048576)
      : "";
    return [kind, size].filter(Boolean).join(" · ");
  }

  function renderDocs() {
    const ul = $("documents");
    // rebuilt only when the list or the language changed: a link under the pointer stays clickable
    const shown = lang + "|" + [...state.docs.keys()].join(",");
    if (ul.dataset.shown === shown) return;
    ul.dataset.shown = shown;
    ul.replaceChildren();
    for (const d of state.docs.values()) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = "#";
      a.dir = "auto"; // a name in another script than the page keeps its own direction
      a.textContent = d.name;
      a.title = t("download");
      a.addEventListener("click", (ev) => { ev.preventDefault(); download(d); });
      const details = document.createElement("span");
      details.className = "muted doc-details";
      details.textContent = docDetails(d);
      li.append(a, " ", details);
      ul.append(li);
    }
    $("no-docs").hidden = state.docs.size > 0;
  }

  // --- documents -------------------------------------------------------------------------------
  function addDocument(d) {
    if (!d || typeof d !== "object" || !d.id) return;
    state.docs.set(String(d.id), d);
    renderDocs();
  }

  async function loadDocuments() {
    // Support staff get 404 here (documents are the parties' only); shared documents also arrive live.
    const url = "/v1/bookings/" + encodeURIComponent(bookingId) + "/documents";
    try {
      const r = await fetch(url, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
      if (r.status === 200) ((await r.json()).documents || []).forEach(addDocument);
    } catch (_) { /* offline: the list comes with the next document.shared */ }
  }

  async function download(d) {
    const url = "/v1/documents/" + encodeURIComponent(d.id) + "/content";
    try {
      const r = await fetch(url, { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
      if (!r.ok) throw new Error(String(r.status));
      const blob = await r.blob();
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = d.name || "document";
      document.body.append(a);
      a.click();
      setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    } catch (_) { notice("err_generic"); }
  }

  // --- media -----------------------------------------------------------------------------------
  // The camera and microphone are opened only once the room has let us in (never on an error screen):
  // both if possible, else whichever exists; a refusal is remembered so the page can say so.
  async function openDevices() {
    if (state.localStream && state.localStream.getTracks().some((tr) => tr.readyState === "live")) {
      return state.localStream;
    }
    const d = { checked: true, camera: false, microphone: false, denied: false };
    let stream = null;
    const md = navigator.mediaDevices;
    if (md && md.getUserMedia) {
      for (const constraints of [{ audio: true, video: true }, { audio: true }, { video: true }]) {
        try {
          stream = await md.getUserMedia(constraints);
          break;
        } catch (err) {
          if (err && (err.name === "NotAllowedError" || err.name === "SecurityError")) { d.denied = true; break; }
        }
      }
    }
    if (state.final || state.left) {  // the room closed while the browser asked: nothing stays on
      if (stream) stream.getTracks().forEach((tr) => tr.stop());
      return null;
    }
    state.localStream = stream;
    d.camera = Boolean(stream && stream.getVideoTracks().length);
    d.microphone = Boolean(stream && stream.getAudioTracks().length);
    state.devices = d;
    if (!d.microphone) state.mic = false;
    if (!d.camera) state.cam = false;
    $("local-video").srcObject = stream;
    $("preview").srcObject = stream;
    if (stream) {
      $("preview").play().catch(() => {});
      $("local-video").play().catch(() => {});
    }
    startMeter();
    renderAll();
    return stream;
  }

  function stopDevices() {
    if (state.localStream) state.localStream.getTracks().forEach((tr) => tr.stop());
    state.localStream = null;
    $("local-video").srcObject = null;
    $("preview").srcObject = null;
    stopMeter();
  }

  // The microphone's level while the person checks it before entering.
  function startMeter() {
    stopMeter();
    const stream = state.localStream;
    if (!stream || !stream.getAudioTracks().length || !window.AudioContext) return;
    const ctx = new AudioContext();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    ctx.createMediaStreamSource(stream).connect(analyser);
    const data = new Uint8Array(analyser.fftSize);
    const meter = { ctx, timer: 0 };
    meter.timer = setInterval(() => {
      analyser.getByteTimeDomainData(data);
      let peak = 0;
      for (const x of data) peak = Math.max(peak, Math.abs(x - 128) / 128);
      $("mic-level").value = Math.min(1, peak * 2);
    }, 100);
    state.meter = meter;
  }

  function stopMeter() {
    if (!state.meter) return;
    clearInterval(state.meter.timer);
    state.meter.ctx.close().catch(() => {});
    state.meter = null;
  }

  // A one-second tone through the speakers or headphones (a click on the button lets it play).
  function testSpeaker() {
    if (!window.AudioContext) return;
    const ctx = new AudioContext();
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = 523.25;
    gain.gain.setValueAtTime(0.0001, ctx.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.3, ctx.currentTime + 0.05);
    gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + 1);
    osc.connect(gain).connect(ctx.destination);
    osc.start();
    osc.stop(ctx.currentTime + 1.05);
    state.tone = ctx;
    notice("speaker_playing");
    osc.onended = () => { ctx.close().catch(() => {}); if (state.tone === ctx) state.tone = null; };
  }

  // In sound only, the camera's track is not sent (nor shown), and comes back as it was.
  async function applyAudioOnly() {
    const track = state.localStream ? state.localStream.getVideoTracks()[0] : null;
    if (track) track.enabled = state.cam && !state.audioOnly;
    const pc = state.pc;
    if (pc && track) {
      for (const sender of pc.getSenders()) {
        if (sender.track === track || (sender.track === null && state.videoSender === sender)) {
          state.videoSender = sender;
          try { await sender.replaceTrack(state.audioOnly ? null : track); } catch (_) { /* rebuilt later */ }
        }
      }
    }
    renderLocal();
  }

  // Our own small picture: only when there is one to show.
  function renderLocal() {
    const cam = state.localStream && state.localStream.getVideoTracks().length;
    $("local-video").closest(".tile").hidden = !cam || state.audioOnly || state.mode === "chat";
  }

  function closePc() {
    if (state.pc) {
      state.pc.onicecandidate = null; state.pc.ontrack = null; state.pc.onconnectionstatechange = null;
      state.pc.close();
    }
    state.pc = null;
    state.pendingCandidates = [];
    state.offerId = null;
    state.remoteStream = null;
    clearTimeout(state.rebuildTimer);
    $("remote-video").srcObject = null;
  }

  // --- sfu mode: one peer connection to the server ---------------------------------------------
  // The server answers (with its candidates in the answer) and never offers; whatever arrives on this
  // connection is the other participant's media. A connection that fails, or stays disconnected for a
  // while, is rebuilt with a new offer: the server replaces the old one and the room stays intact.
  const SFU_DISCONNECTED_MS = 5000;
  const SFU_GATHER_MS = 5000;
  const SFU_MIN_REBUILD_MS = 2000;

  function mediaParty() {
    return state.me && (state.me.role === "client" || state.me.role === "practitioner");
  }

  function scheduleRebuild(ms) {
    clearTimeout(state.rebuildTimer);
    state.rebuildTimer = setTimeout(() => { if (state.mediaMode === "sfu") startSfu(); }, ms);
  }

  async function startSfu() {
    if (!mediaParty() || state.left || state.final || !state.entered || state.mode === "chat") return;
    const wait = state.lastBuild + SFU_MIN_REBUILD_MS - Date.now();
    if (wait > 0) { scheduleRebuild(wait); return; }
    state.lastBuild = Date.now();
    closePc();
    const pc = new RTCPeerConnection({ iceServers: state.iceServers });
    state.pc = pc;
    const local = state.localStream;
    const kinds = new Set(local ? local.getTracks().map((tr) => tr.kind) : []);
    if (local) {
      local.getTracks().forEach((tr) => {
        const sender = pc.addTrack(tr, local);
        if (tr.kind === "video") state.videoSender = sender;
      });
      if (state.audioOnly) applyAudioOnly();
    }
    // without a camera or microphone, still receive the other person's
    for (const kind of ["audio", "video"]) if (!kinds.has(kind)) pc.addTransceiver(kind, { direction: "recvonly" });
    state.remoteStream = new MediaStream();
    pc.ontrack = (ev) => {
      if (pc !== state.pc) return;
      state.remoteStream.getTracks().filter((tr) => tr.kind === ev.track.kind)
        .forEach((tr) => state.remoteStream.removeTrack(tr));
      state.remoteStream.addTrack(ev.track);
      if (peer()) attachRemote(state.remoteStream);
    };
    pc.onconnectionstatechange = () => {
      if (pc !== state.pc) return;
      renderWaiting();
      if (pc.connectionState === "failed") scheduleRebuild(0);
      else if (pc.connectionState === "disconnected") scheduleRebuild(SFU_DISCONNECTED_MS);
      else if (pc.connectionState === "connected") clearTimeout(state.rebuildTimer);
    };
    try {
      await pc.setLocalDescription(await pc.createOffer());
      // the server does not take trickled candidates from the page: the offer carries them all
      await new Promise((resolve) => {
        if (pc.iceGatheringState === "complete") { resolve(); return; }
        const timer = setTimeout(resolve, SFU_GATHER_MS);
        pc.addEventListener("icegatheringstatechange", () => {
          if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
        });
      });
      if (pc !== state.pc) return;
      state.offerId = newId();
      if (!send({ type: "offer", id: state.offerId, sdp: pc.localDescription.sdp })) {
        state.offerId = null;  // the socket is down: the next `joined` offers again
      }
    } catch (_) {
      if (pc === state.pc) scheduleRebuild(SFU_MIN_REBUILD_MS);
    }
  }

  async function onSfuAnswer(msg) {
    const pc = state.pc;
    if (!pc || pc.signalingState !== "have-local-offer" || (msg.ref && msg.ref !== state.offerId)) return;
    state.offerId = null;
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
    } catch (_) { if (pc === state.pc) scheduleRebuild(SFU_MIN_REBUILD_MS); }
  }

  function onMediaStatus(msg) {
    state.mediaStates.set(msg.participant_id, msg.state);
    // the server gave up on our connection: build a new one rather than wait for the browser to notice
    if (state.me && msg.participant_id === state.me.id && msg.state === "failed") scheduleRebuild(0);
    renderMedia();
    if (STAFF) renderParticipants();
  }

  function onQuality(msg) {
    state.quality.set(msg.participant_id, msg);
    renderMedia();
    if (STAFF) renderParticipants();
  }

  function newPc() {
    closePc();
    const pc = new RTCPeerConnection({ iceServers: state.iceServers });
    state.pc = pc;
    if (state.localStream && state.mode !== "chat") {
      state.localStream.getTracks().forEach((tr) => {
        const sender = pc.addTrack(tr, state.localStream);
        if (tr.kind === "video") state.videoSender = sender;
      });
      if (state.audioOnly) applyAudioOnly();
    }
    pc.onicecandidate = (ev) => {
      const p = peer();
      if (p) send({ type: "candidate", to: p.id, candidate: ev.candidate ? ev.candidate.toJSON() : null });
    };
    pc.ontrack = (ev) => attachRemote(ev.streams[0] || new MediaStream([ev.track]));
    pc.onconnectionstatechange = () => renderWaiting();
    return pc;
  }

  // Both sides start afresh whenever the other party (re)appears; only the practitioner offers.
  async function peerAppeared() {
    if (state.mediaMode === "sfu") {
      // the server's connection carries them once they publish: show them again (never a stale frame)
      if (state.remoteStream && state.remoteStream.getTracks().length) attachRemote(state.remoteStream);
      return;
    }
    if (!state.entered || state.mode === "chat") return;
    const p = peer();
    if (!p || !state.me) return;
    const pc = newPc();
    if (state.me.role !== "practitioner") return;
    try {
      const offer = await pc.createOffer();
      if (pc !== state.pc) return;
      await pc.setLocalDescription(offer);
      send({ type: "offer", to: p.id, sdp: pc.localDescription.sdp });
    } catch (_) { notice("err_generic"); }
  }

  async function onOffer(msg) {
    const pc = state.pc || newPc();
    try {
      await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
      await flushCandidates(pc);
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      send({ type: "answer", to: msg.from, sdp: pc.localDescription.sdp });
    } catch (_) { notice("err_generic"); }
  }

  async function onAnswer(msg) {
    if (state.mediaMode === "sfu") return onSfuAnswer(msg);
    const pc = state.pc;
    if (!pc || pc.signalingState !== "have-local-offer") return;
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
      await flushCandidates(pc);
    } catch (_) { notice("err_generic"); }
  }

  async function onCandidate(msg) {
    const pc = state.pc;
    if (!pc) return;
    if (!pc.remoteDescription) { state.pendingCandidates.push(msg.candidate); return; }
    try { await pc.addIceCandidate(msg.candidate || null); } catch (_) { /* stale candidate */ }
  }

  async function flushCandidates(pc) {
    const list = state.pendingCandidates;
    state.pendingCandidates = [];
    for (const c of list) { try { await pc.addIceCandidate(c || null); } catch (_) { /* stale */ } }
  }

  // What the others are told about this participant's sound and picture (and whether there is a device).
  function sendMediaState() {
    if (!mediaParty() || !state.devices.checked) return;
    const d = state.devices;
    const on = state.entered && state.mode !== "chat";
    send({ type: "media.state", audio: on && d.microphone && state.mic,
      video: on && d.camera && state.cam && !state.audioOnly, audio_only: state.audioOnly,
      camera: d.camera, microphone: d.microphone });
  }

  // The room is not open yet: say when it opens, and come back by itself then (by the server's clock).
  function notOpen() {
    const wait = Math.max(0, state.notOpenRetryS == null ? 60 : state.notOpenRetryS) * 1000;
    state.opensAt = Date.now() + wait;
    stopDevices();
    clearTimeout(state.openTimer);
    state.openTimer = setTimeout(connect, Math.min(wait + 500, NOT_OPEN_RECHECK_MS));
    setView("not_open");
    renderAll();
  }

  // Into the room from the lobby: with camera and microphone, with sound only, or with the chat only.
  function enter(mode) {
    state.mode = mode;
    state.audioOnly = mode === "audio";
    state.entered = true;
    sessionStorage.setItem(storeKey + ":entered", mode);
    stopMeter();
    if (mode === "chat") stopDevices();
    setView("room");
    sendMediaState();
    startMedia();
  }

  async function startMedia() {
    if (!mediaParty() || !state.entered || state.mode === "chat" || state.left || state.final) return;
    await openDevices();
    sendMediaState();
    if (state.mediaMode === "sfu") {
      // the media connection outlives the socket; build it when there is none or its offer was lost
      // (an offer still waiting for its answer may have lost it with the old socket)
      const pc = state.pc;
      if (!pc || pc.connectionState === "failed" || pc.connectionState === "closed"
          || pc.signalingState === "have-local-offer") startSfu();
    } else if (peer()) peerAppeared();
  }

  function leave() {
    state.left = true;
    state.leftAt = Date.now();
    sessionStorage.removeItem(storeKey + ":entered");
    send({ type: "leave" });
    closePc();
    stopDevices();
    state.soundBlocked = false;
    setView("ended");
  }

  // --- the socket ------------------------------------------------------------------------------
  function connect() {
    if (state.left || state.final) return;
    clearTimeout(state.openTimer);
    state.inRoom = false;
    state.conn = state.joinedOnce ? "reconnecting" : "connecting";
    if (state.view === "not_open") setView("connecting");
    if (state.unavailable) { state.unavailable.trying = true; renderGate(); renderNotice(); }
    renderConn();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/v1/rooms/${encodeURIComponent(bookingId)}/ws`,
      ["session.v1", "bearer." + token]);
    state.ws = ws;
    ws.onopen = () => {
      const join = { type: "join", v: 1, audio_only: state.audioOnly };
      if (state.joinedOnce) join.last_seq = state.lastSeq;
      send(join);
    };
    ws.onmessage = (ev) => {
      state.lastHeard = Date.now();
      let msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      handle(msg);
    };
    ws.onclose = (ev) => socketClosed(ws, ev.code);
  }

  // A socket the page gave up on (silent past two heartbeats): it is handled as closed at once. Its close
  // event waits for the closing handshake, which a dead network never completes (up to a minute in
  // Chromium), and the page would say "connected" all that time instead of reconnecting.
  function abandonSocket() {
    const ws = state.ws;
    if (!ws) return;
    try { ws.close(); } catch (_) { /* closing already */ }
    socketClosed(ws, 1006);
  }

  function socketClosed(ws, code) {
    if (state.ws !== ws) return;
    state.ws = null;
    const retryS = state.unavailableRetryS;
    state.unavailableRetryS = null;
    state.unavailable = null;
    if (code === CLOSE_NOT_OPEN) { state.conn = "closed"; notOpen(); return; }
    // a room.closing before 4410 already said why the room closed
    if (CLOSE_FINAL[code] && !(code === 4410 && state.final)) state.final = CLOSE_FINAL[code];
    if (state.left || state.final) {
      state.conn = "closed";
      closePc();
      // the room is over: the camera and microphone go off, as on leaving
      if (state.final) { stopDevices(); setView("final"); }
      renderAll();
      return;
    }
    if (code === CLOSE_TRY_AGAIN_LATER) {
      // the refusal said when to come back (the server's pause); a close without one waits a second
      const seconds = Math.max(1, Math.ceil(retryS == null ? 1 : retryS));
      state.unavailable = { seconds, trying: false };
      state.conn = state.joinedOnce ? "reconnecting" : "connecting";
      renderAll();
      renderNotice();
      setTimeout(connect, seconds * 1000);
      return;
    }
    state.conn = "reconnecting";
    renderConn();
    renderGate();
    renderNotice();
    const delay = Math.min(5000, 300 * 2 ** state.retry++);
    setTimeout(connect, delay);
  }

  function handle(msg) {
    switch (msg.type) {
      case "joined": return onJoined(msg);
      case "ping": return send({ type: "pong", ref: msg.id });
      case "participant.joined": {
        const p = msg.participant;
        state.participants.set(p.id, p);
        if ((p.role === "support" || p.role === "admin") && !STAFF) notice("support_joined");
        const other = peer();
        if (other && other.id === p.id) state.peerLeft = null;
        renderAll();
        if (other && other.id === p.id) peerAppeared();
        return;
      }
      case "participant.updated":
        state.participants.set(msg.participant.id, msg.participant);
        return renderAll();
      case "participant.reconnecting": {
        const p = state.participants.get(msg.participant_id);
        if (p) p.state = "reconnecting";
        return renderAll();
      }
      case "participant.left": {
        const other = peer();
        state.participants.delete(msg.participant_id);
        state.typing.delete(msg.participant_id);
        state.mediaStates.delete(msg.participant_id);
        state.quality.delete(msg.participant_id);
        if (other && other.id === msg.participant_id) {
          state.peerLeft = { name: other.name, at: Date.now() };  // said with the time, and no frozen frame
          if (state.mediaMode !== "sfu") closePc();
        }
        return renderAll();
      }
      case "session.started": return renderWaiting();
      case "offer": return state.mediaMode === "sfu" ? undefined : onOffer(msg);
      case "media.status": return onMediaStatus(msg);
      case "quality": return onQuality(msg);
      case "answer": return onAnswer(msg);
      case "candidate": return onCandidate(msg);
      case "chat.message": return onChat(msg);
      case "chat.history": for (const c of msg.chat) onChat(c); return undefined;
      case "chat.ack": {
        state.unacked.delete(msg.ref);
        const li = $("messages").querySelector(`li[data-ref="${CSS.escape(msg.ref)}"]`);
        if (li) { li.dataset.seq = String(msg.seq); renderMessageMeta(li); }
        return;
      }
      case "chat.delivered":
        state.delivered = Math.max(state.delivered, msg.seq);
        return document.querySelectorAll("#messages li.mine").forEach(renderMessageMeta);
      case "typing":
        if (msg.active) state.typing.set(msg.participant_id, Date.now() + 6000);
        else state.typing.delete(msg.participant_id);
        return renderTyping();
      case "document.shared": return addDocument(msg.document);
      case "ack": return notice("reported");
      // "open" says again what the report's own acknowledgement just said: that one stays on screen
      case "support.update": return msg.status === "open" ? undefined : notice("support_" + msg.status);
      case "token.refreshed":  // the server's renewal: the token to rejoin with from now on
        if (msg.token) { token = msg.token; sessionStorage.setItem(storeKey + ":token", token); }
        return;
      case "room.closing":
        state.final = CLOSING_FINAL[msg.code] || "err_room_closed";
        stopDevices();
        closePc();
        return setView("final");
      case "error": {
        const key = "err_" + msg.code;
        if (msg.code === "room_not_open") { state.notOpenRetryS = msg.retry_after_s; return undefined; }
        // a join refused while the server's data store is away: the close (1013) that follows says so
        if (msg.code === "unavailable" && !state.inRoom) {
          state.unavailableRetryS = typeof msg.retry_after_s === "number" ? msg.retry_after_s : 1;
          return undefined;
        }
        // a refused join says why the room is closed: the close (4410) that follows keeps these words
        if (msg.code === "room_closed" && msg.reason) { state.final = CLOSING_FINAL[msg.reason] || "err_room_closed"; }
        // a refused join, or a token that ran out: the close that follows puts it on the page, once
        if (!state.inRoom || msg.code.startsWith("token_")) return undefined;
        if (msg.code === "unavailable" && msg.ref && state.unacked.has(msg.ref)) {
          // the server could not store it yet: send it again (same id, never doubled) after the pause
          const again = state.unacked.get(msg.ref);
          setTimeout(() => { if (state.unacked.has(again.id)) send(again); }, (msg.retry_after_s || 1) * 1000);
          return undefined;
        }
        if (state.mediaMode === "sfu" && msg.ref && msg.ref === state.offerId) {
          // the server refused our offer: say so, and try again with a fresh connection
          state.offerId = null;
          scheduleRebuild(5000);
          if (msg.code === "media_elsewhere") return notice("err_media_elsewhere");
        }
        return notice(I18N.en[key] ? key : "err_generic");
      }
      default: return undefined;
    }
  }

  function onJoined(msg) {
    state.unavailable = null;
    renderNotice();
    state.joinedOnce = true;
    state.retry = 0;
    state.conn = "connected";
    state.me = msg.you;
    state.room = msg.room;
    state.iceServers = msg.ice_servers || [];
    state.heartbeatS = msg.heartbeat_interval_s || 10;
    state.participants = new Map(msg.participants.map((p) => [p.id, p]));
    for (const c of msg.chat) onChat(c);
    // sends the server never acknowledged go again with the same ids: the server keeps each once
    for (const m of state.unacked.values()) send(m);
    state.inRoom = true;
    // the documents shared so far, once the server let this link in (again, after a reconnect: what was
    // shared meanwhile); staff never see them
    if (!STAFF) loadDocuments();
    state.mediaMode = msg.media_mode === "sfu" ? "sfu" : "relay";
    if (!mediaParty()) state.entered = true;  // staff follow the session; they have nothing to check
    if (!state.entered) {
      // the lobby: who is expected and when, and a device check before entering
      setView("lobby");
      renderAll();
      if (!state.devices.checked) openDevices().then(() => sendMediaState());
      else sendMediaState();
      return;
    }
    setView("room");
    renderAll();
    startMedia();
  }

  function onChat(msg) {
    state.lastSeq = Math.max(state.lastSeq, msg.seq);
    addMessage({ seq: msg.seq, time: msg.time, senderId: msg.sender.id, name: msg.sender.name,
      text: msg.text, ref: msg.ref });
    state.typing.delete(msg.sender.id);
    renderTyping();
    if (state.me && msg.sender.id !== state.me.id) send({ type: "chat.received", seq: msg.seq });
  }

  // --- the user's actions ----------------------------------------------------------------------
  $("chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("chat-input");
    const text = input.value.trim();
    if (!text || !state.me) return;
    const msg = { type: "chat.send", id: newId(), text };
    state.unacked.set(msg.id, msg);
    addMessage({ seq: null, time: Date.now(), senderId: state.me.id, name: state.me.name, text, ref: msg.id });
    send(msg);
    input.value = "";
    send({ type: "typing", active: false });
    state.typingSent = 0;
  });

  $("chat-input").addEventListener("input", () => {
    const now = Date.now();
    if (now - state.typingSent > 3000) { state.typingSent = now; send({ type: "typing", active: true }); }
    clearTimeout(state.typingTimer);
    state.typingTimer = setTimeout(() => { state.typingSent = 0; send({ type: "typing", active: false }); }, 4000);
  });

  $("enter").addEventListener("click", () => enter("full"));
  $("enter-audio").addEventListener("click", () => enter("audio"));
  $("enter-chat").addEventListener("click", () => enter("chat"));
  $("test-speaker").addEventListener("click", testSpeaker);
  $("rejoin").addEventListener("click", () => {
    state.left = false;
    state.entered = true;
    sessionStorage.setItem(storeKey + ":entered", state.mode);
    setView("connecting");
    connect();
  });
  $("start-sound").addEventListener("click", () => {
    const v = $("remote-video");
    v.muted = false;
    v.play().then(() => { state.soundBlocked = false; renderRemote(); }).catch(() => {});
  });
  $("start-media").addEventListener("click", () => {
    state.mode = "full";
    sessionStorage.setItem(storeKey + ":entered", "full");
    renderAll();
    startMedia();
  });

  function setAudioOnly(on) {
    state.audioOnly = on;
    state.mode = on ? "audio" : "full";
    sessionStorage.setItem(storeKey + ":entered", state.mode);
    applyAudioOnly();
    sendMediaState();
    renderAll();
    if (!on) playRemote();
  }
  $("toggle-audio-only").addEventListener("click", () => setAudioOnly(!state.audioOnly));
  $("suggest-yes").addEventListener("click", () => setAudioOnly(true));
  $("suggest-no").addEventListener("click", () => { state.suggestDismissed = true; renderMedia(); });

  $("toggle-mic").addEventListener("click", () => {
    state.mic = !state.mic;
    if (state.localStream) state.localStream.getAudioTracks().forEach((tr) => { tr.enabled = state.mic; });
    renderControls();
    sendMediaState();
  });

  $("toggle-cam").addEventListener("click", () => {
    state.cam = !state.cam;
    if (state.localStream) state.localStream.getVideoTracks().forEach((tr) => { tr.enabled = state.cam; });
    renderControls();
    sendMediaState();
  });

  $("report").addEventListener("click", () => {
    // the outage flow listens for this event as well as for the server's acknowledgement
    window.dispatchEvent(new CustomEvent("room:problem-report", { detail: { bookingId } }));
    send({ type: "problem.report", kind: "connection" });
  });

  // On a phone "Leave" sits next to "Report": ask first.
  $("leave").addEventListener("click", () => $("confirm-leave").showModal());
  $("leave-stay").addEventListener("click", () => $("confirm-leave").close());
  $("leave-yes").addEventListener("click", () => { $("confirm-leave").close(); leave(); });

  window.addEventListener("room:rescheduled", () => { state.verdict = "interrupted"; renderGate(); });
  window.addEventListener("room:outage", (ev) => {
    state.outage = ev.detail && ev.detail.ongoing ? { side: ev.detail.side } : null;
    state.verdict = (ev.detail && ev.detail.final) || state.verdict;
    renderWaiting();
    renderRemote();
    renderGate();
  });

  $("lang").addEventListener("change", (ev) => {
    lang = ev.target.value;
    PAGE.rememberLanguage("room", lang);
    applyLanguage();
  });

  // a socket that hears nothing for more than two heartbeats is dead even if the OS has not noticed
  setInterval(() => {
    const now = Date.now();
    for (const [id, until] of state.typing) if (until < now) state.typing.delete(id);
    renderTyping();
    if (state.ws && state.conn === "connected" && now - state.lastHeard > state.heartbeatS * 2500) {
      abandonSocket();
    }
  }, 1000);

  // what the acceptance test reads: the peer connection's own statistics
  window.roomDebug = {
    pc: () => state.pc,
    mediaMode: () => state.mediaMode,
    quality: () => Object.fromEntries(state.quality),
    mediaStates: () => Object.fromEntries(state.mediaStates),
    state: () => ({ conn: state.conn, me: state.me, participants: [...state.participants.values()],
      lastSeq: state.lastSeq, room: state.room, view: state.view, mode: state.mode, audioOnly: state.audioOnly,
      devices: state.devices, soundBlocked: state.soundBlocked }),
    // what a network drop does to the socket (no goodbye: the page reconnects and resumes)
    dropSocket: () => abandonSocket(),
  };

  applyLanguage();
  if (!token) {
    state.final = "err_token";
    setView("final");
    return;
  }
  // a reload during the session goes straight back in, as the person had entered
  const entered = sessionStorage.getItem(storeKey + ":entered");
  if (entered === "full" || entered === "audio" || entered === "chat") {
    state.entered = true;
    state.mode = entered;
    state.audioOnly = entered === "audio";
  }
  // Support staff and admins enter at once, without camera or microphone: they watch the connection,
  // not the session (the parties are told why they joined).
  if (STAFF) {
    state.entered = true;
    state.mode = "chat";
    // what is the parties' own is not shown to staff: the chat, the documents, the video, their buttons
    document.body.dataset.staff = "true";
    for (const sel of [".videos", ".side", "#report"]) {
      const node = document.querySelector(sel);
      if (node) node.hidden = true;
    }
  }
  connect();
})();
