// zdse-web's page script: no build step, no library. It reads the page's
// data-* attributes, the JSON API and the Server-Sent Events of zdse-web
// (zdse/web/stream.py), and renders with textContent only (a value from the
// bus is never parsed as HTML).
"use strict";

const PAGE_SIZE = 50;        // rows rendered at once: a 100,000-row table renders 50
const FLASH_MS = 1500;       // how long a changed row stays highlighted
const SCAN_COLUMNS = 50;     // rows looked at to name the columns of dict rows

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function cellText(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function seconds(value) {
  return typeof value === "number" ? value.toFixed(1) + "s" : "-";
}

function banner(text) {
  const node = document.getElementById("banner");
  node.textContent = text || "";
  node.hidden = !text;
}

// A stream that says when zdse-web itself cannot be reached; EventSource
// reconnects by itself.
function listen(url, onEvent) {
  const source = new EventSource(url);
  source.onmessage = (msg) => onEvent(JSON.parse(msg.data));
  source.onerror = () => banner("zdse-web does not answer: reconnecting…");
  source.onopen = () => banner("");
  // A page left for another (or kept in the back-forward cache) ends its
  // stream, and so zdse-web's subscriptions, at once.
  window.addEventListener("pagehide", () => source.close());
  return source;
}

// --- the front page ---------------------------------------------------------

function fillRows(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = el("tr");
    for (const cell of cells) tr.append(cell instanceof Node ? el("td", {}, cell) : el("td", {}, cellText(cell)));
    return tr;
  }));
}

function control(name, action) {
  fetch(`/api/services/${encodeURIComponent(name)}/${action}`, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: "{}",
  }).then((r) => r.json()).then((v) => {
    if (v.error) banner(`${action} ${name}: ${v.message}`);
  });
}

