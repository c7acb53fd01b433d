// The dashboard's shell: log in, route between pages (#hosts, #vms, ...), refresh the visible
// page every few seconds, and sample the VO pools in the background for their live chart.
import { api, ApiError, forget, setToken, token } from "./api.js";
import { el } from "./dom.js";
import * as hosts from "./pages/hosts.js";
import * as vms from "./pages/vms.js";
import * as pools from "./pages/pools.js";
import * as accounting from "./pages/accounting.js";
import * as audit from "./pages/audit.js";
import { samplePools } from "./series.js";

export const REFRESH_MS = 3000;
const PAGES = { hosts, vms, pools, accounting, audit };

const $ = (id) => document.getElementById(id);
const ctx = { me: null, lifecycle: null };
let current = null;
let timer = null;
let sampler = null;

function status(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

function showLogin(message = "") {
  stop();
  $("top").hidden = true;
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("token").focus();
}

function stop() {
  if (timer) clearInterval(timer);
  if (sampler) clearInterval(sampler);
  timer = sampler = null;
  if (current && current.unmount) current.unmount();
  current = null;
}

/** Errors from any page: a lost session goes back to the login form, the rest to the footer. */
export function report(err) {
  if (err instanceof ApiError && err.status === 401) {
    forget();
    showLogin("Your session is no longer valid: " + err.message);
    return;
  }
  status(err instanceof ApiError ? `${err.code}: ${err.message}` : String(err), true);
}

async function refresh() {
  if (!current) return;
  try {
    await current.refresh();
    status("updated " + new Date().toISOString().slice(11, 19) + " UTC");
  } catch (err) {
    report(err);
  }
}

function route() {
  if (!ctx.me) return;
  const name = (window.location.hash || "#hosts").slice(1);
  const page = PAGES[name] ? name : "hosts";
  if (current) { if (current.unmount) current.unmount(); current = null; }
  for (const a of $("nav").querySelectorAll("a")) a.classList.toggle("active", a.dataset.page === page);
  const main = $("main");
  main.replaceChildren();
  current = PAGES[page].mount(main, ctx, { report, refresh });
  refresh();
}

async function start() {
  stop();  // a second submit must not start a second set of timers
  try {
    ctx.me = await api("/users/me");
    ctx.lifecycle = await api("/lifecycle");
  } catch (err) {
    ctx.me = null;
    if (err instanceof ApiError && err.status === 401) { forget(); showLogin("That token was refused."); }
    else showLogin("Cannot reach the daemon: " + (err.message || err));
    return;
  }
  $("login").hidden = true;
  $("top").hidden = false;
  $("main").hidden = false;
  const who = $("whoami");
  who.replaceChildren(el("span", {}, ctx.me.name),
    el("span", { class: "muted" }, ` (${ctx.me.is_admin ? "administrator" : "group " + (ctx.me.group ?? ctx.me.group_id)})`));
  timer = setInterval(refresh, REFRESH_MS);
  const sample = () => samplePools().catch(report);
  sample();
  sampler = setInterval(sample, REFRESH_MS);
  route();
}

window.addEventListener("hashchange", route);

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    $("token").value = "";
    if (!t) return;
    setToken(t);
    start();
  });
  $("logout").addEventListener("click", () => {
    forget();
    ctx.me = null;
    showLogin("Logged out.");
  });
  if (token()) start(); else showLogin();
});
