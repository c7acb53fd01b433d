// Accounting per VO (or user, host, pool, day, month) over a period, with a chart. Calls
// GET /api/v1/accounting when the daemon has it; the REST API decides whose usage is shown.
import { api, ApiError, hasRoute } from "../api.js";
import { barChart } from "../chart.js";
import { el, fmtNum, sortableTable } from "../dom.js";
import { unavailable } from "./unavailable.js";

const PERIODS = [["last 24 hours", 86400], ["last 7 days", 7 * 86400], ["last 30 days", 30 * 86400], ["all time", 0]];
const BY = ["vo", "user", "host", "pool", "day", "month"];
const METRICS = [["cpu_hours", "core-hours"], ["vm_hours", "VM-hours"], ["gib_hours", "GiB-hours"], ["cost", "cost"]];

export function mount(main, _ctx, { report }) {
  const body = el("div", { id: "accounting" });
  const by = el("select", { id: "acct-by" }, ...BY.map((b) => el("option", { value: b }, b)));
  const period = el("select", { id: "acct-period" }, ...PERIODS.map(([l, s]) => el("option", { value: s }, l)));
  period.value = String(30 * 86400);
  const metric = el("select", { id: "acct-metric" }, ...METRICS.map(([k, l]) => el("option", { value: k }, l)));
  const info = el("p", { class: "muted" });
  const chartBox = el("div", { id: "acct-chart" });
  const { table, render } = sortableTable([
    { key: "key", label: "Key", render: (r) => r.key ?? "(none)" },
    { key: "vms", label: "VMs", num: true },
    { key: "vm_hours", label: "VM-hours", num: true },
    { key: "cpu_hours", label: "Core-hours", num: true },
    { key: "gib_hours", label: "GiB-hours", num: true },
    { key: "cost", label: "Cost", num: true },
  ], { sortKey: "cpu_hours", sortDir: -1 });
  table.id = "acct-table";
  let available = null;
  let last = null;
  const toolbar = el("div", { class: "toolbar" }, el("label", {}, "by ", by), el("label", {}, "period ", period),
    el("label", {}, "chart ", metric));
  main.append(el("h1", {}, "Accounting"), body);

  function draw() {
    if (!last) return;
    const rows = last.rows || [];
    const m = metric.value;
    const label = METRICS.find(([k]) => k === m)[1];
    chartBox.replaceChildren(barChart(rows.map((r) => r.key ?? "(none)"),
      [{ label, values: rows.map((r) => Number(r[m]) || 0) }], { yLabel: label }));
    const t = last.total || {};
    info.textContent = `${last.from_iso ?? ""} to ${last.to_iso ?? ""}: ${fmtNum(t.cpu_hours)} core-hours, ` +
      `${fmtNum(t.vm_hours)} VM-hours, ${fmtNum(t.gib_hours)} GiB-hours over ${t.vms ?? 0} VM(s)` +
      (last.prices ? `; prices ${fmtNum(last.prices.cpu_hour, 4)} per core-hour, ${fmtNum(last.prices.gib_hour, 4)} per GiB-hour` : "");
    render(rows);
  }

  async function load() {
    const secs = Number(period.value);
    const query = { by: by.value };
    if (secs > 0) query.from = String(Math.floor(Date.now() / 1000 - secs));
    last = await api("/accounting", { query });
    draw();
  }
  for (const s of [by, period]) s.addEventListener("change", () => load().catch(report));
  metric.addEventListener("change", draw);

  return {
    async refresh() {
      if (available === null) {
        available = await hasRoute("/accounting");
        body.replaceChildren(...(available ? [toolbar, info, chartBox, table] : [unavailable("Accounting", "/api/v1/accounting")]));
      }
      if (!available) return;
      try {
        await load();
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          available = false;
          body.replaceChildren(unavailable("Accounting", "/api/v1/accounting"));
          return;
        }
        throw err;
      }
    },
  };
}
