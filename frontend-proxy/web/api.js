// The backend's API, through the proxy. Shapes follow /api/openapi.json.

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
    this.detail = body?.detail;
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
  /** `settings`: model, reasoning_effort, sandbox, approval_policy, token,
   * keep_token; empty (and false) ones are left out. */
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
  /** The workspace's git state: branch, head, counts, commits, pull requests. */
  git: (id) => request("GET", `/api/sessions/${id}/git`),
  /** `{message, branch?}` → `{sha, branch}`. */
  commit: (id, body) => request("POST", `/api/sessions/${id}/commits`, body),
  /** `{branch?, remote_branch?, token?, to_default_branch?}` → `{remote_branch, sha}`. */
  push: (id, body) => request("POST", `/api/sessions/${id}/push`, body),
  /** `{title, body?, base?, draft?, token?}` → `{url, number}`. */
  pullRequest: (id, body) => request("POST", `/api/sessions/${id}/pull-requests`, body),
};

/** Fetches a file the API sends as an attachment (a patch) and hands it to
 * the browser as a download named as the server says. The cookie is the
 * credential, so a plain link would do, but its failure would show as a
 * broken download: read here, a refusal is thrown as an ApiError to show. */
export async function download(path, fallbackName) {
  const response = await fetch(path);
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    if (response.status === 401) onSignedOut();
    throw new ApiError(response.status, data);
  }
  const blob = await response.blob();
  const disposition = response.headers.get("content-disposition") || "";
  // Only a plain name: the browser sanitises it too, but a name with a
  // path or quotes in it is not the server's.
  const named = disposition.match(/filename="([^"/\\]+)"/);
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = named ? named[1] : fallbackName;
  document.body.append(link);
  link.click();
  link.remove();
  // The download has its bytes once the click has been handled.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
