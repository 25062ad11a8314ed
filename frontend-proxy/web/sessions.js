// The list of sessions, on the left (on a phone, the first view), and the
// form that creates one. One stream of every session's state (GET
// /api/sessions/events) feeds both the list and the open session's header
// (session.js), so they never disagree.

import { api } from "./api.js";
import { $, el, showError } from "./dom.js";
import { repoName } from "./names.js";
import { loadSession, showSession } from "./session.js";
import { signedOut } from "./signin.js";
import { state } from "./state.js";

/** Draws the list from `state.sessions`. */
export function renderSessions() {
  const list = $("#sessions");
  list.replaceChildren(
    ...state.sessions.map((s) => {
      const item = el("li", {},
        el("a", { href: `#/s/${s.session_id}`, class: "session-link", "data-testid": "session-item", "data-session-id": s.session_id },
          el("span", { class: `badge ${s.status}`, text: s.status }),
          el("span", { class: "repo", text: repoName(s.repo_url), title: s.repo_url }),
          s.ref ? el("span", { class: "ref", text: `@${s.ref}` }) : null,
          el("time", { class: "created", datetime: s.created_at, text: new Date(s.created_at).toLocaleString() })));
      if (s.session_id === state.sessionId) item.classList.add("selected");
      return item;
    }),
  );
  $("#sessions-empty").hidden = state.sessions.length > 0;
}

/** Follows the sessions stream, and opens it again when it was refused. */
export function followSessions() {
  const source = new EventSource("/api/sessions/events");
  const changed = (session) => {
    if (session.session_id === state.sessionId) showSession(session);
  };
  source.addEventListener("snapshot", (event) => {
    const snapshot = JSON.parse(event.data);
    state.sessions = snapshot.sessions;
    renderSessions();
    showError("");
    const open = state.sessions.find((s) => s.session_id === state.sessionId);
    if (open) changed(open);
    // Older than the snapshot's newest 200: read once. (One newer than the
    // snapshot comes as `updated`.)
    else if (state.sessionId && snapshot.total > snapshot.sessions.length) loadSession();
  });
  source.addEventListener("updated", (event) => {
    const { session } = JSON.parse(event.data);
    const at = state.sessions.findIndex((s) => s.session_id === session.session_id);
    if (at >= 0) state.sessions[at] = session;
    else state.sessions.unshift(session);
    renderSessions();
    changed(session);
  });
  source.addEventListener("deleted", (event) => {
    const { session_id: id } = JSON.parse(event.data);
    state.sessions = state.sessions.filter((s) => s.session_id !== id);
    renderSessions();
    if (id === state.sessionId) location.hash = "";
  });
  source.addEventListener("error", () => {
    // EventSource reconnects by itself; the next snapshot clears this.
    showError("Cannot reach the API: reconnecting…");
    if (source.readyState === EventSource.CLOSED) {
      // Refused outright: signed out (401), or the API is away.
      api.me().then(() => setTimeout(followSessions, 1500), (error) => {
        if (error.status === 401) signedOut();
        else setTimeout(followSessions, 1500);
      });
    }
  });
}

/** Wires the new-session form and its agent settings. */
export function initSessions() {
  // The agent settings of a new session: the models come from the runner,
  // the first time the settings are opened.
  let modelsLoaded = false;
  $("#session-settings").addEventListener("toggle", async () => {
    if (modelsLoaded || !$("#session-settings").open) return;
    modelsLoaded = true;
    try {
      const { models } = await api.models();
      const select = $("#session-model");
      for (const model of models) select.append(new Option(model.id, model.id));
    } catch (error) {
      modelsLoaded = false;
      $("#create-error").textContent = `Models: ${error.message}`;
    }
  });

  $("#create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const url = $("#repo-url").value.trim();
    const ref = $("#repo-ref").value.trim();
    const button = $("#create-button");
    const error = $("#create-error");
    if (!url) {
      error.textContent = "Enter the URL of a git repository.";
      $("#repo-url").focus();
      return;
    }
    button.disabled = true;
    error.textContent = "";
    try {
      const settings = {
        model: $("#session-model").value,
        reasoning_effort: $("#session-effort").value,
        sandbox: $("#session-sandbox").value,
        approval_policy: $("#session-approval").value,
      };
      // The token is sent with this request only; kept by the server (sealed)
      // when asked to, for pushes and pull requests, never by this page.
      const token = $("#repo-token").value.trim();
      if (token) {
        settings.token = token;
        settings.keep_token = $("#repo-keep-token").checked;
      }
      const session = await api.createSession(url, ref || undefined, settings);
      $("#repo-url").value = "";
      $("#repo-ref").value = "";
      $("#repo-token").value = "";
      $("#repo-keep-token").checked = false;
      $("#repo-keep-token").disabled = true;
      // Known at once, whether the stream's `updated` came first or not.
      if (!state.sessions.some((s) => s.session_id === session.session_id)) state.sessions.unshift(session);
      location.hash = `#/s/${session.session_id}`;
    } catch (e) {
      error.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  });
}
