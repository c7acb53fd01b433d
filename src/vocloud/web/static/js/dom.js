// DOM helpers. Text always goes in as text nodes (textContent), never as HTML: names, reasons and
// console output are user-controlled. There is deliberately no helper that takes HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "text") {
      node.textContent = String(value);
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: el("td", {class: "num"}, "text", otherNode). */
export function el(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element (charts). */
export function svg(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

export function fmtTime(t) {
  if (t === null || t === undefined) return "";
  const d = new Date(t * 1000);
  return d.toISOString().replace("T", " ").slice(0, 19);
}

export function fmtNum(x, digits = 2) {
  if (x === null || x === undefined || x === "") return "";
  const n = Number(x);
  if (!Number.isFinite(n)) return String(x);
  if (Number.isInteger(n)) return String(n);
  return Math.abs(n) >= 1 ? n.toFixed(digits) : String(Number(n.toPrecision(2)));  // 0.0042, not 0.00
}

/** A table whose columns can be sorted by clicking their heads. cols: [{key, label, num, value, render}]. */
export function sortableTable(cols, { sortKey, sortDir = 1, onSort } = {}) {
  const thead = el("tr", {});
  const tbody = el("tbody", {});
  const table = el("table", {}, el("thead", {}, thead), tbody);
  const state = { key: sortKey, dir: sortDir, rows: [], rowFn: null };
  for (const c of cols) {
    const th = el("th", { class: "sortable" + (c.num ? " num" : ""), "data-key": c.key }, c.label);
    th.addEventListener("click", () => {
      state.dir = state.key === c.key ? -state.dir : 1;
      state.key = c.key;
      render(state.rows);
      if (onSort) onSort(state.key, state.dir);
    });
    thead.append(th);
  }
  function render(rows) {
    state.rows = rows;
    const col = cols.find((c) => c.key === state.key);
    const sorted = [...rows];
    if (col) {
      const v = col.value || ((r) => r[col.key]);
      sorted.sort((a, b) => {
        const x = v(a), y = v(b);
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * state.dir;
      });
    }
    for (const th of thead.children) {
      th.classList.toggle("sorted-asc", th.dataset.key === state.key && state.dir > 0);
      th.classList.toggle("sorted-desc", th.dataset.key === state.key && state.dir < 0);
    }
    tbody.replaceChildren(...sorted.map((r) => el("tr", { "data-id": r.id },
      ...cols.map((c) => el("td", { class: c.num ? "num" : c.cls },
        c.render ? c.render(r) : (c.num ? fmtNum(r[c.key]) : (r[c.key] ?? "")))))));
  }
  return { table, render };
}
