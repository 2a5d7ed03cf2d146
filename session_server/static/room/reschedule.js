// The room page's link to a free reschedule: once the room is closed and the session was interrupted by a
// technical problem, the page offers the way to a new time (/reschedule/{booking_id}). Apart from room.js:
// it only reads the token room.js keeps for this booking and the connection state room.js shows, and says
// it found an offer with a `room:rescheduled` event on window.
(() => {
  "use strict";

  const bookingId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const WORDS = {
    ar: { open_client: "انقطعت الجلسة بسبب مشكلة تقنية. يمكنك اختيار موعد جديد دون أي تكلفة إضافية.",
      open_practitioner: "انقطعت الجلسة بسبب مشكلة تقنية. سيختار العميل موعدًا جديدًا مجانيًا، ويمكنك أن تقترح مواعيد.",
      accepted: "حُجز موعد جديد لهذه الجلسة.", choose: "اختيار موعد جديد", propose: "اقتراح مواعيد",
      see: "عرض الموعد الجديد" },
    fr: { open_client: "La séance a été interrompue par un problème technique. Vous pouvez choisir une nouvelle date, sans frais supplémentaires.",
      open_practitioner: "La séance a été interrompue par un problème technique. Le client choisit une nouvelle date gratuite ; vous pouvez proposer des horaires.",
      accepted: "Une nouvelle date a été réservée pour cette séance.", choose: "Choisir une nouvelle date",
      propose: "Proposer des horaires", see: "Voir la nouvelle date" },
    en: { open_client: "The session was cut short by a technical problem. You can choose a new time, at no extra cost.",
      open_practitioner: "The session was cut short by a technical problem. The client chooses a free new time; you can propose times.",
      accepted: "A new time has been booked for this session.", choose: "Choose a new time",
      propose: "Propose times", see: "See the new time" },
  };
  const LOOKS = 10; // the offer follows the session's verdict within moments of the room closing
  let offer = null;
  let looking = false;
  let refused = false;

  const token = () => sessionStorage.getItem("room:" + bookingId + ":token");
  const words = () => WORDS[document.documentElement.lang] || WORDS.en;
  const closed = () => {
    const conn = document.getElementById("conn");
    return conn && conn.dataset.state === "closed";
  };

  async function fetchOffer() {
    const tok = token();
    if (!tok) return null;
    const r = await fetch("/v1/bookings/" + encodeURIComponent(bookingId) + "/reschedule-offer",
      { headers: { Authorization: "Bearer " + tok }, cache: "no-store" });
    if (r.status === 401 || r.status === 403) refused = true;  // this link will not see an offer: stop asking
    return r.status === 200 ? r.json() : null;
  }

  function role() {
    try {
      const payload = JSON.parse(atob(token().split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
      return payload.role;
    } catch (e) {
      return "";
    }
  }

  // Where the person is looking: the gate (the closed room's screen) when it shows, else the stage.
  function place(box) {
    const gate = document.getElementById("gate");
    const card = gate && gate.querySelector(".gate-card");
    if (card && !gate.hidden) {
      const actions = document.getElementById("gate-actions");
      if (box.parentElement !== card) card.insertBefore(box, actions && actions.parentElement === card ? actions : null);
      return;
    }
    const stage = document.querySelector(".stage") || document.body;
    if (box.parentElement !== stage) stage.prepend(box);
  }

  function render() {
    let box = document.getElementById("reschedule-offer");
    if (!offer || offer.status === "expired") { if (box) box.remove(); return; }
    if (!box) {
      box = document.createElement("div");
      box.id = "reschedule-offer";
      box.className = "reschedule-offer";
      box.setAttribute("role", "status");
      const text = document.createElement("p");
      const link = document.createElement("a");
      link.className = "reschedule-link";
      box.append(text, link);
    }
    place(box);
    const w = words();
    const mine = role();
    const [text, link] = box.children;
    text.textContent = offer.status === "accepted" ? w.accepted
      : mine === "practitioner" ? w.open_practitioner : w.open_client;
    link.textContent = offer.status === "accepted" ? w.see : mine === "practitioner" ? w.propose : w.choose;
    link.href = "/reschedule/" + encodeURIComponent(bookingId) + "?lang=" + encodeURIComponent(
      document.documentElement.lang) + "#token=" + encodeURIComponent(token() || "");
  }

  async function look(times) {
    if (looking) return;
    looking = true;
    try {
      for (let i = 0; i < times && !offer && !refused; i++) {
        try { offer = await fetchOffer(); } catch (e) { offer = null; }
        if (!offer && !refused && i + 1 < times) await new Promise((ok) => setTimeout(ok, 2000));
      }
      render();
      // an offer means the session was stopped by a technical problem: room.js then offers no complaint
      if (offer && offer.status !== "expired") {
        window.dispatchEvent(new CustomEvent("room:rescheduled", { detail: { status: offer.status } }));
      }
    } finally {
      looking = false;
    }
  }

  function watch() {
    const sheet = document.createElement("link");
    sheet.rel = "stylesheet";
    sheet.href = "/static/room/reschedule.css";
    document.head.append(sheet);
    const conn = document.getElementById("conn");
    if (conn) {
      new MutationObserver(() => { if (closed()) look(LOOKS); })
        .observe(conn, { attributes: true, attributeFilter: ["data-state"] });
    }
    new MutationObserver(render).observe(document.documentElement, { attributes: true, attributeFilter: ["lang"] });
    const gate = document.getElementById("gate");
    if (gate) new MutationObserver(render).observe(gate, { attributes: true, attributeFilter: ["hidden"] });
    // an offer follows an interrupted session's closed room: a room still open has none to ask for
    if (closed()) look(LOOKS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", watch);
  else watch();
})();
