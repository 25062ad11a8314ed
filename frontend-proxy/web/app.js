// The dashboard: sessions on the left, the selected session on the right
// (conversation, files, diff, preview). The URL hash names the session
// (#/s/<id>). On a narrow screen the list and the open session are two
// views, with a back button from the session to the list. Shipping the
// work (the header's git line, the Diff tab's Ship bar) is ship.js's.

import { api, whenSignedOut } from "./api.js";
import { repoName, sessionName } from "./names.js";
import { visibleText } from "./command.js";
import { RunView, el } from "./timeline.js";
import { renderDiff, renderTree } from "./workspace.js";
import { initShip, refreshGit, setShipBusy, showShipSession } from "./ship.js";

/** At most this many event streams at once (browsers allow 6 connections per host). */
const MAX_STREAMS = 3;

const state = {
  sessionId: null,
  session: null,
  runs: new Map(), // run_id -> RunView
  tab: "conversation",
  timers: [],
  /** The preview listener's port (from /mode.json); null until known. */
  previewPort: null,
  /** The workspace path the Preview tab shows ("" is the root folder). */
  previewPath: "",
  /** The open session's preview grant: { sessionId, urlPath, expiresAt } (ms). */
  previewGrant: null,
  /** When a refused page last made the Preview tab ask for a new grant (ms). */
  previewRenewedAt: 0,
  /** The conversation follows new items while scrolled to its end. */
  followEnd: true,
  /** Every session the stream told of, newest first: the one source of
   * truth for the list and the open session's header. */
  sessions: [],
};

const TABS = ["conversation", "files", "diff", "preview"];

const $ = (selector) => document.querySelector(selector);

function showError(message) {
  const banner = $("#banner");
  banner.textContent = message;
  banner.hidden = !message;
}

// --- sessions list -----------------------------------------------------------

