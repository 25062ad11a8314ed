// The dashboard's entry: sessions on the left (sessions.js), the selected
// session on the right (session.js, its tabs and preview in tabs.js). The
// URL hash names the session (#/s/<id>). On a narrow screen the list and
// the open session are two views, with a back button from the session to
// the list. Shipping the work (the header's git line, the Diff tab's Ship
// bar) is ship.js's; signing in is signin.js's. This module wires them and
// starts; the views import one another only downwards (sessions → session
// → tabs), shared state is state.js's, so there is no import circle.

import { $ } from "./dom.js";
import { runEventNames } from "./event-names.js";
import { initSession, lastResponse, openSession } from "./session.js";
import { followSessions, initSessions, renderSessions } from "./sessions.js";
import { initShip } from "./ship.js";
import { initSignIn, start } from "./signin.js";
import { state } from "./state.js";
import { initTabs, showPreview } from "./tabs.js";

function route() {
  const match = location.hash.match(/^#\/s\/([0-9a-f-]{36})$/);
  openSession(match ? match[1] : null);
  renderSessions();
}

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

initSessions();
initShip({ lastResponse });
initSession();
initTabs();
initSignIn(signedIn);

fetch("/mode.json")
  .then((r) => r.json())
  .then((mode) => {
    $("#demo-banner").hidden = !mode.demo;
    state.previewPort = mode.preview_port ?? null;
    if (state.tab === "preview") showPreview();
  })
  .catch(() => {});

// Asked for now, so that the first run's stream need not wait for them; a
// failure shows on the runs' cards (timeline.js), which ask again.
runEventNames().catch(() => {});
start();
