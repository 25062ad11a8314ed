// A run's card: prompt, status, elapsed time, cancel, and the live timeline
// built from its event stream. Items are keyed by their id, so an item's
// started/updated/completed events update one element; events are applied
// once each, by sequence number, so a reconnect never shows anything twice.
// The stream is subscribed to every name the backend's document lists
// (event-names.js); items are drawn by items.js, streamed text by live.js.

import { api, download } from "./api.js";
import { approvalCard, showDecision } from "./approvals.js";
import { visibleText } from "./command.js";
import { el } from "./dom.js";
import { isTerminal, runEventNames } from "./event-names.js";
import { RENDER } from "./event-render.js";
import { renderItem } from "./items.js";
import { LiveText } from "./live.js";

export function formatElapsed(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
}

const DELTA_TYPES = { agent_message: "agent_message", reasoning: "reasoning", command_output: "command_execution", file_change: "file_change" };

/** The statuses of a run that has ended; `run.<status>` is its terminal event. */
const ENDED = ["completed", "failed", "cancelled"];

export class RunView {
  constructor(run, { onFinished, onPreview, onStatus, workspace } = {}) {
    this.run = run;
    /** The workspace folder, to show the agent's absolute paths relative to it. */
    this.workspace = workspace;
    this.lastSeq = 0;
    /** True once the terminal event was applied: the timeline is whole. */
    this.complete = false;
    this.items = new Map();
    /** Streamed text of items not completed yet, by item id (live.js). */
    this.live = new Map();
    this.approvals = new Map();
    this.onStatus = onStatus;
    this.source = null;
    /** The stream is waiting for the event names (event-names.js). */
    this.opening = false;
    /** Counts the streams asked for: one closed meanwhile is not opened. */
    this.attempts = 0;
    this.onFinished = onFinished;
    /** Opens a file of the workspace in the Preview tab. */
    this.onPreview = onPreview;
    this.root = el("article", { class: "run", "data-testid": "run", "data-run-id": run.run_id });
    const header = el("header", { class: "run-header" });
    this.badge = el("span", { class: "badge", "data-testid": "run-status" });
    this.elapsed = el("span", { class: "elapsed", "data-testid": "run-elapsed" });
    this.cancelButton = el("button", { class: "cancel", type: "button", "data-testid": "cancel-run", text: "Cancel" });
    this.cancelButton.addEventListener("click", () => this.cancel());
    // The run's own changes, once it has ended (`GET /api/runs/{id}/patch`).
    this.patchLink = el("a", { href: `/api/runs/${run.run_id}/patch`, download: "", class: "patch-link", "data-testid": "run-patch", text: "Patch", title: "Download this run's changes as a patch" });
    this.patchLink.addEventListener("click", (event) => this.downloadPatch(event));
    this.patchError = el("span", { class: "patch-error error-text", role: "status", "data-testid": "run-patch-error" });
    header.append(
      el("span", { class: "position", text: `#${run.position}` }),
      this.badge,
      this.elapsed,
      this.patchError,
      this.patchLink,
      this.cancelButton,
    );
    this.root.append(header, el("div", { class: "prompt", "data-testid": "run-prompt", text: run.prompt }));
    this.timeline = el("ol", { class: "timeline", "data-testid": "timeline" });
    this.footer = el("footer", { class: "run-footer" });
    this.root.append(this.timeline, this.footer);
    this.setStatus(run.status);
  }

  get finished() {
    return ENDED.includes(this.run.status);
  }

  /** The stream is open, or being opened: it counts against the page's few. */
  get streaming() {
    return !!this.source || this.opening;
  }

  setStatus(status) {
    this.run.status = status;
    this.root.dataset.status = status;
    this.badge.textContent = status;
    this.badge.className = `badge ${status}`;
    this.cancelButton.hidden = this.finished;
    this.showPatchLink();
    this.tick();
    this.onStatus?.(this);
  }

  /** The start and end the server recorded (from the run list). */
  setTimes(started_at, finished_at) {
    this.run.started_at = started_at;
    if (finished_at || !this.finished) this.run.finished_at = finished_at;
    this.showPatchLink();
    this.tick();
  }

  /** A run that ended has a patch, unless it never started (cancelled while queued). */
  showPatchLink() {
    this.patchLink.hidden = !this.finished || !this.run.started_at;
  }

