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
  signInWithCode: (code) => request("POST", "/api/auth/session", { code }),
  inspectCode: (code) => request("POST", "/api/auth/code", { code }),
  signOut: () => request("DELETE", "/api/auth/session"),
  sessions: () => request("GET", "/api/sessions?limit=100"),
  session: (id) => request("GET", `/api/sessions/${id}`),
  /** `settings`: model, reasoning_effort, sandbox, approval_policy; empty ones are left out. */
  createSession: (repo_url, ref, settings = {}) => {
    const body = { repo_url };
    if (ref) body.ref = ref;
    for (const [key, value] of Object.entries(settings)) if (value) body[key] = value;
    return request("POST", "/api/sessions", body);
  },
  models: () => request("GET", "/api/models"),
  approve: (runId, approvalId, decision) =>
    request("POST", `/api/runs/${runId}/approvals/${encodeURIComponent(approvalId)}`, { decision }),
  steer: (runId, prompt) => request("POST", `/api/runs/${runId}/steer`, { prompt }),
  deleteSession: (id) => request("DELETE", `/api/sessions/${id}`),
  runs: (id) => request("GET", `/api/sessions/${id}/runs`),
  prompt: (id, prompt) => request("POST", `/api/sessions/${id}/prompt`, { prompt }),
  run: (id) => request("GET", `/api/runs/${id}`),
  cancel: (id) => request("POST", `/api/runs/${id}/cancel`),
  files: (id) => request("GET", `/api/sessions/${id}/files`),
  file: (id, path) => request("GET", `/api/sessions/${id}/files/${path.split("/").map(encodeURIComponent).join("/")}`),
  diff: (id) => request("GET", `/api/sessions/${id}/diff`),
  /** A grant for the preview listener to read this session's files: {grant, expires_at, url_path}. */
  previewGrant: (id) => request("POST", `/api/sessions/${id}/preview`),
};

/** The event types a run's stream carries (EventSource needs each by name). */
export const EVENT_TYPES = [
  "thread.started", "turn.started", "turn.completed", "turn.failed",
  "item.started", "item.updated", "item.completed", "codex.error",
  // The runner's app-server driver adds these.
  "item.delta", "approval.requested", "approval.resolved", "plan.updated", "usage.updated",
];
export const TERMINAL_TYPES = ["run.completed", "run.failed", "run.cancelled"];
