// Signing in and out: the sign-in form (an API token, or a sign-in link's
// code pasted), the page that asks before a sign-in link is used, and the
// Sign out button. What the page shows once signed in is app.js's, handed
// in as `onSignedIn`, so this module needs none of the views.

import { api, whenSignedOut } from "./api.js";
import { $, showError } from "./dom.js";

/** How to get another link, for a link that no longer works. */
const NEW_LINK = "Ask whoever gave it to you for a new one (backend admin signin-link NAME), or paste an API token.";

/** Shows the dashboard for the user `me` (`GET /api/auth/me`). */
let signedIn = () => {};

/** The page without the session: the sign-in form. Reloading drops every
 * stream and view of the account that was signed in. */
export function signedOut() {
  if (!$("#signin").hidden) return;
  if (!$("#layout").hidden) {
    location.replace(location.pathname);
    return;
  }
  $("#signin").hidden = false;
  $("#signin-token").focus();
}

/** A sign-in link carries a one-time code in its fragment (`#code=rrs_…`),
 * which the browser never sends. Anyone can send a link, so it is never used
 * unasked: the page wipes it from the address bar and the history, shows whom
 * it signs in (and who is signed in now), and signs in only when the user
 * says so. */
export async function start() {
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

/** Wires the sign-in form, Sign out, and sign-in links opened in this tab;
 * `onSignedIn(me)` shows the dashboard. */
export function initSignIn(onSignedIn) {
  signedIn = onSignedIn;
  whenSignedOut(signedOut);

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

  // A sign-in link opened in a tab that shows the dashboard already changes
  // only the fragment: ask about it all the same, on a fresh page.
  window.addEventListener("hashchange", () => {
    if (!/^#(code|token)=/.test(location.hash)) return;
    location.reload();
  });
}
