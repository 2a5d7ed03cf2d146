// Renders /openapi.json for people, with nothing loaded from elsewhere (the server may have no internet).
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// The descriptions' `code` spans as code, the rest as text (the only markup they use).
function prose(text) {
  return String(text || "").split("`").map((part, i) => (i % 2 ? el("code", {}, part) : document.createTextNode(part)));
}

function refName(schema) {
  return schema && schema.$ref ? schema.$ref.split("/").pop() : null;
}

function schemaView(schema) {
  const name = refName(schema);
  if (name) return el("a", { href: "#schema-" + name }, name);
  return el("pre", {}, JSON.stringify(schema, null, 2));
}

function security(op) {
  if (!op.security || op.security.length === 0) return "no credentials";
  return op.security.map((req) => Object.entries(req).map(([scheme, roles]) =>
    scheme + (roles.length ? " (" + roles.join(", ") + ")" : "")).join(" + ")).join(" or ");
}

function operationView(path, method, op) {
  const body = el("div", {});
  body.append(el("p", { class: "muted" }, "Credentials: " + security(op)));
  if (op.parameters && op.parameters.length) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"),
      el("th", {}, "required"), el("th", {}, "schema")));
    for (const p of op.parameters) {
      table.append(el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
        el("td", {}, p.required ? "yes" : "no"), el("td", {}, schemaView(p.schema))));
    }
    body.append(table);
  }
  if (op.requestBody) {
    for (const [media, content] of Object.entries(op.requestBody.content)) {
      body.append(el("p", {}, "Body (", el("code", {}, media), "): "), schemaView(content.schema));
    }
  }
  const responses = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning"),
    el("th", {}, "body")));
  for (const [status, r] of Object.entries(op.responses)) {
    const content = Object.entries(r.content || {});
    const cell = el("td", {});
    for (const [media, c] of content) {
      const codes = c.schema && c.schema.allOf ? c.schema.allOf[1].properties.code.enum : null;
      cell.append(el("code", {}, media), " ");
      if (codes) cell.append(el("div", {}, "code: ", ...codes.map((x) => el("code", {}, x + " "))));
      else if (c.schema) cell.append(schemaView(c.schema));
    }
    responses.append(el("tr", {}, el("td", {}, status), el("td", {}, ...prose(r.description)), cell));
  }
  body.append(responses);
  const id = "op-" + op.operationId;
  return el("details", { id: id }, el("summary", {}, el("span", { class: "method " + method }, method.toUpperCase()),
    el("code", {}, path), " — ", ...prose(op.summary)), body);
}

async function main() {
  const doc = await (await fetch("/openapi.json")).json();
  document.getElementById("title").textContent = doc.info.title + " " + doc.info.version;
  document.getElementById("description").replaceChildren(...prose(doc.info.description));
  document.getElementById("version").textContent = doc.openapi;
  const byTag = new Map();
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operationView(path, method, op));
    }
  }
  const main = document.getElementById("operations");
  const toc = document.getElementById("toc");
  main.replaceChildren();
  for (const [tag, views] of byTag) {
    toc.append(el("a", { href: "#tag-" + tag }, tag), " ");
    main.append(el("h2", { id: "tag-" + tag }, tag), ...views);
  }
  const schemas = document.getElementById("schemas");
  schemas.append(el("h2", {}, "Schemas"));
  for (const [name, schema] of Object.entries(doc.components.schemas)) {
    schemas.append(el("details", { id: "schema-" + name }, el("summary", {}, name),
      el("pre", {}, JSON.stringify(schema, null, 2))));
  }
  const target = location.hash && document.querySelector(location.hash);
  if (target && target.tagName === "DETAILS") target.open = true;
}

main().catch((err) => {
  document.getElementById("operations").textContent = "Could not load /openapi.json: " + err;
});
