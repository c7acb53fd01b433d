// The pools' recent history, kept in this tab (sessionStorage): the REST API reports each pool's
// current numbers only, so the page samples them every few seconds and keeps the last hours.
import { api } from "./api.js";

const KEY = "vocloud.poolseries";
export const KEEP_S = 6 * 3600;
const MAX_POINTS = 5000;

export const FIELDS = ["pending_jobs", "desired", "booting", "running", "draining", "idle"];

function load() {
  try { return JSON.parse(sessionStorage.getItem(KEY) || "{}"); } catch { return {}; }
}

/** {vo: [[t, pending_jobs, desired, booting, running, draining, idle], ...]} */
export function series() { return load(); }

export async function samplePools() {
  const pools = await api("/pools");
  const now = Date.now() / 1000;
  const all = load();
  const seen = new Set();
  for (const p of pools) {
    seen.add(p.vo);
    const rows = all[p.vo] || [];
    rows.push([now, ...FIELDS.map((f) => Number(p[f]) || 0)]);
    all[p.vo] = rows.filter((r) => r[0] >= now - KEEP_S).slice(-MAX_POINTS);
  }
  for (const vo of Object.keys(all)) if (!seen.has(vo)) delete all[vo];
  try {
    sessionStorage.setItem(KEY, JSON.stringify(all));
  } catch {
    // storage full: keep the newer half
    for (const vo of Object.keys(all)) all[vo] = all[vo].slice(-MAX_POINTS / 2);
    sessionStorage.setItem(KEY, JSON.stringify(all));
  }
  return pools;
}