  /** Updates the elapsed time; called every second. A running run counts
   * from its recorded start; an ended one shows its recorded duration (or,
   * until the list has it, the time the page saw it end) and no longer
   * counts. */
  tick() {
    const { started_at, finished_at } = this.run;
    if (!started_at) {
      this.elapsed.textContent = this.run.status === "queued" ? "queued" : "";
      return;
    }
    if (this.finished && !finished_at) return; // the end is not known yet: keep what is shown
    const end = finished_at ? Date.parse(finished_at) : Date.now();
    this.elapsed.textContent = formatElapsed(end - Date.parse(started_at));
    this.elapsed.title = finished_at ? `${started_at} – ${finished_at}` : `since ${started_at}`;
  }

  async downloadPatch(event) {
    event.preventDefault();
    this.patchError.textContent = "";
    try {
      await download(this.patchLink.getAttribute("href"), `run-${this.run.run_id.slice(0, 8)}.patch`);
    } catch (error) {
      this.patchError.textContent = error.message;
    }
  }

  async cancel() {
    this.cancelButton.disabled = true;
    try {
      await api.cancel(this.run.run_id);
    } catch (error) {
      this.cancelButton.disabled = false;
      if (error.status !== 409) alert(error.message);
    }
  }

  /** Opens (or re-opens after a failure) the event stream from the last
   * event applied, once the event names are known. Without them the card
   * says why, and the next call (the run list is read every 2 s) asks again. */
  connect() {
    if (this.streaming) return;
    this.opening = true;
    const attempt = ++this.attempts;
    runEventNames().then(
      (names) => {
        if (attempt !== this.attempts) return; // closed meanwhile
        this.opening = false;
        this.timeline.querySelector("[data-testid=events-unknown]")?.remove();
        this.open(names);
      },
      (error) => {
        if (attempt !== this.attempts) return;
        this.opening = false;
        this.showNotice("events-unknown", "Events unavailable", `This page cannot learn the names of a run's events: ${error.message}. Retrying…`);
      },
    );
  }

  /** The stream, with a listener for each of `names` (EventSource delivers
   * an event to the listeners of its name only). */
  open(names) {
    const after = this.lastSeq ? `?after=${this.lastSeq}` : "";
    const source = new EventSource(`/api/runs/${this.run.run_id}/events${after}`);
    this.source = source;
    const handle = (event) => this.apply(event);
    // `stream.error`: the server could not read the run's events. It says
    // so (without an id) and ends the stream, which EventSource then
    // reconnects.
    const streamError = (event) => this.showStreamError(event);
    for (const name of names) source.addEventListener(name, name === "stream.error" ? streamError : handle);
    source.addEventListener("error", () => {
      // EventSource reconnects by itself (with Last-Event-ID) after a network
      // drop. It gives up after an error status, or a 204 that says nothing
      // is left after our last event: the run's own record then says
      // whether it ended (and how) or we should start again.
      if (source.readyState === EventSource.CLOSED && !this.complete) {
        this.source = null;
        setTimeout(() => this.resume(), 1500);
      }
    });
  }

  /** After the stream gave up: finishes from the run's record, else reconnects. */
  async resume() {
    if (this.complete) return;
    let run;
    try {
      run = await api.run(this.run.run_id);
    } catch {
      setTimeout(() => this.resume(), 1500);
      return;
    }
    if (ENDED.includes(run.status)) {
      this.run.finished_at = run.finished_at;
      this.finish(`run.${run.status}`, { error: run.error, files: run.files });
    } else {
      this.connect();
    }
  }

  showStreamError(event) {
    let message = "The server could not read this run's events";
    try {
      message = JSON.parse(event.data).message || message;
    } catch {
      // The notice says enough without the server's words.
    }
    this.showNotice("stream-error", "Events unavailable", `${message}. Retrying…`);
  }

  /** A notice at the end of the timeline, replacing the last one of its kind. */
  showNotice(testid, title, text) {
    this.timeline.querySelector(`[data-testid=${testid}]`)?.remove();
    const notice = this.itemShell("error", testid, title, text);
    notice.dataset.testid = testid;
    this.timeline.append(notice);
  }

  close() {
    this.attempts++;
    this.opening = false;
    this.source?.close();
    this.source = null;
  }

  apply(event) {
    const seq = Number(event.lastEventId);
    if (!Number.isFinite(seq) || seq <= this.lastSeq) return; // already applied
    this.lastSeq = seq;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    this.render(event.type, data);
  }

  render(type, data) {
    if (isTerminal(type)) this.finish(type, data);
    else RENDER[type]?.call(this, data, type);
  }

