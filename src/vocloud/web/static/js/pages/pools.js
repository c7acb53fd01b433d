// VO pools: current numbers, a live chart of pending jobs against workers (sampled by the page,
// series.js), and the pool's recent decisions with their reasons.
import { api } from "../api.js";
import { lineChart } from "../chart.js";
import { el, fmtTime, sortableTable } from "../dom.js";
import { FIELDS, KEEP_S, series } from "../series.js";

const WINDOWS = [["all samples", 0], ["15 min", 900], ["1 hour", 3600], ["3 hours", 3 * 3600], ["6 hours", KEEP_S]];

function kv(pairs) {
  return el("div", { class: "kv" }, ...pairs.flatMap(([k, v]) => [el("span", { class: "k" }, k), el("span", {}, v ?? "")]));
}

export function mount(main) {
  let selected = null;
  const cards = el("div", { class: "cards", id: "pool-cards" });
  const windowSel = el("select", { id: "pool-window" }, ...WINDOWS.map(([l, s]) => el("option", { value: s }, l)));
  windowSel.value = "0";
  const voSel = el("select", { id: "pool-vo" });
  const chartBox = el("div", { id: "pool-chart" });
  const events = sortableTable([
    { key: "time", label: "Time", render: (e) => fmtTime(e.time) },
    { key: "action", label: "Decision" },
    { key: "count", label: "Count", num: true },
    { key: "vm_id", label: "VM", num: true },
    { key: "reason", label: "Reason", cls: "reason" },
  ], { sortKey: "time", sortDir: -1 });
  events.table.id = "pool-events";
  const empty = el("p", { class: "notice", hidden: true },
    "No VO pool is visible to you (none exists, or the daemon runs without a batch system).");
  voSel.addEventListener("change", () => { selected = voSel.value; redraw(); loadEvents(); });
  windowSel.addEventListener("change", () => redraw());

  function redraw() {
    const rows = (series()[selected] || []);
    const now = Date.now() / 1000;
    const span = Number(windowSel.value);
    const from = span > 0 ? now - span : Math.min(now - 60, ...rows.map((r) => r[0]));
    const col = (f) => 1 + FIELDS.indexOf(f);
    const pts = (fn) => rows.map((r) => [r[0], fn(r)]);
    chartBox.replaceChildren(lineChart([
      { label: "pending jobs", points: pts((r) => r[col("pending_jobs")]) },
      { label: "workers (booting+running+draining)", points: pts((r) => r[col("booting")] + r[col("running")] + r[col("draining")]) },
      { label: "desired", points: pts((r) => r[col("desired")]) },
    ], { from, to: now, yLabel: selected ? `pool ${selected}` : "" }));
  }

  async function loadEvents() {
    if (!selected) { events.render([]); return; }
    events.render(await api(`/pools/${encodeURIComponent(selected)}/events`, { query: { limit: 200 } }));
  }

  main.append(el("h1", {}, "VO pools"), empty, cards,
    el("h2", {}, "Pending jobs and workers"),
    el("div", { class: "toolbar" }, el("label", {}, "pool ", voSel), el("label", {}, "last ", windowSel),
      el("span", { class: "muted" }, "sampled by this page every few seconds while you are logged in")),
    chartBox, el("h2", {}, "Decisions"), events.table);

  return {
    async refresh() {
      const pools = await api("/pools");
      empty.hidden = pools.length > 0;
      cards.replaceChildren(...pools.map((p) => el("div", { class: "card", "data-vo": p.vo },
        el("h3", {}, p.vo, " ", el("span", { class: "muted" }, p.enabled ? (p.deleting ? "(deleting)" : "") : "(disabled)")),
        kv([["pending jobs", p.pending_jobs], ["pending cores", p.pending_cores], ["desired", p.desired],
          ["booting", p.booting], ["running", p.running], ["draining", p.draining], ["idle", p.idle],
          ["min / max", `${p.min ?? "-"} / ${p.max ?? "-"}`], ["worker", `${p.cores} cores, ${p.memory} MiB`],
          ["template", p.template]]),
        ...(p.notes || []).map((n) => el("p", { class: "muted note" }, n)))));
      const names = pools.map((p) => p.vo);
      if (!names.includes(selected)) selected = names[0] ?? null;
      voSel.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
      if (selected) voSel.value = selected;
      redraw();
      await loadEvents();
    },
  };
}
