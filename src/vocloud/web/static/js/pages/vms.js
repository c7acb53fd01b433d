// VMs: filter, sort, lifecycle actions through the REST API, console log.
import { api } from "../api.js";
import { el, fmtTime, sortableTable } from "../dom.js";

// actions that need more than a click (a target host) stay in the CLI
const UI_ACTIONS = new Set(["hold", "release", "terminate", "terminate-hard", "poweroff",
  "poweroff-hard", "undeploy", "suspend", "stop", "resume", "reboot", "retry"]);
const DESTRUCTIVE = new Set(["terminate", "terminate-hard", "poweroff-hard"]);

function allowed(lifecycle, state) {
  const user = new Set(lifecycle.vm_user_actions);
  return lifecycle.vm.filter((t) => t.state === state && user.has(t.action) && UI_ACTIONS.has(t.action))
    .map((t) => t.action).sort();
}

export function mount(main, ctx, { report, refresh }) {
  let rows = [];
  let knownStates = "";
  const filter = el("input", { type: "search", id: "vm-filter", placeholder: "filter: name, user, group, host, state" });
  const stateSel = el("select", { id: "vm-state" }, el("option", { value: "" }, "any state"));
  const done = el("input", { type: "checkbox", id: "vm-done" });
  const count = el("span", { class: "muted" });
  const consolePanel = el("div", { id: "console-panel" });

  // the chosen action and a pending confirmation survive the table's refreshes
  const chosen = new Map();

  function actionCell(vm) {
    const acts = allowed(ctx.lifecycle, vm.state);
    if (acts.length === 0) return "";
    const st = chosen.get(vm.id);
    const pick = st && acts.includes(st.action) ? st : { action: acts.includes("terminate") ? "terminate" : acts[0], armed: false };
    chosen.set(vm.id, pick);
    const sel = el("select", { class: "vm-action", "aria-label": `action for VM ${vm.id}` },
      ...acts.map((a) => el("option", { value: a }, a)));
    sel.value = pick.action;
    const btn = el("button", { type: "button", class: "btn secondary vm-run" }, "Run");
    const arm = (on) => {
      pick.armed = on;
      btn.textContent = on ? `Confirm ${pick.action}` : "Run";
      btn.classList.toggle("danger", on);
    };
    arm(pick.armed);
    btn.addEventListener("click", async () => {
      if (DESTRUCTIVE.has(pick.action) && !pick.armed) {
        arm(true);  // a second click confirms (no modal dialogs)
        return;
      }
      btn.disabled = true;
      chosen.delete(vm.id);
      try {
        await api(`/vms/${vm.id}/action`, { method: "POST", body: { action: pick.action } });
        await refresh();
      } catch (err) {
        report(err);
        btn.disabled = false;
      }
    });
    sel.addEventListener("change", () => { pick.action = sel.value; arm(false); });
    return el("span", {}, sel, " ", btn);
  }

  async function showConsole(vm) {
    consolePanel.replaceChildren(el("h2", {}, `Console of VM ${vm.id} `, el("span", { class: "muted" }, vm.name)),
      el("p", { class: "muted" }, "loading..."));
    try {
      const out = await api(`/vms/${vm.id}/log`);
      consolePanel.replaceChildren(
        el("h2", {}, `Console of VM ${vm.id} `, el("span", { class: "muted" }, vm.name)),
        out.note ? el("p", { class: "muted" }, out.note) : "",
        el("pre", { class: "console", id: "console-log" }, out.log || "(empty)"));
    } catch (err) {
      consolePanel.replaceChildren(el("p", { class: "error" }, `${err.code || "Error"}: ${err.message}`));
    }
  }

  const { table, render } = sortableTable([
    { key: "id", label: "ID", num: true },
    { key: "name", label: "Name", cls: "vm-name" },
    { key: "user", label: "User" },
    { key: "group", label: "Group" },
    { key: "state", label: "State", render: (v) => el("span", { class: "state state-" + v.state }, v.state) },
    { key: "cpu", label: "CPU", num: true },
    { key: "memory", label: "MiB", num: true },
    { key: "host", label: "Host" },
    { key: "created_at", label: "Created", render: (v) => fmtTime(v.created_at) },
    { key: "actions", label: "Action", value: () => 0, render: actionCell },
    { key: "log", label: "Console", value: () => 0, render: (v) =>
      el("button", { type: "button", class: "btn secondary vm-log", onclick: () => showConsole(v) }, "log") },
  ], { sortKey: "id", sortDir: -1 });
  table.id = "vms-table";

  function show() {
    const q = filter.value.trim().toLowerCase();
    const st = stateSel.value;
    const shown = rows.filter((v) => (!st || v.state === st) && (!q ||
      [v.name, v.user, v.group, v.host, v.state, String(v.id)].some((x) => (x || "").toLowerCase().includes(q))));
    count.textContent = `${shown.length} of ${rows.length} VM(s)`;
    render(shown);
  }
  filter.addEventListener("input", show);
  stateSel.addEventListener("change", show);
  done.addEventListener("change", () => refresh());

  main.append(el("h1", {}, "Virtual machines"),
    el("div", { class: "toolbar" }, filter, stateSel,
      el("label", {}, done, " show finished (DONE)"), count),
    table, consolePanel);

  return {
    async refresh() {
      rows = await api("/vms", { query: { all: done.checked ? "true" : "" } });
      const keep = stateSel.value;
      const states = [...new Set([...rows.map((v) => v.state), ...(keep ? [keep] : [])])].sort();
      if (states.join() !== knownStates) {  // rebuilt only when it changes (an open list stays open)
        knownStates = states.join();
        stateSel.replaceChildren(el("option", { value: "" }, "any state"),
          ...states.map((s) => el("option", { value: s }, s)));
        stateSel.value = keep;
      }
      show();
    },
  };
}
