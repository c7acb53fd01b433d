// Shared by the accounting and audit pages: the notice shown when this daemon has no such route.
import { el } from "../dom.js";

export function unavailable(what, path) {
  return el("p", { class: "notice", id: "unavailable" },
    `${what} is not available on this daemon (it serves no ${path}). `,
    "The page lights up when the daemon is upgraded to a version that has it.");
}
