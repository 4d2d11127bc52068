// The console and log streams of a run: the last lines first (more on request),
// search, a stream filter, and a live follow while the run is running. New lines
// keep the view at the bottom only if the reader is there: scrolling up stays put.

import { enc, follow, get } from "./api.js";
import { clear, fmtTime, h } from "./dom.js";

const TAIL = 5000;

export async function logView(body, run, params) {
  const tail = Number(params.get("tail") || TAIL);
  const first = await get(`runs/${enc(run.run_id)}/logs`, new URLSearchParams({ limit: "1" }));
  const streams = Object.keys(first.positions).sort();
  const from = Object.fromEntries(streams.map((s) => [s, Math.max(0, first.positions[s] - tail)]));
  const start = Object.entries(from).map(([s, n]) => `${s}:${n}`).join(",");
  const page = await get(`runs/${enc(run.run_id)}/logs`,
    new URLSearchParams({ after: start, limit: String(Math.min(20000, tail * Math.max(1, streams.length))) }));
  let lines = page.lines;
  const after = Object.entries({ ...from, ...page.next }).map(([s, n]) => `${s}:${n}`).join(",");
  const hidden = streams.filter((s) => first.positions[s] > tail).length;

  const pane = h("div", { class: "log-pane", id: "log-pane", tabindex: "0" });
  const search = h("input", { id: "log-search", type: "search", placeholder: "search lines" });
  const chosen = new Set(streams);
  const live = h("span", { id: "live-state", class: "muted" });
  const filters = streams.map((s) => h("label", { class: "stream-toggle" },
    h("input", { type: "checkbox", checked: true, onchange: (e) => {
      if (e.target.checked) chosen.add(s); else chosen.delete(s);
      redraw();
    } }), ` ${s}`));
  const more = hidden ? h("button", { type: "button", id: "log-more", onclick: () => {
    const next = new URLSearchParams(params);
    next.set("tail", String(tail * 4));
    location.hash = `#/run/${encodeURIComponent(run.run_id)}?${next}`;
  } }, "Show earlier lines") : null;

  const row = (ln) => h("div", { class: `log-line stream-${ln.stream}`, dataset: { stream: ln.stream } },
    h("span", { class: "log-time" }, fmtTime(ln.time_unix_nano)),
    h("span", { class: "log-stream" }, ln.stream),
    h("span", { class: "log-text" }, ln.text));
  const visible = (ln) => chosen.has(ln.stream) &&
    (!search.value || ln.text.toLowerCase().includes(search.value.toLowerCase()));
  const atBottom = () => pane.scrollHeight - pane.scrollTop - pane.clientHeight < 24;
  function redraw() {
    clear(pane, lines.filter(visible).map(row));
    pane.scrollTop = pane.scrollHeight;
  }
  search.addEventListener("input", redraw);
  clear(body, h("div", { class: "log-controls" }, search, filters, more, live), pane);
  redraw();

  if (run.status !== "Running") {
    live.textContent = `${lines.length} lines`;
    return () => {};
  }
  live.textContent = "live";
  live.classList.add("live");
  return follow(run.run_id, after, {
    onLines: (batch) => {
      const stick = atBottom();
      lines = lines.concat(batch);
      pane.append(...batch.filter(visible).map(row));
      if (stick) pane.scrollTop = pane.scrollHeight;
    },
    onEnd: (info) => { live.textContent = `ended: ${info.status}`; live.classList.remove("live"); },
    onError: (err) => { live.textContent = `follow stopped: ${err.message}`; },
  });
}
