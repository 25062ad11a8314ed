// What the dashboard knows about the open session and the list, shared by
// the views (sessions.js, session.js, tabs.js). One object, changed in
// place: a view reads it when it draws. A leaf module.

export const state = {
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
