// The session room page: signaling over one WebSocket (protocol v1, see docs/protocol.md), video
// through the server's SFU (`sfu` mode: one peer connection to the server) or directly between the two
// browsers (`relay` mode), chat that survives reconnects. No build step, no dependencies.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const I18N = window.ROOM_I18N;
  const bookingId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const storeKey = "room:" + bookingId;
  // Close codes after which reconnecting cannot help (see docs/protocol.md).
  const CLOSE_FINAL = { 4401: "err_token", 4403: "err_not_a_party", 4404: "err_room_not_found",
    4409: "err_replaced", 4410: "err_room_closed", 4425: "err_room_not_open", 4429: "err_too_many" };
  const CLOSING_FINAL = { booking_cancelled: "err_booking_cancelled",
    practitioner_suspended: "err_practitioner_suspended" };

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

  // --- language --------------------------------------------------------------------------------
  const query = new URLSearchParams(location.search);
  let lang = query.get("lang") || localStorage.getItem("room:lang") || (navigator.language || "ar").slice(0, 2);
  if (!I18N[lang]) lang = "ar";

  // Texts of the media-through-the-server view, until the shared catalogue carries them.
  const MEDIA_TEXT = {
    ar: { quality_excellent: "الاتصال ممتاز", quality_good: "الاتصال جيد", quality_poor: "الاتصال ضعيف",
      quality_lost: "انقطع الاتصال", peer_media_stopped: "توقف وصول صوت وصورة الطرف الآخر",
      own_media_stopped: "لا يصل صوتك وصورتك إلى الخادم", media_reconnecting: "إعادة الاتصال بالصوت والصورة…",
      err_media_elsewhere: "تعذر الاتصال بخادم الوسائط. أعد تحميل الصفحة." },
    fr: { quality_excellent: "Connexion excellente", quality_good: "Bonne connexion",
      quality_poor: "Connexion faible", quality_lost: "Connexion perdue",
      peer_media_stopped: "Le son et l'image de l'autre personne ne nous parviennent plus",
      own_media_stopped: "Votre son et votre image ne parviennent plus au serveur",
      media_reconnecting: "Reconnexion audio et vidéo…",
      err_media_elsewhere: "Le serveur média est injoignable. Rechargez la page." },
    en: { quality_excellent: "Excellent connection", quality_good: "Good connection",
      quality_poor: "Poor connection", quality_lost: "Connection lost",
      peer_media_stopped: "The other person's sound and picture stopped arriving",
      own_media_stopped: "Your sound and picture are not reaching the server",
      media_reconnecting: "Reconnecting sound and picture…",
      err_media_elsewhere: "The media server cannot be reached. Reload the page." },
  };

  function t(key, vars) {
    const text = (I18N[lang] && I18N[lang][key]) || I18N.en[key]
      || (MEDIA_TEXT[lang] && MEDIA_TEXT[lang][key]) || MEDIA_TEXT.en[key] || key;
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
  }

  // --- state -----------------------------------------------------------------------------------
  const state = {
    ws: null, conn: "connecting", me: null, room: null, participants: new Map(), lastSeq: 0,
    joinedOnce: false, iceServers: [], heartbeatS: 10, lastHeard: 0, retry: 0, final: null,
    unacked: new Map(), myMessages: new Map(), delivered: 0, typing: new Map(), docs: new Map(),
    pc: null, pendingCandidates: [], localStream: null, mic: true, cam: true, left: false,
    typingSent: 0, typingTimer: null,
    // sfu mode: the one peer connection to the server, the offer awaiting its answer, what was pushed
    mediaMode: "relay", offerId: null, remoteStream: null, rebuildTimer: null, lastBuild: 0,
    quality: new Map(), mediaStates: new Map(),
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

  function notice(text) {
    const el = $("notice");
    el.textContent = text;
    el.hidden = !text;
    if (text) setTimeout(() => { if (el.textContent === text) el.hidden = true; }, 6000);
  }

  // --- rendering -------------------------------------------------------------------------------
  function renderAll() {
    renderConn(); renderWaiting(); renderMedia(); renderParticipants(); renderControls(); renderTyping(); renderDocs();
    document.querySelectorAll("#messages li").forEach(renderMessageMeta);
  }

  function renderConn() {
    const el = $("conn");
    el.dataset.state = state.conn;
    el.textContent = state.final ? t(state.final) : t("state_" + state.conn);
  }

  function renderWaiting() {
    const el = $("waiting");
    if (!state.me || state.final) { el.textContent = state.final ? t(state.final) : ""; el.dataset.waiting = "no"; return; }
    if (state.left) { el.textContent = t("left"); return; }
    const other = peer();
    let text;
    if (state.me.role === "client") {
      text = !other ? t("waiting_for_practitioner")
        : other.state === "reconnecting" ? t("peer_reconnecting", { name: other.name }) : t("in_session");
    } else if (state.me.role === "practitioner") {
      text = !other ? t("waiting_for_client")
        : other.state === "reconnecting" ? t("peer_reconnecting", { name: other.name })
          : state.pc && state.pc.connectionState === "connected" ? t("in_session")
            : t("client_waiting", { name: other.name });
    } else {
      text = t("staff_view");
    }
    el.textContent = text;
    el.dataset.waiting = other ? "no" : "yes";
    const p = peer();
    $("remote-name").textContent = p ? p.name : "";
    $("remote-flags").textContent = p ? [p.audio ? "" : t("muted"), p.video ? "" : t("camera_off")]
      .filter(Boolean).join(" · ") : "";
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
    el.hidden = state.mediaMode !== "sfu" || !mine;
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
  }

  function renderParticipants() {
    const ul = $("participants");
    ul.replaceChildren();
    for (const p of state.participants.values()) {
      const li = document.createElement("li");
      li.dataset.state = p.state;
      li.dataset.role = p.role;
      const name = document.createElement("strong");
      name.textContent = p.name || p.id;
      const role = document.createElement("span");
      role.className = "role";
      role.textContent = t("role_" + p.role);
      const st = document.createElement("span");
      st.className = "pstate";
      st.textContent = t("p_" + p.state);
      li.append(name, " ", role, " ", st);
      ul.append(li);
    }
  }

  function renderControls() {
    $("toggle-mic").textContent = t(state.mic ? "mic_on" : "mic_off");
    $("toggle-mic").setAttribute("aria-pressed", String(state.mic));
    $("toggle-cam").textContent = t(state.cam ? "cam_on" : "cam_off");
    $("toggle-cam").setAttribute("aria-pressed", String(state.cam));
    const party = state.me && (state.me.role === "client" || state.me.role === "practitioner");
    $("chat-input").disabled = !party || state.left || Boolean(state.final);
    $("chat-send").disabled = !party || state.left || Boolean(state.final);
  }

  function renderTyping() {
    const names = [...state.typing.keys()].map((id) => (state.participants.get(id) || { name: "" }).name);
    $("typing").textContent = names.length ? t("typing", { name: names.join(", ") }) : "";
  }

  const timeFormat = () => new Intl.DateTimeFormat(lang === "ar" ? "ar-DZ" : lang,
    { hour: "2-digit", minute: "2-digit" });

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
    } catch (_) { notice(t("err_generic")); }
  }

  // --- media -----------------------------------------------------------------------------------
  async function startLocalMedia() {
    const tries = [{ audio: true, video: true }, { audio: true, video: false }];
    for (const constraints of tries) {
      try {
        state.localStream = await navigator.mediaDevices.getUserMedia(constraints);
        $("local-video").srcObject = state.localStream;
        if (!constraints.video) state.cam = false;
        return;
      } catch (_) { /* try with less */ }
    }
    notice(t("no_camera"));
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
    if (!mediaParty() || state.left || state.final) return;
    const wait = state.lastBuild + SFU_MIN_REBUILD_MS - Date.now();
    if (wait > 0) { scheduleRebuild(wait); return; }
    state.lastBuild = Date.now();
    closePc();
    const pc = new RTCPeerConnection({ iceServers: state.iceServers });
    state.pc = pc;
    const local = state.localStream;
    const kinds = new Set(local ? local.getTracks().map((tr) => tr.kind) : []);
    if (local) local.getTracks().forEach((tr) => pc.addTrack(tr, local));
    // without a camera or microphone, still receive the other person's
    for (const kind of ["audio", "video"]) if (!kinds.has(kind)) pc.addTransceiver(kind, { direction: "recvonly" });
    state.remoteStream = new MediaStream();
    pc.ontrack = (ev) => {
      if (pc !== state.pc) return;
      state.remoteStream.getTracks().filter((tr) => tr.kind === ev.track.kind)
        .forEach((tr) => state.remoteStream.removeTrack(tr));
      state.remoteStream.addTrack(ev.track);
      const v = $("remote-video");
      if (v.srcObject !== state.remoteStream) v.srcObject = state.remoteStream;
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
  }

  function onQuality(msg) {
    state.quality.set(msg.participant_id, msg);
    renderMedia();
  }

  function newPc() {
    closePc();
    const pc = new RTCPeerConnection({ iceServers: state.iceServers });
    state.pc = pc;
    if (state.localStream) state.localStream.getTracks().forEach((tr) => pc.addTrack(tr, state.localStream));
    pc.onicecandidate = (ev) => {
      const p = peer();
      if (p) send({ type: "candidate", to: p.id, candidate: ev.candidate ? ev.candidate.toJSON() : null });
    };
    pc.ontrack = (ev) => {
      const v = $("remote-video");
      if (v.srcObject !== ev.streams[0]) v.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    };
    pc.onconnectionstatechange = () => renderWaiting();
    return pc;
  }

  // Both sides start afresh whenever the other party (re)appears; only the practitioner offers.
  async function peerAppeared() {
    if (state.mediaMode === "sfu") return;  // the server's connection carries them once they publish
    const p = peer();
    if (!p || !state.me) return;
    const pc = newPc();
    if (state.me.role !== "practitioner") return;
    try {
      const offer = await pc.createOffer();
      if (pc !== state.pc) return;
      await pc.setLocalDescription(offer);
      send({ type: "offer", to: p.id, sdp: pc.localDescription.sdp });
    } catch (_) { notice(t("err_generic")); }
  }

  async function onOffer(msg) {
    const pc = state.pc || newPc();
    try {
      await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
      await flushCandidates(pc);
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      send({ type: "answer", to: msg.from, sdp: pc.localDescription.sdp });
    } catch (_) { notice(t("err_generic")); }
  }

  async function onAnswer(msg) {
    if (state.mediaMode === "sfu") return onSfuAnswer(msg);
    const pc = state.pc;
    if (!pc || pc.signalingState !== "have-local-offer") return;
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
      await flushCandidates(pc);
    } catch (_) { notice(t("err_generic")); }
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

  function sendMediaState() {
    send({ type: "media.state", audio: state.mic, video: state.cam, audio_only: false });
  }

  // --- the socket ------------------------------------------------------------------------------
  function connect() {
    if (state.left || state.final) return;
    state.conn = state.joinedOnce ? "reconnecting" : "connecting";
    renderConn();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/v1/rooms/${encodeURIComponent(bookingId)}/ws`,
      ["session.v1", "bearer." + token]);
    state.ws = ws;
    ws.onopen = () => {
      const join = { type: "join", v: 1 };
      if (state.joinedOnce) join.last_seq = state.lastSeq;
      send(join);
    };
    ws.onmessage = (ev) => {
      state.lastHeard = Date.now();
      let msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      handle(msg);
    };
    ws.onclose = (ev) => {
      if (state.ws !== ws) return;
      state.ws = null;
      // a room.closing before 4410 already said why the room closed
      if (CLOSE_FINAL[ev.code] && !(ev.code === 4410 && state.final)) state.final = CLOSE_FINAL[ev.code];
      if (state.left || state.final) {
        state.conn = "closed";
        closePc();
        // the room is over: the camera and microphone go off, as on leaving
        if (state.final && state.localStream) state.localStream.getTracks().forEach((tr) => tr.stop());
        renderAll();
        return;
      }
      state.conn = "reconnecting";
      renderConn();
      const delay = Math.min(5000, 300 * 2 ** state.retry++);
      setTimeout(connect, delay);
    };
  }

  function handle(msg) {
    switch (msg.type) {
      case "joined": return onJoined(msg);
      case "ping": return send({ type: "pong", ref: msg.id });
      case "participant.joined": {
        const p = msg.participant;
        state.participants.set(p.id, p);
        renderAll();
        const other = peer();
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
        if (other && other.id === msg.participant_id && state.mediaMode !== "sfu") closePc();
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
      case "ack": return notice(t("reported"));
      case "token.refreshed":  // the server's renewal: the token to rejoin with from now on
        if (msg.token) { token = msg.token; sessionStorage.setItem(storeKey + ":token", token); }
        return;
      case "room.closing": state.final = CLOSING_FINAL[msg.code] || "err_room_closed"; return renderAll();
      case "error": {
        const key = "err_" + msg.code;
        if (msg.code.startsWith("token_")) return notice(t("err_token"));
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
          if (msg.code === "media_elsewhere") return notice(t("err_media_elsewhere"));
        }
        return notice(I18N.en[key] ? t(key) : t("err_generic"));
      }
      default: return undefined;
    }
  }

  function onJoined(msg) {
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
    renderAll();
    if (!state.mic || !state.cam) sendMediaState();
    state.mediaMode = msg.media_mode === "sfu" ? "sfu" : "relay";
    if (state.mediaMode === "sfu") {
      // the media connection outlives the socket; build it when there is none or its offer was lost
      // (an offer still waiting for its answer may have lost it with the old socket)
      const pc = state.pc;
      if (!pc || pc.connectionState === "failed" || pc.connectionState === "closed"
          || pc.signalingState === "have-local-offer") startSfu();
    } else if (peer()) peerAppeared();
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

  $("leave").addEventListener("click", () => {
    state.left = true;
    send({ type: "leave" });
    closePc();
    if (state.localStream) state.localStream.getTracks().forEach((tr) => tr.stop());
    renderAll();
  });

  $("lang").addEventListener("change", (ev) => {
    lang = ev.target.value;
    localStorage.setItem("room:lang", lang);
    applyLanguage();
  });

  // a socket that hears nothing for more than two heartbeats is dead even if the OS has not noticed
  setInterval(() => {
    const now = Date.now();
    for (const [id, until] of state.typing) if (until < now) state.typing.delete(id);
    renderTyping();
    if (state.ws && state.conn === "connected" && now - state.lastHeard > state.heartbeatS * 2500) {
      state.ws.close();
    }
  }, 1000);

  // what the acceptance test reads: the peer connection's own statistics
  window.roomDebug = {
    pc: () => state.pc,
    mediaMode: () => state.mediaMode,
    quality: () => Object.fromEntries(state.quality),
    mediaStates: () => Object.fromEntries(state.mediaStates),
    state: () => ({ conn: state.conn, me: state.me, participants: [...state.participants.values()],
      lastSeq: state.lastSeq, room: state.room }),
    // what a network drop does to the socket (no goodbye: the page reconnects and resumes)
    dropSocket: () => { if (state.ws) state.ws.close(); },
  };

  applyLanguage();
  if (!token) {
    state.final = "err_token";
    renderAll();
    return;
  }
  startLocalMedia().finally(() => { connect(); loadDocuments(); });
})();
