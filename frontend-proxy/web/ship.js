// Getting the agent's work out of a session: the header's git line (the
// branch, how far it is ahead, what is not committed yet, the pull requests
// opened), and the Diff tab's Ship bar with its dialogs (download a patch,
// commit, push, open a pull request).
//
// Everything the API says about the repository came from the agent or the
// remote (branch names, commit subjects, pull requests' addresses): it is
// set as text only, names with their hidden characters marked
// (command.js), and an address becomes a link only when it is http(s).
// A token typed into a dialog goes in that one request's body and is wiped
// when the dialog closes: this page keeps none.

import { api, download } from "./api.js";
import { visibleText } from "./command.js";
import { $, el } from "./dom.js";

const ship = {
  /** The open session, and whether it is `ready` (its workspace is there). */
  sessionId: null,
  ready: false,
  /** The open session's last `GET /git`, or null. */
  git: null,
  /** A run is queued or running: the workspace is the agent's. */
  busy: false,
  /** The `GET /git` in flight, and whether another was asked for meanwhile. */
  loading: null,
  again: false,
  /** The commit message this page proposed last, to tell it from the user's own. */
  proposedMessage: "",
  /** The last run's final response (session.js knows the runs). */
  lastResponse: () => "",
};

/** `3 changed files`, `1 commit`. */
const plural = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;

/** The address as a link's `href` when it is http(s), else null. */
export function safeHttpUrl(url) {
  try {
    const parsed = new URL(String(url));
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/** A pull request as a link when its address is http(s), else as text. */
function pullRequestLink(pr, text) {
  const href = safeHttpUrl(pr.url);
  if (!href) return el("span", { text, title: visibleText(pr.url) });
  return el("a", { href, target: "_blank", rel: "noopener noreferrer", "data-testid": "pr-link", text });
}

/** The branch a commit goes to unless the user names another. */
const defaultBranch = (id) => `repo-runner/${id.slice(0, 8)}`;

/** A final response as a commit message: its first line the subject. */
function messageFrom(response) {
  const text = String(response || "").trim();
  if (!text) return "";
  const [first, ...rest] = text.split("\n");
  const body = rest.join("\n").trim();
  return body ? `${first.trim()}\n\n${body}` : first.trim();
}

/** `lastResponse`: the final response of the session's last completed run. */
export function initShip({ lastResponse }) {
  ship.lastResponse = lastResponse;
  $("#ship-download").addEventListener("click", (event) => {
    event.preventDefault();
    const id = ship.sessionId;
    if (!id) return;
    say("Preparing the patch…");
    download(`/api/sessions/${id}/patch`, `${id.slice(0, 8)}.patch`).then(
      () => say(""),
      (error) => say(`The patch cannot be downloaded: ${error.message}`, true),
    );
  });
  $("#ship-commit").addEventListener("click", openCommit);
  $("#ship-push").addEventListener("click", openPush);
  $("#ship-pr").addEventListener("click", openPullRequest);
  $("#commit-form").addEventListener("submit", (event) => submit(event, "commit", commit));
  $("#push-form").addEventListener("submit", (event) => submit(event, "push", push));
  $("#pr-form").addEventListener("submit", (event) => submit(event, "pr", pullRequest));
  for (const dialog of document.querySelectorAll(".ship-dialog")) {
    for (const button of dialog.querySelectorAll("[data-close]")) button.addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      // A token is for the request it was typed for.
      for (const input of dialog.querySelectorAll("input[type=password]")) input.value = "";
      dialog.querySelector(".error-text").textContent = "";
    });
  }
  $("#commit-message").addEventListener("input", () => {
    $("#commit-error").textContent = "";
  });
  const keep = $("#repo-keep-token");
  $("#repo-token").addEventListener("input", () => {
    // Keeping a token needs one.
    keep.disabled = !$("#repo-token").value.trim();
    if (keep.disabled) keep.checked = false;
  });
}

/** The open session, as its header shows it: another one, or a new state. */
export function showShipSession(session) {
  const id = session?.session_id ?? null;
  if (id !== ship.sessionId) {
    ship.sessionId = id;
    ship.git = null;
    ship.proposedMessage = "";
    // What was typed for one session is not for another.
    for (const dialog of document.querySelectorAll(".ship-dialog")) {
      if (dialog.open) dialog.close();
      dialog.querySelector("form").reset();
    }
    say("");
    if (id) $("#ship-download").href = `/api/sessions/${id}/patch`;
    render();
  }
  ship.ready = session?.status === "ready";
  $("#ship").hidden = !ship.ready;
  if (!ship.ready) {
    $("#session-git").hidden = true;
    return;
  }
  refreshGit();
}

/** A run queued or running (or none any more): commit, push and a pull
 * request wait for it. The API refuses them meanwhile; this says so first. */
export function setShipBusy(busy) {
  ship.busy = busy;
  for (const id of ["#ship-commit", "#ship-push", "#ship-pr"]) $(id).disabled = busy;
  $("#ship-busy").hidden = !busy;
}

/** Reads the git state again; calls while one read is under way make one more. */
export function refreshGit() {
  if (!ship.sessionId || !ship.ready) return;
  if (ship.loading) {
    ship.again = true;
    return;
  }
  const id = ship.sessionId;
  ship.loading = api.git(id).then(
    (git) => {
      if (id !== ship.sessionId) return;
      ship.git = git;
      render();
    },
    (error) => {
      // 409: the session is not ready (any more); its header says why.
      if (id === ship.sessionId && error.status !== 409) say(`The repository's state cannot be read: ${error.message}`, true);
    },
  ).finally(() => {
    ship.loading = null;
    if (ship.again) {
      ship.again = false;
      refreshGit();
    }
  });
}