// A cage as the page names it: its ROUTER endpoint without tcp://.
function cageLabel(router) {
  return router.replace(/^tcp:\/\//, "");
}

// The cages that know a service or route ("all": every cage listed); marked
// when some cage that answered does not (a service registered at one of two).
function cagesCell(known, up, listed) {
  const missing = up.filter((r) => !known.includes(r));
  const labels = known.map(cageLabel).join(", ");
  if (!missing.length) return el("span", {class: "cages", title: labels}, known.length === listed ? "all" : labels);
  return el("span", {class: "cages partial", title: `not known to ${missing.map(cageLabel).join(", ")}`},
    known.length ? `${labels} only` : "none");
}

function cagesPanel(o) {
  const tbody = document.querySelector("#cages tbody");
  if (!tbody) return;
  fillRows(tbody, o.cages.map((c) => {
    const n = c.counters;
    const dropped = c.reachable ? (n.dropped_hwm || 0) + (n.dropped_budget || 0) : "-";
    return [cageLabel(c.router),
      el("span", {class: `state state-${c.reachable ? "up" : "unreachable"}`}, c.reachable ? "up" : "unreachable"),
      c.epoch || "-", seconds(c.uptime), c.nodes ?? "-", c.routes ?? "-",
      n.routed ?? "-", n.published ?? "-", c.reachable ? n.noroute || 0 : "-", dropped, c.error];
  }));
  for (const [i, c] of o.cages.entries()) {
    tbody.rows[i].dataset.cage = c.router;
    tbody.rows[i].dataset.state = c.reachable ? "up" : "unreachable";
  }
}

function countersTable(o, several) {
  const tbody = document.querySelector("#stats tbody");
  if (!several) { fillRows(tbody, Object.entries(o.stats)); return; }
  const names = [...new Set(o.cages.flatMap((c) => Object.keys(c.stats)))];
  fillRows(tbody, names.map((k) => [k, ...o.cages.map((c) => (c.reachable && k in c.stats ? c.stats[k] : "-"))]));
}

function frontPage(app) {
  const several = JSON.parse(app.dataset.cages) > 1;
  listen("/api/events/overview", (o) => {
    banner(o.reachable ? "" : `Cage unreachable: ${o.error}`);
    document.body.classList.toggle("stale", !o.reachable);
    const up = o.cages.filter((c) => c.reachable).map((c) => c.router);
    cagesPanel(o);
    const tbody = document.querySelector("#services tbody");
    fillRows(tbody, o.services.map((s) => {
      const row = [
        el("a", {href: `/service/${encodeURIComponent(s.name)}`}, s.name),
        el("span", {class: `state state-${s.state || "running"}`}, s.state || "running"),
      ];
      if (several) row.push(s.state === "gone" ? "" : cagesCell(s.cages || [], up, o.cages.length));
      row.push(s.module, s.pid || "-", s.supervised ? s.restarts : "-",
        s.pid ? seconds(s.uptime) : "-", seconds(s.last_seen),
        (s.addresses || []).join(", "), s.last_error || "");
      if (o.control) {
        row.push(s.supervised ? el("span", {}, ...["start", "stop", "reload"].map(
          (a) => el("button", {onclick: () => control(s.name, a)}, a))) : "");
      }
      return row;
    }));
    for (const [i, s] of o.services.entries()) {
      tbody.rows[i].dataset.service = s.name;
      tbody.rows[i].dataset.state = s.state || "running";
      tbody.rows[i].dataset.cages = (s.cages || []).join(" ");
    }
    fillRows(document.querySelector("#routes tbody"), o.routes.map(([pattern, names, cages]) => {
      const row = [pattern, (names || []).join(", ")];
      if (several) row.push(cagesCell(cages || [], up, o.cages.length));
      return row;
    }));
    countersTable(o, several);
  });
}

// --- tables -------------------------------------------------------------------

// One publisher's table, kept sorted (by the row's JSON) so that a delta is
// a binary search and a splice, never a re-sort or a re-fetch.
class Table {
  constructor(columns) {
    this.declared = columns || null;
    this.entries = [];     // {k, row, t}
    this.shape = "list";
    this.scalar = undefined;
  }

  static entry(key, row, t) { return {k: key, row: row, t: t}; }

  find(key) {
    let lo = 0, hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.entries[mid].k < key) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  insert(entry) { this.entries.splice(this.find(entry.k), 0, entry); }

  remove(key) {
    const i = this.find(key);
    if (i < this.entries.length && this.entries[i].k === key) this.entries.splice(i, 1);
  }

  snapshot(data, t) {
    if (Array.isArray(data)) {
      this.shape = "list";
      this.entries = data.map((row) => Table.entry(JSON.stringify(row), row, t));
    } else if (data !== null && typeof data === "object") {
      this.shape = "dict";
      this.entries = Object.entries(data).map(([k, v]) => Table.entry(k, [k, v], t));
    } else {
      this.shape = "scalar";
      this.scalar = data;
      this.entries = [];
    }
    this.entries.sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0));
  }

  // Apply a delta (zdse/node/delta.py's wire forms); the rows it adds are marked
  // with time t, for the highlight.
  delta(d, now) {
    const [op, a, b] = d;
    if (op === "replace") { this.snapshot(a, now); return; }
    if (op === "rows" && this.shape === "list") {
      for (const row of b) this.remove(JSON.stringify(row));
      for (const row of a) this.insert(Table.entry(JSON.stringify(row), row, now));
      return;
    }
    if (op === "keys" && this.shape === "dict") {
      for (const k of b) this.remove(String(k));
      for (const [k, v] of Object.entries(a)) {
        this.remove(k);
        this.insert(Table.entry(k, [k, v], now));
      }
      return;
    }
    throw new Error(`cannot apply ${op} to a ${this.shape} table`);
  }

  // The header and a function giving a row's cells.
  layout() {
    const sample = this.entries.slice(0, SCAN_COLUMNS).map((e) => (this.shape === "dict" ? e.row[1] : e.row));
    const rowsAreMaps = sample.length && sample.every((r) => r !== null && typeof r === "object" && !Array.isArray(r));
    let names, cells;
    if (rowsAreMaps) {
      names = [...new Set(sample.flatMap((r) => Object.keys(r)))];
      cells = (r) => names.map((n) => r[n]);
    } else if (sample.length && sample.every(Array.isArray)) {
      const width = Math.max(...sample.map((r) => r.length));
      names = Array.from({length: width}, (_, i) => (this.declared && this.declared[i]) || `#${i + 1}`);
      cells = (r) => names.map((_, i) => r[i]);
    } else {
      names = [this.shape === "dict" ? "value" : "row"];
      cells = (r) => [r];
    }
    if (this.shape === "dict") return {names: ["key", ...names], cells: (row) => [row[0], ...cells(row[1])]};
    return {names, cells};
  }
}

// A panel: one publisher's table of one dataindex, paged.
class Panel {
  constructor(container, publisher, dataindex, columns) {
    this.table = new Table(columns);
    this.page = 0;
    this.seq = 0;
    this.dirty = false;
    this.title = el("h3", {}, `${dataindex} `, el("small", {}, `from ${publisher}`));
    this.status = el("span", {class: "badge"}, "");
    this.info = el("span", {class: "info"});
    this.head = el("thead");
    this.body = el("tbody");
    const pager = el("div", {class: "pager"},
      el("button", {onclick: () => this.go(0)}, "«"),
      el("button", {onclick: () => this.go(this.page - 1)}, "‹"),
      this.info,
      el("button", {onclick: () => this.go(this.page + 1)}, "›"),
      el("button", {onclick: () => this.go(Infinity)}, "»"));
    this.node = el("section", {class: "panel", "data-publisher": publisher, "data-dataindex": dataindex},
      this.title, this.status, pager, el("table", {class: "grid data"}, this.head, this.body));
    container.append(this.node);
  }

