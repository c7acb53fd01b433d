// Charts drawn as plain SVG (no library, nothing fetched): a time-series line chart and a bar
// chart. Labels are text nodes like everything else.
import { fmtNum, svg } from "./dom.js";

const W = 760, H = 260, L = 48, R = 16, T = 28, B = 36;

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function yAxis(root, max, label) {
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    const y = T + (H - T - B) * (1 - i / 4);
    root.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y, y2: y }));
    root.append(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, fmtNum(v, 1)));
  }
  root.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  if (label) root.append(svg("text", { x: 4, y: 14 }, label));
}

function legend(root, labels) {
  let x = L + 120;
  labels.forEach((name, i) => {
    root.append(svg("rect", { class: "s" + (i % 5), x, y: 8, width: 10, height: 10 }));
    root.append(svg("text", { class: "legend", x: x + 14, y: 17 }, name));
    x += 24 + 7 * name.length;
  });
}

/** series: [{label, points: [[unixSeconds, value], ...]}]; spans [from, to] on the x axis. */
export function lineChart(series, { from, to, yLabel = "" } = {}) {
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" });
  const all = series.flatMap((s) => s.points);
  const t1 = to ?? Math.max(...all.map((p) => p[0]), Date.now() / 1000);
  const t0 = from ?? Math.min(...all.map((p) => p[0]), t1 - 60);
  const span = Math.max(t1 - t0, 1);
  const max = niceMax(Math.max(1, ...all.map((p) => p[1])));
  yAxis(root, max, yLabel);
  for (let i = 0; i <= 4; i++) {
    const t = t0 + (span * i) / 4;
    const x = L + (W - L - R) * (i / 4);
    root.append(svg("text", { x, y: H - B + 16, "text-anchor": "middle" },
      new Date(t * 1000).toISOString().slice(11, 16) + " UTC"));
  }
  const sx = (t) => L + ((t - t0) / span) * (W - L - R);
  const sy = (v) => T + (H - T - B) * (1 - v / max);
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => p[0] >= t0 && p[0] <= t1);
    if (pts.length === 0) return;
    const line = pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { class: "s" + (i % 5), points: line, "data-series": s.label }));
  });
  legend(root, series.map((s) => s.label));
  if (all.length === 0) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no samples yet"));
  }
  return root;
}

/** categories: names on the x axis; series: [{label, values: [number per category]}]. */
export function barChart(categories, series, { yLabel = "" } = {}) {
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" });
  const max = niceMax(Math.max(1e-9, ...series.flatMap((s) => s.values)));
  yAxis(root, max, yLabel);
  const n = Math.max(categories.length, 1);
  const slot = (W - L - R) / n;
  const bw = Math.max(2, (slot * 0.8) / Math.max(series.length, 1));
  categories.forEach((cat, ci) => {
    const x0 = L + slot * ci + slot * 0.1;
    series.forEach((s, si) => {
      const v = s.values[ci] || 0;
      const h = ((H - T - B) * v) / max;
      root.append(svg("rect", { class: "barv s" + (si % 5), x: x0 + bw * si, y: H - B - h, width: bw, height: h },
        svg("title", {}, `${cat}: ${s.label} ${v}`)));
    });
    root.append(svg("text", { x: L + slot * ci + slot / 2, y: H - B + 16, "text-anchor": "middle" },
      String(cat).slice(0, 24)));
  });
  legend(root, series.map((s) => s.label));
  return root;
}