  showUsage(usage) {
    const u = usage || {};
    this.footer.querySelector("[data-testid=usage]")?.remove();
    this.footer.prepend(
      el("span", {
        class: "usage",
        "data-testid": "usage",
        text: `tokens: ${u.input_tokens ?? 0} in (${u.cached_input_tokens ?? 0} cached) · ${u.output_tokens ?? 0} out`,
      }),
    );
  }

  showError(data) {
    this.timeline.append(this.itemShell("error", `error-${this.lastSeq}`, "Error", data.error?.message || data.message));
  }

  finish(type, data) {
    this.complete = true;
    if (data.finalResponse) this.run.final_response = data.finalResponse;
    this.run.finished_at ||= new Date().toISOString();
    this.setStatus(type.slice("run.".length));
    if (data.error) {
      this.timeline.append(this.itemShell("error", "run-error", "Run failed", data.error));
    }
    const files = data.files;
    if (files && (files.created.length || files.modified.length || files.deleted.length)) {
      const list = el("ul", { class: "files-changed", "data-testid": "run-files" });
      for (const [kind, paths] of [["created", files.created], ["modified", files.modified], ["deleted", files.deleted]]) {
        for (const path of paths) {
          const item = el("li", { class: kind, text: `${kind}: ${visibleText(path)}` });
          if (kind !== "deleted" && this.onPreview) {
            const link = el("a", { href: "#", class: "preview-link", "data-testid": "preview-link", "data-path": path, text: "preview" });
            link.addEventListener("click", (event) => {
              event.preventDefault();
              this.onPreview(path);
            });
            item.append(" ", link);
          }
          list.append(item);
        }
      }
      this.footer.append(list);
    }
    this.close();
    this.onFinished?.(this);
  }

  itemShell(kind, id, title, text) {
    const node = el("li", { class: `item ${kind}`, "data-testid": "item", "data-kind": kind, "data-item-id": id });
    node.append(el("div", { class: "item-title", text: title }));
    if (text) node.append(el("div", { class: "item-body", text }));
    return node;
  }

  itemNode(id, type) {
    let node = this.items.get(id);
    if (!node) {
      node = el("li", { "data-testid": "item", "data-item-id": id });
      this.items.set(id, node);
      this.timeline.append(node);
    }
    node.className = `item ${type}`;
    node.dataset.kind = type;
    return node;
  }

  upsertItem(item, completed) {
    if (!item || !item.id) return;
    const node = this.itemNode(item.id, item.type);
    if (completed) {
      // The completed item is the whole; what streamed was a part of it.
      node.dataset.complete = "true";
      this.live.delete(item.id);
    } else if (node.dataset.complete) {
      return;
    }
    // An item without output renders no element for it (null): left out, not
    // appended as the text "null".
    node.replaceChildren(...renderItem(item, this.workspace).filter(Boolean));
    if (!completed) this.live.get(item.id)?.place(node, item.type);
  }

  /** A piece of an item that has not completed: its text grows in place. */
  applyDelta({ itemId, kind, delta }) {
    const type = DELTA_TYPES[kind];
    if (!itemId || !type || typeof delta !== "string") return;
    const node = this.itemNode(itemId, this.items.get(itemId)?.dataset.kind || type);
    if (node.dataset.complete) return;
    let live = this.live.get(itemId);
    if (!live) this.live.set(itemId, (live = new LiveText(type)));
    // Placed first, so that the terminal knows whether it was at its end.
    live.place(node, type);
    live.append(delta);
  }

  /** The agent asks before a command or a change (approvals.js). */
  showApproval(data) {
    if (!data.approvalId || this.approvals.has(data.approvalId)) return;
    const node = approvalCard(this.run.run_id, data, this.workspace);
    this.approvals.set(data.approvalId, node);
    this.timeline.append(node);
  }

  resolveApproval(data) {
    const node = this.approvals.get(data.approvalId);
    if (node) showDecision(node, data);
  }

  /** The agent's plan, as a checklist that it updates. */
  showPlan(data) {
    const node = this.itemNode(`plan-${this.run.run_id}`, "plan");
    node.dataset.testid = "plan";
    node.setAttribute("data-testid", "plan");
    const list = el("ul", { class: "todos" });
    for (const step of data.plan || []) {
      const box = el("input", { type: "checkbox", disabled: "" });
      box.checked = step.status === "completed";
      list.append(el("li", { class: step.status === "completed" ? "done" : step.status === "inProgress" ? "doing" : "" }, box, document.createTextNode(` ${step.step}`)));
    }
    node.replaceChildren(el("div", { class: "item-title", text: "Plan" }), ...(data.explanation ? [el("div", { class: "item-body", text: data.explanation })] : []), list);
  }
}
