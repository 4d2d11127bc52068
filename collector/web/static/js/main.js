// The page's router: the URL's hash holds the whole view, so a view can be shared.
//   #/runs?experiment=E&status=S&tag=k=v&where=acc>0.9&columns=acc&sort=-start&offset=0
//   #/run/<id>?tab=metrics|logs|artifacts|overview&x=step&smooth=0&log=0
//   #/compare?runs=a,b

import { onTokenNeeded, setToken, token } from "./api.js";
import { clear, h } from "./dom.js";
import { renderCompare } from "./compare.js";
import { renderRun } from "./run.js";
import { renderRuns } from "./runs.js";

const app = document.getElementById("app");
let leave = null;  // the current view's cleanup (live follows, charts)

window.__mltrailErrors = [];
function showError(message) {
  window.__mltrailErrors.push(message);
  const box = document.getElementById("errors");
  box.hidden = false;
  box.append(h("div", {}, message));
}
window.addEventListener("error", (e) => showError(`script error: ${e.message}`));
window.addEventListener("unhandledrejection", (e) => showError(`script error: ${e.reason}`));

export function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/runs";
  const [path, query = ""] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent),
           params: new URLSearchParams(query) };
}

export function navigate(path, params, { replace = false } = {}) {
  const query = params && [...params].length ? `?${params}` : "";
  const next = `#${path}${query}`;
  if (replace) history.replaceState(null, "", next);
  else location.hash = next;
  if (replace) route();
}

async function route() {
  if (leave) { leave(); leave = null; }
  document.body.dataset.ready = "";
  const { parts, params } = parseHash();
  const ctx = { app, params, navigate, setLeave: (fn) => { leave = fn; } };
  try {
    if (parts[0] === "run" && parts[1]) {
      document.body.dataset.view = "run";
      await renderRun(ctx, parts[1]);
    } else if (parts[0] === "compare") {
      document.body.dataset.view = "compare";
      await renderCompare(ctx);
    } else {
      document.body.dataset.view = "runs";
      await renderRuns(ctx);
    }
    document.body.dataset.ready = "1";
    window.__mltrailReadyAt = performance.now();  // for bench/ui_load.py
  } catch (err) {
    clear(app, h("div", { class: "error-box" }, h("strong", {}, "Could not load this view: "),
      err.message));
    document.body.dataset.ready = "error";
  }
}

const dialog = document.getElementById("token-dialog");
let asking = null;  // one prompt at a time: parallel requests refused together share it
onTokenNeeded((reason) => asking || (asking = new Promise((resolve) => {
  document.getElementById("token-reason").textContent = reason;
  const input = document.getElementById("token-input");
  input.value = "";
  dialog.addEventListener("close", () => {
    setToken(input.value.trim());
    document.getElementById("token-button").hidden = !token();
    asking = null;
    resolve();
  }, { once: true });
  dialog.showModal();
})));
const signOut = document.getElementById("token-button");
signOut.hidden = !token();
signOut.addEventListener("click", () => { setToken(""); signOut.hidden = true; route(); });

window.addEventListener("hashchange", route);
route();