/** Draws the header's git line and the Ship bar's pull requests. */
function render() {
  const git = ship.git;
  $("#session-git").hidden = !git;
  const prs = $("#ship-prs");
  if (!git) {
    prs.replaceChildren();
    return;
  }
  const branch = $("#git-branch");
  branch.textContent = git.branch === null ? "detached" : visibleText(git.branch);
  branch.title = git.head ? `${git.branch === null ? "detached HEAD" : "branch"} at ${git.head.slice(0, 12)}` : "";
  branch.classList.toggle("detached", git.branch === null);
  $("#git-counts").textContent = ` · ${plural(git.ahead, "commit")} ahead · ${plural(git.dirty, "changed file")}`;
  const links = $("#git-prs");
  links.replaceChildren();
  for (const pr of git.pull_requests) links.append(" · ", pullRequestLink(pr, `PR #${pr.number}`));
  prs.replaceChildren(
    ...git.pull_requests.map((pr) =>
      el("li", { "data-testid": "ship-pr-item" },
        pullRequestLink(pr, `Pull request #${pr.number}`),
        el("span", { class: "muted", text: ` ${visibleText(pr.head)} → ${visibleText(pr.base)}` }))),
  );
}

/** The Ship bar's last word: what was done, or why not (text and nodes). */
function say(parts, failed = false) {
  const status = $("#ship-status");
  status.replaceChildren(...[].concat(parts));
  status.classList.toggle("error-text", failed);
}

// --- the dialogs -------------------------------------------------------------

function openCommit() {
  if (!ship.sessionId) return;
  const proposed = messageFrom(ship.lastResponse());
  const message = $("#commit-message");
  // What the user wrote stays; what this page proposed follows the last run.
  if (!message.value.trim() || message.value === ship.proposedMessage) message.value = proposed;
  ship.proposedMessage = proposed;
  $("#commit-branch").placeholder = defaultBranch(ship.sessionId);
  $("#commit-dialog").showModal();
}

function openPush() {
  if (!ship.sessionId) return;
  const branch = ship.git?.branch;
  $("#push-what").textContent = branch
    ? `Pushes the branch ${visibleText(branch)} to the repository the session was cloned from.`
    : "Pushes the commit checked out (no branch: commit first) to the repository the session was cloned from.";
  $("#push-remote-branch").placeholder = branch ? visibleText(branch) : defaultBranch(ship.sessionId);
  $("#push-default-label").hidden = true;
  $("#push-to-default").checked = false;
  $("#push-dialog").showModal();
}

function openPullRequest() {
  if (!ship.sessionId) return;
  const title = $("#pr-title-input");
  if (!title.value.trim()) title.value = ship.git?.commits?.[0]?.subject ?? "";
  $("#pr-base").placeholder = ship.git?.cloned_branch ? visibleText(ship.git.cloned_branch) : "the repository's default branch";
  $("#pr-dialog").showModal();
}

/** Sends a dialog's request: its button off meanwhile, its error shown in
 * it, the dialog closed and the git state read again once it is done. */
async function submit(event, name, send) {
  event.preventDefault();
  const id = ship.sessionId;
  const button = $(`#${name}-submit`);
  const error = $(`#${name}-error`);
  button.disabled = true;
  error.textContent = "";
  try {
    const done = await send(id);
    if (id !== ship.sessionId) return;
    $(`#${name}-dialog`).close();
    say(done);
  } catch (failure) {
    if (id === ship.sessionId) refused(name, failure);
  } finally {
    button.disabled = false;
    refreshGit();
  }
}

/** Shows a refusal in its dialog and offers what would get past it. */
function refused(name, failure) {
  const error = $(`#${name}-error`);
  error.textContent = failure.message;
  // A 422 is also a bad branch name, an origin out of reach, or (for a
  // pull request) whatever else the forge refused: the token field is
  // offered when the words are about credentials.
  const credentials = failure.status === 422 && (name === "push" || name === "pr") &&
    /credential|token|auth|permission|401|403/i.test(failure.message);
  if (credentials) {
    $(`#${name}-token`).focus();
  } else if (name === "push" && failure.status === 409 && /default branch/i.test(failure.message)) {
    $("#push-default-label").hidden = false;
    $("#push-to-default").focus();
  }
}

async function commit(id) {
  const body = { message: $("#commit-message").value.trim() };
  const branch = $("#commit-branch").value.trim();
  if (branch) body.branch = branch;
  const made = await api.commit(id, body);
  $("#commit-message").value = "";
  ship.proposedMessage = "";
  return [`Committed ${made.sha.slice(0, 10)} on ${visibleText(made.branch)}.`];
}

async function push(id) {
  const body = {};
  const remote = $("#push-remote-branch").value.trim();
  const token = $("#push-token").value.trim();
  if (remote) body.remote_branch = remote;
  if (token) body.token = token;
  if (!$("#push-default-label").hidden && $("#push-to-default").checked) body.to_default_branch = true;
  const pushed = await api.push(id, body);
  return [`Pushed ${pushed.sha.slice(0, 10)} to ${visibleText(pushed.remote_branch)}.`];
}

async function pullRequest(id) {
  const body = { title: $("#pr-title-input").value.trim() };
  const text = $("#pr-body").value.trim();
  const base = $("#pr-base").value.trim();
  const token = $("#pr-token").value.trim();
  if (text) body.body = text;
  if (base) body.base = base;
  if ($("#pr-draft").checked) body.draft = true;
  if (token) body.token = token;
  const opened = await api.pullRequest(id, body);
  for (const input of ["#pr-title-input", "#pr-body", "#pr-base"]) $(input).value = "";
  $("#pr-draft").checked = false;
  return ["Opened ", pullRequestLink(opened, `pull request #${opened.number}`), "."];
}