/** Draws the list from `state.sessions`. */
function renderSessions() {
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

/** One stream of every session's state (GET /api/sessions/events) feeds
 * both the list and the open session's header, so they never disagree. */
function followSessions() {
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

// --- one session ---------------------------------------------------------------

function clearSession() {
  for (const view of state.runs.values()) view.close();
  state.runs.clear();
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
}

async function openSession(id) {
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
async function loadSession() {
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
function showSession(session) {
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
 * close quickly; the running run always comes before the queued ones. */
function startStreams() {
  const views = [...state.runs.values()].sort((a, b) => a.run.position - b.run.position);
  let open = views.filter((v) => v.source).length;
  for (const view of views) {
    if (open >= MAX_STREAMS) break;
    if (view.source || view.complete) continue;
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
function lastResponse() {
  const done = [...state.runs.values()]
    .filter((view) => view.run.status === "completed" && view.run.final_response)
    .sort((a, b) => a.run.position - b.run.position);
  return done.at(-1)?.run.final_response ?? "";
}
initShip({ lastResponse });

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

$("#steer-button").addEventListener("click", () => steerPrompt());

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

// --- tabs: conversation, files, diff --------------------------------------

function selectTab(tab) {
  state.tab = tab;
  for (const name of TABS) {
    const button = $(`#tab-${name}`);
    button.setAttribute("aria-selected", String(name === tab));
    $(`#panel-${name}`).hidden = name !== tab;
  }
  if (!state.sessionId || state.session?.status !== "ready") return;
  if (tab === "files") loadFiles();
  if (tab === "diff") loadDiff();
  if (tab === "preview") showPreview();
  fitPanels();
}

async function loadFiles() {
  fitPanels();
  try {
    const tree = await api.files(state.sessionId);
    renderTree($("#file-tree"), tree, (path) => openFile(path));
  } catch (error) {
    $("#file-tree").textContent = error.message;
  }
}

async function openFile(path) {
  const viewer = $("#file-viewer");
  viewer.replaceChildren(el("div", { class: "muted", text: `Loading ${visibleText(path)}…` }));
  try {
    const file = await api.file(state.sessionId, path);
    const title = el("div", { class: "file-title", "data-testid": "file-title", text: `${visibleText(file.path)} · ${file.size} bytes` });
    const body = file.binary
      ? el("div", { class: "muted", text: "Binary file: not shown." })
      : el("pre", { class: "file-content", "data-testid": "file-content", text: file.content });
    viewer.replaceChildren(title, body);
    fitPanels();
  } catch (error) {
    viewer.replaceChildren(el("div", { class: "error-text", text: error.message }));
  }
}

async function loadDiff() {
  try {
    renderDiff($("#diff"), await api.diff(state.sessionId));
  } catch (error) {
    $("#diff").textContent = error.message;
  }
}

for (const name of TABS) {
  $(`#tab-${name}`).addEventListener("click", () => selectTab(name));
}

// --- preview ---------------------------------------------------------------
// The workspace served by the preview listener: another port, so another
// origin, shown in a sandboxed frame (see index.html and preview.rs). Every
// address there carries a grant the backend gives for the open session
// alone (POST /api/sessions/{id}/preview): it reads this session's files and
// nothing else, and expires. One close to its end is replaced before the
// frame loads; a page whose grant was refused (expired, revoked) says so to
// this page (preview.rs, `answer`), which asks for a new grant and shows
// that page again.

/** A grant with less than this left is replaced before it is used. */
const GRANT_MARGIN_MS = 60_000;
/** What a refused page posts to its parent (preview.rs, REFUSED_MESSAGE). */
const GRANT_REFUSED = "repo-runner:preview-grant-refused";

/** The grant being asked for: { sessionId, promise }, or null. */
let grantAsked = null;

/** The open session's grant, asked for when there is none that lasts; two
 * callers at once share one request (and so one grant and one address). */
function previewGrant(fresh) {
  const id = state.sessionId;
  const held = state.previewGrant;
  if (!fresh && held?.sessionId === id && held.expiresAt - Date.now() > GRANT_MARGIN_MS) return Promise.resolve(held);
  if (grantAsked?.sessionId === id) return grantAsked.promise;
  const promise = api.previewGrant(id).then((answer) => {
    const grant = { sessionId: id, urlPath: answer.url_path, expiresAt: Date.parse(answer.expires_at) };
    if (state.sessionId === id) state.previewGrant = grant;
    return grant;
  }).finally(() => {
    if (grantAsked?.promise === promise) grantAsked = null;
  });
  grantAsked = { sessionId: id, promise };
  return promise;
}

function previewUrl(grant, path) {
  const encoded = path.split("/").map(encodeURIComponent).join("/");
  return `${location.protocol}//${location.hostname}:${state.previewPort}${grant.urlPath}${encoded}`;
}

/** Shows `path` of the workspace in the Preview tab. */
function openPreview(path) {
  state.previewPath = path;
  $("#preview-frame").removeAttribute("src");
  selectTab("preview");
}

/** Loads the frame (again, with `reload`); `fresh` asks for a new grant. */
async function showPreview(reload = false, fresh = false) {
  const frame = $("#preview-frame");
  const label = $("#preview-path");
  const id = state.sessionId;
  if (!state.previewPort || !id) {
    label.textContent = "The preview's address is not known yet.";
    return;
  }
  label.textContent = `/${state.previewPath}`;
  let grant;
  try {
    grant = await previewGrant(fresh);
  } catch (error) {
    label.textContent = `The preview cannot be shown: ${error.message}`;
    return;
  }
  // Another session may have opened meanwhile.
  if (state.sessionId !== id) return;
  const url = previewUrl(grant, state.previewPath);
  $("#preview-open").href = url;
  // Setting the same address again loads it again (the preview is never
  // cached), and a page that navigated away comes back to the file.
  if (reload || frame.getAttribute("src") !== url) frame.src = url;
}

// A refused page names the workspace path it was at. Any page in the frame
// could post this: it only ever shows a path of the open session, and at
// most one new grant is asked for in ten seconds.
window.addEventListener("message", (event) => {
  if (event.source !== $("#preview-frame").contentWindow || event.data?.type !== GRANT_REFUSED) return;
  if (Date.now() - state.previewRenewedAt < 10_000) {
    $("#preview-path").textContent = "The preview refused its grant again: use Reload.";
    return;
  }
  state.previewRenewedAt = Date.now();
  if (typeof event.data.path === "string") {
    state.previewPath = event.data.path.split("/").filter((s) => s !== "." && s !== "..").join("/");
  }
  showPreview(true, true);
});

$("#preview-reload").addEventListener("click", () => showPreview(true));

// --- phone: the session is a view of its own -------------------------------

$("#back").addEventListener("click", () => {
  location.hash = "";
});

// While the conversation is scrolled to its end, it stays there as items
// arrive (on a phone, the conversation scrolls inside its own box).
const runsBox = $("#runs");
runsBox.addEventListener("scroll", () => {
  state.followEnd = runsBox.scrollTop + runsBox.clientHeight >= runsBox.scrollHeight - 24;
});
new MutationObserver(() => {
  if (state.followEnd) runsBox.scrollTop = runsBox.scrollHeight;
}).observe(runsBox, { childList: true, subtree: true, characterData: true });

// The file viewer and the preview take the height left below them in the
// window.
function fitPanels() {
  const panel = $(`#panel-${state.tab}`);
  if (!panel || panel.hidden) return;
  const top = panel.getBoundingClientRect().top + window.scrollY;
  document.documentElement.style.setProperty("--files-top", `${Math.round(top)}px`);
}
window.addEventListener("resize", fitPanels);

// --- start -------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/s\/([0-9a-f-]{36})$/);
  openSession(match ? match[1] : null);
  renderSessions();
}

fetch("/mode.json")
  .then((r) => r.json())
  .then((mode) => {
    $("#demo-banner").hidden = !mode.demo;
    state.previewPort = mode.preview_port ?? null;
    if (state.tab === "preview") showPreview();
  })
  .catch(() => {});

/** The page without the session: the sign-in form. Reloading drops every
 * stream and view of the account that was signed in. */
function signedOut() {
  if (!$("#signin").hidden) return;
  if (!$("#layout").hidden) {
    location.replace(location.pathname);
    return;
  }
  $("#signin").hidden = false;
  $("#signin-token").focus();
}
whenSignedOut(signedOut);

function signedIn(me) {
  $("#signin").hidden = true;
  $("#layout").hidden = false;
  if (me.user) {
    $("#who").hidden = false;
    $("#who-name").textContent = me.user.is_admin ? `${me.user.name} (admin)` : me.user.name;
  }
  window.addEventListener("hashchange", route);
  followSessions();
  route();
}

$("#signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("#signin-token").value.trim();
  try {
    // A sign-in link's code pasted here is taken too: the user typed it.
    const me = token.startsWith("rrs_") ? await api.signInWithCode(token) : await api.signIn(token);
    $("#signin-token").value = "";
    signedIn(me);
  } catch (error) {
    $("#signin-error").textContent = error.status === 401 ? "That token is not valid (wrong or revoked)." : error.message;
  }
});

$("#sign-out").addEventListener("click", async () => {
  await api.signOut().catch(() => {});
  location.replace(location.pathname);
});

/** A sign-in link carries a one-time code in its fragment (`#code=rrs_…`),
 * which the browser never sends. Anyone can send a link, so it is never used
 * unasked: the page wipes it from the address bar and the history, shows whom
 * it signs in (and who is signed in now), and signs in only when the user
 * says so. */
async function start() {
  const link = location.hash.match(/^#code=(rrs_[A-Za-z0-9_-]+)$/);
  const oldLink = /^#token=/.test(location.hash);
  if (link || oldLink) history.replaceState(null, "", location.pathname + location.search);
  if (link) {
    await confirmLink(link[1]);
    return;
  }
  try {
    signedIn(await api.me());
  } catch (error) {
    if (error.status === 401) {
      signedOut();
      if (oldLink) {
        $("#signin-error").textContent =
          "Sign-in links now carry a one-time code: ask for a new link (backend admin signin-link NAME), or paste your token.";
      } else if (/more than one sign-in cookie/.test(error.message)) {
        $("#signin-error").textContent = error.message;
      }
    } else {
      showError("Cannot reach the API: retrying…");
      setTimeout(start, 1500);
    }
  }
}

/** How to get another link, for a link that no longer works. */
const NEW_LINK = "Ask whoever gave it to you for a new one (backend admin signin-link NAME), or paste an API token.";

async function confirmLink(code) {
  let found;
  try {
    found = await api.inspectCode(code);
  } catch (error) {
    const message =
      error.status === 401
        ? `This sign-in link is not valid: it was used already, expired, or is wrong. ${NEW_LINK}`
        : error.message;
    // Whoever is signed in stays so: the page shows their dashboard.
    const current = await api.me().catch(() => null);
    if (current?.user) {
      signedIn(current);
      showError(message);
    } else {
      signedOut();
      $("#signin-error").textContent = message;
    }
    return;
  }
  const current = await api.me().catch(() => null);
  $("#layout").hidden = true;
  $("#signin").hidden = true;
  $("#signin-confirm").hidden = false;
  $("#signin-confirm-user").textContent = found.user.name;
  $("#signin-confirm-expires").textContent = new Date(found.expires_at).toLocaleTimeString();
  const now = $("#signin-confirm-current");
  now.hidden = !current?.user;
  if (current?.user) now.textContent = `You are signed in as ${current.user.name} now; this replaces that sign-in.`;
  $("#signin-confirm-yes").textContent = `Sign in as ${found.user.name}`;
  $("#signin-confirm-yes").focus();
  const leave = () => location.replace(location.pathname + location.search);
  $("#signin-confirm-no").onclick = leave;
  $("#signin-confirm-yes").onclick = async () => {
    $("#signin-confirm-yes").disabled = true;
    try {
      await api.signInWithCode(code);
      leave();
    } catch (error) {
      $("#signin-confirm-yes").disabled = false;
      $("#signin-confirm-error").textContent =
        error.status === 401 ? `This sign-in link is no longer valid. ${NEW_LINK}` : error.message;
    }
  };
}

// A sign-in link opened in a tab that shows the dashboard already changes
// only the fragment: ask about it all the same, on a fresh page.
window.addEventListener("hashchange", () => {
  if (!/^#(code|token)=/.test(location.hash)) return;
  location.reload();
});
start();
