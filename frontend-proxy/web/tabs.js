// The open session's tabs: the conversation (session.js draws it), the
// workspace's files, its diff, and the preview of its pages. Choosing a tab
// loads what it shows, once the session is ready.
//
// The preview is the workspace served by the preview listener: another
// port, so another origin, shown in a sandboxed frame (see index.html and
// preview.rs). Every address there carries a grant the backend gives for
// the open session alone (POST /api/sessions/{id}/preview): it reads this
// session's files and nothing else, and expires. One close to its end is
// replaced before the frame loads; a page whose grant was refused
// (expired, revoked) says so to this page (preview.rs, `answer`), which
// asks for a new grant and shows that page again.

import { api } from "./api.js";
import { visibleText } from "./command.js";
import { $, el } from "./dom.js";
import { state } from "./state.js";
import { renderDiff, renderTree } from "./workspace.js";

const TABS = ["conversation", "files", "diff", "preview"];

/** A grant with less than this left is replaced before it is used. */
const GRANT_MARGIN_MS = 60_000;
/** What a refused page posts to its parent (preview.rs, REFUSED_MESSAGE). */
const GRANT_REFUSED = "repo-runner:preview-grant-refused";

/** The grant being asked for: { sessionId, promise }, or null. */
let grantAsked = null;

/** Shows `tab` and loads what it shows. */
export function selectTab(tab) {
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

// --- files and diff -----------------------------------------------------------

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

// The file viewer and the preview take the height left below them in the
// window.
function fitPanels() {
  const panel = $(`#panel-${state.tab}`);
  if (!panel || panel.hidden) return;
  const top = panel.getBoundingClientRect().top + window.scrollY;
  document.documentElement.style.setProperty("--files-top", `${Math.round(top)}px`);
}

// --- preview --------------------------------------------------------------------

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
export function openPreview(path) {
  state.previewPath = path;
  $("#preview-frame").removeAttribute("src");
  selectTab("preview");
}

/** Loads the frame (again, with `reload`); `fresh` asks for a new grant. */
export async function showPreview(reload = false, fresh = false) {
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

/** Wires the tab buttons, the preview's Reload button and its messages. */
export function initTabs() {
  for (const name of TABS) {
    $(`#tab-${name}`).addEventListener("click", () => selectTab(name));
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
  window.addEventListener("resize", fitPanels);
}
