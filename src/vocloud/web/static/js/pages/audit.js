// The audit log: state-changing calls, newest first (GET /api/v1/audit when the daemon has it;
// administrators see everyone's, other users their own — the REST API's rule).
import { api, ApiError, hasRoute } from "../api.js";
import { el, fmtTime, sortableTable } from "../dom.js";
import { unavailable } from "./unavailable.js";

export function mount(main) {
  const body = el("div", { id: "audit" });
  const filter = el("input", { type: "search", id: "audit-filter", placeholder: "filter: user, action, object, result" });
  const count = el("span", { class: "muted" });
  const { table, render } = sortableTable([
    { key: "time", label: "Time", render: (r) => fmtTime(r.time) },
    { key: "user", label: "User" },
    { key: "frontend", label: "Front-end" },
    { key: "action", label: "Action" },
    { key: "object", label: "Object" },
    { key: "result", label: "Result" },
    { key: "message", label: "Message" },
  ], { sortKey: "time", sortDir: -1 });
  table.id = "audit-table";
  let rows = [];
  let available = null;
  function show() {
    const q = filter.value.trim().toLowerCase();
    const shown = rows.filter((r) => !q || [r.user, r.action, r.object, r.result, r.frontend, r.message]
      .some((x) => String(x ?? "").toLowerCase().includes(q)));
    count.textContent = `${shown.length} of ${rows.length} record(s)`;
    render(shown);
  }
  filter.addEventListener("input", show);
  main.append(el("h1", {}, "Audit log"), body);
  return {
    async refresh() {
      if (available === null) {
        available = await hasRoute("/audit");
        body.replaceChildren(...(available ? [el("div", { class: "toolbar" }, filter, count), table]
          : [unavailable("The audit log", "/api/v1/audit")]));
      }
      if (!available) return;
      try {
        rows = await api("/audit", { query: { limit: 500 } });
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          available = false;
          body.replaceChildren(unavailable("The audit log", "/api/v1/audit"));
          return;
        }
        throw err;
      }
      show();
    },
  };
}
