// Hosts: state and capacity, with bars of allocated CPU and memory.
import { api } from "../api.js";
import { el, fmtNum, fmtTime, sortableTable } from "../dom.js";

function bar(used, total, unit) {
  const frac = total > 0 ? Math.min(1, Math.max(0, used / total)) : 0;
  const step = Math.round(frac * 20) * 5;
  const level = frac >= 0.95 ? " full" : frac >= 0.75 ? " high" : "";
  return el("div", { class: "bar", title: `${fmtNum(used)} of ${fmtNum(total)} ${unit} allocated` },
    el("div", { class: `fill w${step}${level}` }),
    el("span", { class: "label" }, `${fmtNum(used)} / ${fmtNum(total)} ${unit}`));
}

export function mount(main) {
  const summary = el("p", { class: "muted" });
  const { table, render } = sortableTable([
    { key: "id", label: "ID", num: true },
    { key: "name", label: "Name" },
    { key: "state", label: "State", render: (h) => el("span", { class: "state state-" + h.state }, h.state) },
    { key: "cluster", label: "Cluster" },
    { key: "vmm", label: "VMM" },
    { key: "running_vms", label: "VMs", num: true },
    { key: "alloc_cpu", label: "CPU allocated", render: (h) => bar(h.alloc_cpu, h.total_cpu, "cores") },
    { key: "alloc_mem", label: "Memory allocated", render: (h) => bar(h.alloc_mem / 1024, h.total_mem / 1024, "GiB") },
    { key: "monitored_at", label: "Monitored", render: (h) => fmtTime(h.monitored_at) },
    { key: "error", label: "Error", cls: "error" },
  ], { sortKey: "id" });
  table.id = "hosts-table";
  main.append(el("h1", {}, "Hosts"), summary, table);
  return {
    async refresh() {
      const hosts = await api("/hosts");
      const cpu = hosts.reduce((a, h) => a + h.alloc_cpu, 0);
      const total = hosts.reduce((a, h) => a + h.total_cpu, 0);
      summary.textContent = `${hosts.length} host(s); ${fmtNum(cpu)} of ${fmtNum(total)} cores allocated`;
      render(hosts);
    },
  };
}
