// The backend's API, through the proxy. Shapes follow /api/openapi.json.

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
  }
}

/** Called when the API says the browser is not signed in (401). */
let onSignedOut = () => {};
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

async function request(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (response.status === 401 && !path.startsWith("/api/auth/")) onSignedOut();
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const api = {
  me: () => request("GET", "/api/auth/me"),
  signIn: (token) => request("POST", "/api/auth/session", { token }),
  signOut: () => request("DELETE", "/api/auth/session"),
  sessions: () => request("GET", "/api/sessions?limit=100"),
  session: (id) => request("GET", `/api/sessions/${id}`),
  createSession: (repo_url, ref) => request("POST", "/api/sessions", ref ? { repo_url, ref } : { repo_url }),
  deleteSession: (id) => request("DELETE", `/api/sessions/${id}`),
  runs: (id) => request("GET", `/api/sessions/${id}/runs`),
  prompt: (id, prompt) => request("POST", `/api/sessions/${id}/prompt`, { prompt }),
  run: (id) => request("GET", `/api/runs/${id}`),
  cancel: (id) => request("POST", `/api/runs/${id}/cancel`),
  files: (id) => request("GET", `/api/sessions/${id}/files`),
  file: (id, path) => request("GET", `/api/sessions/${id}/files/${path.split("/").map(encodeURIComponent).join("/")}`),
  diff: (id) => request("GET", `/api/sessions/${id}/diff`),
};

/** The event types a run's stream carries (EventSource needs each by name). */
export const EVENT_TYPES = [
  "thread.started", "turn.started", "turn.completed", "turn.failed",
  "item.started", "item.updated", "item.completed", "codex.error",
];
export const TERMINAL_TYPES = ["run.completed", "run.failed", "run.cancelled"];
