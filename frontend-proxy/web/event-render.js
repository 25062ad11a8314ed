// How a run's card draws each event, by name: the methods of `RunView`
// (timeline.js) each name calls. Leaf module: it imports nothing.

/** How each event name of a run's stream shows, by name; the terminal
 * names (`run.*`) end the card (`finish`). The names are the API's
 * (`RunEventType`): a test holds this table and `SHOWN_ELSEWHERE` to them,
 * so a name the backend renames or adds cannot be silently dropped here. */
export const RENDER = {
  "turn.started"(data) {
    if (this.run.status !== "queued") return;
    this.run.started_at ||= new Date().toISOString();
    this.setStatus("running");
  },
  "item.delta"(data) {
    this.applyDelta(data);
  },
  "item.started"(data) {
    this.upsertItem(data.item, false);
  },
  "item.updated"(data) {
    this.upsertItem(data.item, false);
  },
  "item.completed"(data) {
    this.upsertItem(data.item, true);
  },
  "approval.requested"(data) {
    this.showApproval(data);
  },
  "approval.resolved"(data) {
    this.resolveApproval(data);
  },
  "plan.updated"(data) {
    this.showPlan(data);
  },
  "turn.completed"(data) {
    this.showUsage(data.usage);
  },
  "usage.updated"(data) {
    this.showUsage(data.usage);
  },
  "turn.failed"(data) {
    this.showError(data);
  },
  "codex.error"(data) {
    this.showError(data);
  },
};

/** Names a run's card does not draw from `RENDER`: `thread.started` (the
 * session's own business), `diff.updated` (the Diff tab reads the
 * workspace) and `stream.error` (its own listener, see `open`). */
const SHOWN_ELSEWHERE = ["thread.started", "diff.updated", "stream.error"];

/** Every name this module handles, for the test that holds it to the API. */
export const HANDLED_NAMES = Object.freeze([...Object.keys(RENDER), ...SHOWN_ELSEWHERE]);
