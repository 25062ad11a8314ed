// One session, on the right (on a phone, a view of its own): its header
// (drawn from the latest state the sessions stream told of), its runs as
// cards (timeline.js) with their event streams, and the prompt box. The
// tabs other than the conversation are tabs.js's; shipping is ship.js's.

import { api } from "./api.js";
import { $, showError } from "./dom.js";
import { repoName, sessionName } from "./names.js";
import { refreshGit, setShipBusy, showShipSession } from "./ship.js";
import { state } from "./state.js";
import { openPreview, selectTab } from "./tabs.js";
import { RunView } from "./timeline.js";

/** At most this many event streams at once (browsers allow 6 connections per host). */
const MAX_STREAMS = 3;

function clearSession() {
  for (const view of state.runs.values()) view.close();
  state.runs.clear();
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
}

/** Shows the session `id`, or none (null): the list alone on a phone. */
export async function openSession(id) {
  clearSession();
  state.sessionId = id;
  state.session = null;
  state.followEnd = true;
  state.previewPath = "";
  state.previewGrant = null;
  $("#preview-frame").removeAttribute("src");
  document.body.classList.toggle("session-open", !!id);
  $("#empty").hidden = !!id;
  $("#session").hidden = !id;
  $("#runs").replaceChildren();
  setShipBusy(false);
  if (!id) {
    showShipSession(null);
    return;
  }
  const known = state.sessions.find((s) => s.session_id === id);
  if (known) showSession(known);
  else await loadSession();
  await loadRuns();
  state.timers.push(setInterval(loadRuns, 2000));
  state.timers.push(setInterval(() => state.runs.forEach((v) => v.tick()), 1000));
  selectTab(state.tab);
}

/** Reads the open session once, for one the stream has not told of. */
export async function loadSession() {
  const id = state.sessionId;
  let session;
  try {
    session = await api.session(id);
  } catch (error) {
    if (error.status === 404) {
      location.hash = "";
      return;
    }
    showError(`Cannot load the session: ${error.message}`);
    return;
  }
  if (id !== state.sessionId) return;
  showSession(session);
}

/** Draws the open session's header from its latest state. A state older
 * than the one shown (a read that the stream overtook) is ignored. */
export function showSession(session) {
  const shown = state.session;
  if (shown?.session_id === session.session_id && Date.parse(session.updated_at) < Date.parse(shown.updated_at)) return;
  const wasReady = state.session?.status === "ready";
  state.session = session;
  $("#session-repo").textContent = repoName(session.repo_url);
  $("#session-repo").title = session.repo_url;
  document.title = `${sessionName(session)} · repo-runner`;
  $("#session-ref").textContent = session.ref ? `@ ${session.ref}` : "default branch";
  const badge = $("#session-status");
  badge.textContent = session.status;
  badge.className = `badge ${session.status}`;
  const progress = $("#clone-progress");
  progress.hidden = session.status !== "cloning";
  if (session.status === "cloning") {
    const p = session.clone_progress || {};
    const value = p.total_objects ? Math.round((100 * p.received_objects) / p.total_objects) : 0;
    progress.querySelector("progress").value = value;
    progress.querySelector("span").textContent = p.total_objects
      ? `Cloning: ${p.received_objects}/${p.total_objects} objects, ${(p.received_bytes / 1024).toFixed(0)} KiB`
      : "Cloning: connecting…";
  }
  const error = $("#session-error");
  error.hidden = session.status !== "failed" && session.status !== "expired";
  error.textContent =
    session.status === "failed"
      ? `Clone failed: ${session.error}`
      : session.status === "expired"
        ? `This session expired ${session.expired_at ? `on ${new Date(session.expired_at).toLocaleString()}` : ""}: ` +
          "its workspace was removed after it sat idle (or to keep the server's disk under its quota). " +
          "Its conversation stays here to read; create a new session to go on."
        : "";
  updatePromptBox();
  showShipSession(session);
  if (!wasReady && session.status === "ready" && state.tab !== "conversation") selectTab(state.tab);
}

async function loadRuns() {
  const id = state.sessionId;
  let list;
  try {
    list = await api.runs(id);
  } catch {
    return;
  }
  if (id !== state.sessionId) return;
  const container = $("#runs");
  for (const run of list.runs) {
    let view = state.runs.get(run.run_id);
    if (!view) {
      view = new RunView(run, {
        workspace: state.session?.repo_path,
        onPreview: (path) => openPreview(path),
        onStatus: () => updatePromptBox(),
        onFinished: () => {
          startStreams();
          refreshGit();
          if (state.tab !== "conversation") selectTab(state.tab);
        },
      });
      state.runs.set(run.run_id, view);
      container.append(view.root);
    } else {
      // The list has the times the server recorded, which the stream does
      // not carry: they win over the page's own clock, so an ended run
      // shows its recorded duration and a running one counts from its
      // recorded start, whatever the page saw (or missed) meanwhile.
      view.setTimes(run.started_at, run.finished_at);
      if (run.final_response) view.run.final_response = run.final_response;
      if (!view.finished && run.status !== view.run.status && run.status !== "queued") view.setStatus(run.status);
    }
  }
  startStreams();
  updatePromptBox();
}

