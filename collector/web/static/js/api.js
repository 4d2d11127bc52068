// The JSON API client: a bearer token from this tab's session storage when the
// collector asks for one (401), never in a URL; live logs as server-sent
// events read through fetch, so they carry the same header.

const TOKEN_KEY = "mltrail.token";

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

let askToken = null;  // set by main.js: shows the token dialog, resolves when entered
export function onTokenNeeded(fn) { askToken = fn; }

async function request(path, init = {}) {
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(path, { ...init, headers: { ...headers(), ...(init.headers || {}) } });
    if ((response.status === 401 || response.status === 403) && askToken && attempt < 3) {
      const body = await response.json().catch(() => ({}));
      await askToken(body.error || `the collector answered ${response.status}`);
      continue;
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new ApiError(response.status, body.error || `${response.status} ${response.statusText}`);
    }
    return response;
  }
}

export async function get(path, params) {
  const query = params ? `?${params}` : "";
  return (await request(`/api/v1/${path}${query}`)).json();
}

export async function blob(path) {
  return (await request(`/api/v1/${path}`)).blob();
}

export function enc(s) { return encodeURIComponent(s); }

export function artifactPath(runId, path) {
  return `runs/${enc(runId)}/artifacts/${path.split("/").map(enc).join("/")}`;
}

// Follows a run's logs: onLines(list) per committed batch, onEnd(info) once.
// Returns a function that stops following.
export function follow(runId, after, { onLines, onEnd, onError }) {
  const controller = new AbortController();
  const params = new URLSearchParams({ after });
  (async () => {
    try {
      const response = await request(`/api/v1/runs/${enc(runId)}/logs/follow?${params}`,
        { signal: controller.signal });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const event = /^event: (.*)$/m.exec(block);
          const data = /^data: (.*)$/m.exec(block);
          if (!event || !data) continue;  // a keep-alive comment
          const payload = JSON.parse(data[1]);
          if (event[1] === "lines") onLines(payload);
          else if (event[1] === "end") { onEnd(payload); return; }
        }
      }
    } catch (err) {
      if (err.name !== "AbortError") onError(err);
    }
  })();
  return () => controller.abort();
}