  pages() { return Math.max(1, Math.ceil(this.table.entries.length / PAGE_SIZE)); }

  go(page) {
    this.page = Math.max(0, Math.min(page, this.pages() - 1));
    this.render();
  }

  schedule() {
    if (this.dirty) return;
    this.dirty = true;
    requestAnimationFrame(() => { this.dirty = false; this.render(); });
  }

  setColumns(columns) {
    if (columns && JSON.stringify(columns) !== JSON.stringify(this.table.declared)) {
      this.table.declared = columns;
      this.schedule();
    }
  }

  lost() {
    this.node.classList.add("lost");
    this.status.textContent = "lost";
  }

  event(e) {
    const now = Date.now();
    this.node.classList.remove("lost");
    this.status.textContent = "";
    this.seq = e.seq;
    try {
      if (e.t === "snapshot") this.table.snapshot(e.data, 0);
      else this.table.delta(e.delta, now);
    } catch (err) {
      this.status.textContent = `out of step (${err.message}): reload the page`;
    }
    this.schedule();
  }

  render() {
    const t = this.table;
    this.node.dataset.seq = this.seq;
    this.node.dataset.rows = t.entries.length;
    if (t.shape === "scalar") {
      this.head.replaceChildren();
      this.body.replaceChildren(el("tr", {}, el("td", {}, cellText(t.scalar))));
      this.info.textContent = "";
      return;
    }
    this.page = Math.min(this.page, this.pages() - 1);
    const start = this.page * PAGE_SIZE;
    const shown = t.entries.slice(start, start + PAGE_SIZE);
    const {names, cells} = t.layout();
    this.head.replaceChildren(el("tr", {}, ...names.map((n) => el("th", {}, n))));
    const now = Date.now();
    this.body.replaceChildren(...shown.map((entry) => {
      const tr = el("tr", {}, ...cells(entry.row).map((c) => el("td", {}, cellText(c))));
      const age = now - entry.t;
      if (age < FLASH_MS) {
        tr.className = "changed";
        tr.style.animationDelay = `-${age}ms`;  // a re-render continues the fade
      }
      return tr;
    }));
    const total = t.entries.length;
    this.info.textContent = total ? `rows ${start + 1}–${start + shown.length} of ${total} · page ${this.page + 1} of ${this.pages()}` : "no rows";
  }
}

function tablesPage(app) {
  const key = JSON.parse(app.dataset.key);
  const dataindexes = JSON.parse(app.dataset.dataindexes);
  const service = app.dataset.service ? JSON.parse(app.dataset.service) : null;
  const container = document.getElementById("panels");
  const panels = new Map();
  const columns = {};
  const state = document.getElementById("service-state");

  function panel(p, d) {
    const id = `${p}\u0000${d}`;
    if (!panels.has(id)) {
      const keys = [...panels.keys(), id].sort();
      const created = new Panel(container, p, d, columns[d]);
      panels.set(id, created);
      // Keep panels in a stable order, whatever order publishers answer in.
      const next = keys[keys.indexOf(id) + 1];
      if (next) container.insertBefore(created.node, panels.get(next).node);
    }
    return panels.get(id);
  }

  function setState(text) {
    if (!state) return;
    state.textContent = text;
    state.className = `state state-${text}`;
  }

  const params = new URLSearchParams({key: key});
  for (const d of dataindexes) params.append("dataindex", d);
  if (service) params.set("service", service);
  listen(`/api/events/tables?${params}`, (e) => {
    if (e.t === "snapshot" || e.t === "delta") {
      panel(e.p, e.d).event(e);
      if (service) { setState("running"); banner(""); }
    } else if (e.t === "lost") {
      const p = panels.get(`${e.p}\u0000${e.d}`);
      if (p) p.lost();
      if (service) setState("gone");
    } else if (e.t === "gone") {
      setState("gone");
      banner(`${e.service} is gone: nothing answers on its name`);
      for (const p of panels.values()) p.lost();
    } else if (e.t === "noroute") {
      banner(`No service listens on ${e.key} (yet): waiting`);
    } else if (e.t === "pubdata") {
      const rows = Object.entries(e.data).filter(([d]) => dataindexes.includes(d));
      for (const [d, info] of rows) {
        columns[d] = info.columns;
        for (const p of panels.values()) if (p.node.dataset.dataindex === d) p.setColumns(info.columns);
      }
      const tbody = document.querySelector("#pubdata tbody");
      if (tbody) {
        fillRows(tbody, rows.map(([d, info]) => [
          el("a", {href: `/service/${encodeURIComponent(service)}/${encodeURIComponent(d)}`}, d),
          info.seq, info.size === null ? "-" : info.size, (info.subscribers || []).join(", ")]));
      }
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const app = document.getElementById("app");
  const page = app.dataset.page;
  if (page === "front") frontPage(app);
  else if (page === "service" || page === "subscribe") tablesPage(app);
});