/** Opens streams in run order, a few at a time: finished runs replay and
 * close quickly; the running run always comes before the queued ones. A
 * stream being opened (its event names still on their way) counts as open. */
function startStreams() {
  const views = [...state.runs.values()].sort((a, b) => a.run.position - b.run.position);
  let open = views.filter((v) => v.streaming).length;
  for (const view of views) {
    if (open >= MAX_STREAMS) break;
    if (view.streaming || view.complete) continue;
    view.connect();
    open++;
  }
}

function updatePromptBox() {
  const input = $("#prompt-input");
  const send = $("#send-button");
  const status = state.session?.status;
  const failed = status === "failed" || status === "expired";
  input.disabled = failed;
  input.placeholder = status === "failed"
    ? "This session's clone failed; create a new session."
    : status === "expired"
      ? "This session has expired; create a new session."
    : status === "cloning"
      ? "The repository is cloning; prompts sent now are queued."
      : "Ask the agent… (Enter to send, Shift+Enter for a new line)";
  send.disabled = failed || !input.value.trim();
  // While a run goes, a prompt can be queued for after it, or steered into it.
  const running = runningRun();
  send.textContent = running ? "Queue" : "Send";
  const steer = $("#steer-button");
  steer.hidden = !running || failed;
  steer.disabled = !input.value.trim();
  setShipBusy([...state.runs.values()].some((view) => view.run.status === "running" || view.run.status === "queued"));
}

/** The final response of the session's last completed run, for a commit message. */
export function lastResponse() {
  const done = [...state.runs.values()]
    .filter((view) => view.run.status === "completed" && view.run.final_response)
    .sort((a, b) => a.run.position - b.run.position);
  return done.at(-1)?.run.final_response ?? "";
}

/** The session's running run, if any. */
function runningRun() {
  return [...state.runs.values()].find((view) => view.run.status === "running");
}

async function steerPrompt() {
  const input = $("#prompt-input");
  const prompt = input.value.trim();
  const running = runningRun();
  if (!prompt || !running) return;
  $("#steer-button").disabled = true;
  try {
    await api.steer(running.run.run_id, prompt);
    input.value = "";
  } catch (error) {
    $("#prompt-error").textContent = error.message;
  } finally {
    updatePromptBox();
  }
}

async function sendPrompt() {
  const input = $("#prompt-input");
  const prompt = input.value.trim();
  if (!prompt || !state.sessionId) return;
  $("#send-button").disabled = true;
  try {
    await api.prompt(state.sessionId, prompt);
    input.value = "";
    await loadRuns();
    $("#runs").lastElementChild?.scrollIntoView({ block: "end", behavior: "smooth" });
  } catch (error) {
    $("#prompt-error").textContent = error.message;
  } finally {
    updatePromptBox();
  }
}

/** Wires the prompt box, the Delete and Back buttons, and the
 * conversation's following of its end. */
export function initSession() {
  $("#steer-button").addEventListener("click", () => steerPrompt());
  $("#prompt-input").addEventListener("input", () => {
    $("#prompt-error").textContent = "";
    updatePromptBox();
  });
  $("#prompt-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendPrompt();
    }
  });
  $("#prompt-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendPrompt();
  });

  $("#delete-session").addEventListener("click", async () => {
    if (!state.sessionId || !confirm("Delete this session and its workspace?")) return;
    try {
      await api.deleteSession(state.sessionId);
      location.hash = "";
    } catch (error) {
      showError(error.message);
    }
  });

  // On a phone the session is a view of its own, with a way back to the list.
  $("#back").addEventListener("click", () => {
    location.hash = "";
  });

  // While the conversation is scrolled to its end, it stays there as items
  // arrive (on a phone, the conversation scrolls inside its own box).
  // The scroll to the end happens once a frame, not once an event: each
  // would make the browser lay out the whole conversation again, which
  // made a long streamed message cost quadratic time. A scroll event that
  // is ours (the box where we put it, items added since) is not the
  // reader's, who stops the following by scrolling up.
  const runsBox = $("#runs");
  let scrolledTo = -1;
  let pending = false;
  runsBox.addEventListener("scroll", () => {
    if (runsBox.scrollTop + runsBox.clientHeight >= runsBox.scrollHeight - 24) state.followEnd = true;
    else if (Math.abs(runsBox.scrollTop - scrolledTo) > 1) state.followEnd = false;
  });
  new MutationObserver(() => {
    if (!state.followEnd || pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      if (!state.followEnd) return;
      runsBox.scrollTop = runsBox.scrollHeight;
      scrolledTo = runsBox.scrollTop;
    });
  }).observe(runsBox, { childList: true, subtree: true, characterData: true });
}
