// A session the sweeper expires while its page is open: the page learns it
// from the session stream and says why, and its prompt box turns off.
// A stack of its own, whose workspaces quota (1 byte) no session fits in.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { startStack } from "./stack.mjs";

/** A hang guard only: every wait below ends on an event in the page. */
const LONG = 90_000;
let stack;
let browser;

before(async () => {
  stack = await startStack({
    backendEnv: { BACKEND_WORKSPACES_MAX_BYTES: "1", BACKEND_SWEEP_INTERVAL_SECS: "1" },
  });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

test("a session that expires while open says why and takes no more prompts", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (error) => console.error("page error:", error.message));
  await stack.signIn(page);
  await page.fill("[data-testid=new-session-url]", `file://${stack.makeRepo("expiring")}`);
  await page.click("[data-testid=create-session]");
  await page.waitForURL(/#\/s\//);

  await page.waitForSelector("[data-testid=session-status].expired", { timeout: LONG });
  const error = page.getByTestId("session-error");
  assert.equal(await error.isVisible(), true);
  assert.match(await error.textContent(), /expired on .*: its workspace was removed after it sat idle/);
  assert.equal(await page.isDisabled("[data-testid=prompt-input]"), true);
  assert.match(await page.getByTestId("prompt-input").getAttribute("placeholder"), /has expired/);
  // The list says so too.
  await page.locator("[data-testid=sessions] .badge.expired").first().waitFor({ timeout: LONG });
  await page.close();
});
