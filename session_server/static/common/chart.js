// A bar chart of amounts over time, drawn in an <svg> at the size it is shown (so that its words keep their
// size on a phone as on a laptop): one bar per period, the oldest first, from right to left in a
// right-to-left language; the period's name under one bar in every few (from the newest back, as many as
// fit), each bar's name and amount on hover, and the largest amount written once, over the first bar that
// reaches it. Used by the statement (weeks) and the administration's page (days).
window.CHART = (() => {
  "use strict";

  const NS = "http://www.w3.org/2000/svg";

  // bars: [{label: under the bar, title: on hover, value: the amount}]; options: {rtl, format(value),
  // labelWidth: the room a label needs, in pixels}
  function bars(svg, items, { rtl, format, labelWidth = 72 }) {
    svg.replaceChildren();
    const width = Math.max(240, Math.round(svg.getBoundingClientRect().width) || 600), height = 180, top = 20, bottom = 24;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const n = items.length, slot = width / n, gap = Math.max(1, Math.round(slot / 5));
    const labelEvery = Math.ceil(labelWidth / slot);
    const most = Math.max(...items.map((b) => b.value));
    const topBar = items.findIndex((b) => b.value === most);
    const node = (name, attrs, text) => {
      const el = document.createElementNS(NS, name);
      for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
      if (text != null) el.textContent = text;
      svg.appendChild(el);
      return el;
    };
    node("line", { class: "axis", x1: 0, x2: width, y1: height - bottom, y2: height - bottom });
    // a label centred on `centre`, or kept inside the chart at either edge (an anchor's "start" is the
    // right-hand side in a right-to-left page)
    const inside = (centre, half) => {
      if (centre + half > width) return { x: width - 2, "text-anchor": rtl ? "start" : "end" };
      if (centre - half < 0) return { x: 2, "text-anchor": rtl ? "end" : "start" };
      return { x: centre, "text-anchor": "middle" };
    };
    items.forEach((b, i) => {
      const x = (rtl ? n - 1 - i : i) * slot;
      const h = most > 0 ? Math.round(((height - top - bottom) * Math.max(b.value, 0)) / most) : 0;
      const bar = node("rect", { class: "bar-rect" + (b.value > 0 ? "" : " empty"), x: x + gap / 2, width: slot - gap,
                                 y: height - bottom - Math.max(h, 2), height: Math.max(h, 2) });
      const hover = document.createElementNS(NS, "title");
      hover.textContent = `${b.title}: ${format(b.value)}`;
      bar.appendChild(hover);
      if ((n - 1 - i) % labelEvery === 0) node("text", { y: height - 8, ...inside(x + slot / 2, 28) }, b.label);
      if (i === topBar && most > 0) node("text", { y: height - bottom - h - 5, ...inside(x + slot / 2, 45) }, format(b.value));
    });
  }

  return { bars };
})();
