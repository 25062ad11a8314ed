// The dashboard's headers in Chromium: a page on another local port that
// frames the signed-in dashboard gets nothing (clickjacking the approve
// button needs the frame), while the dashboard opened directly, and the
// API docs it forwards, work under their Content-Security-Policy without
// one violation.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { chromium } from "playwright-core";
import { startStack } from "./stack.mjs";

/** A hang guard only: every wait below ends on an event in the page. */
const LONG = 90_000;

let stack;
let browser;

before(async () => {
  stack = await startStack();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

/** A page whose console's CSP messages are kept in `page.violations`. */
async function newPage(context) {
  const page = await (context || browser).newPage({ viewport: { width: 1280, height: 900 } });
  page.violations = [];
  page.on("console", (message) => {
    if (/Content[- ]Security[- ]Policy/i.test(message.text())) page.violations.push(message.text());
  });
  return page;
}

/** Another site on this machine: a page framing `target`, and a page of
 * its own that it frames too (which shows framing as such works). */
async function framingSite(target) {
  const server = createServer((request, response) => {
    response.setHeader("content-type", "text/html; charset=utf-8");
    if (request.url === "/own") {
      response.end("<!doctype html><title>own</title><p id=own>a page of this site</p>");
      return;
    }
    response.end(`<!doctype html><title>a prize for you</title>
      <iframe id=dashboard name=dashboard src="${target}" width=900 height=600></iframe>
      <iframe id=own name=own src="/own"></iframe>`);
  });
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  return { url: `http://127.0.0.1:${server.address().port}/`, close: () => new Promise((done) => server.close(done)) };
}

test("a page on another local port cannot frame the signed-in dashboard", async () => {
  const context = await browser.newContext();
  const signedIn = await newPage(context);
  await stack.signIn(signedIn);
  const site = await framingSite(`${stack.url}/`);
  try {
    const page = await newPage(context);
    const refused = page.waitForEvent("console", {
      predicate: (message) => /frame-ancestors 'none'/.test(message.text()),
      timeout: LONG,
    });
    await page.goto(site.url);
    // The site's own frame loads...
    const own = page.frame({ name: "own" });
    await own.locator("#own").waitFor({ timeout: LONG });
    // ...the dashboard's does not: Chromium refuses it and says why (without
    // the headers, the dashboard shows in the frame, signed in), and the
    // frame holds an error page, not the dashboard.
    const outcome = await Promise.race([
      refused.then((message) => `refused: ${message.text()}`, (error) => `no refusal: ${error.message}`),
      page.frameLocator("#dashboard").getByTestId("signed-in-user").waitFor({ timeout: LONG })
        .then(() => "the signed-in dashboard shows in the frame", (error) => `no dashboard either: ${error.message}`),
    ]);
    assert.ok(outcome.startsWith(`refused: Framing '${stack.url}/'`) && /blocked/.test(outcome), outcome);
    const frame = page.frame({ name: "dashboard" });
    assert.ok(!frame.url().startsWith(stack.url), `the frame is not the dashboard: ${frame.url()}`);
    const inside = await frame.evaluate(() => document.documentElement.outerHTML).catch((error) => `unreadable: ${error.message}`);
    assert.doesNotMatch(inside, /sign-out|data-testid/, "nothing of the dashboard is in the frame");
    // The signed-in tab itself still works.
    assert.equal(await signedIn.getByTestId("signed-in-user").innerText(), "alice");
    assert.deepEqual(signedIn.violations, []);
  } finally {
    await site.close();
    await context.close();
  }
});

test("the dashboard works under its policy: sign in, a session, a prompt, the preview, with no violation", async () => {
  const page = await newPage();
  await stack.signIn(page);
  await page.fill("[data-testid=new-session-url]", `file://${stack.makeRepo("headers")}`);
  await page.click("[data-testid=create-session]");
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  await page.fill("[data-testid=prompt-input]", "build a snake game in the browser");
  await page.press("[data-testid=prompt-input]", "Enter");
  const run = page.locator("[data-testid=run]").last();
  await run.locator("[data-testid=run-status].completed").waitFor({ timeout: LONG });
  // Markdown, the timeline and the styles all came from this origin.
  assert.match(await run.locator("[data-kind=agent_message]").innerText(), /Built snake\/index\.html/);
  assert.equal(await page.locator("header.topbar").evaluate((e) => getComputedStyle(e).display), "flex", "style.css applies");
  // The Preview tab frames the preview listener (frame-src).
  await run.locator("[data-testid=preview-link][data-path='snake/index.html']").click();
  const frame = await (await page.getByTestId("preview-frame").elementHandle()).contentFrame();
  await frame.waitForFunction(() => Number(document.body.dataset.ticks) >= 2, null, { timeout: LONG });
  assert.deepEqual(page.violations, []);
  await page.close();
});

test("the API docs (Swagger UI, forwarded) render under their own policy", async () => {
  const page = await newPage();
  const response = await page.goto(`${stack.url}/docs`);
  const policy = response.headers()["content-security-policy"];
  assert.match(policy, /frame-ancestors 'none'/);
  assert.equal(response.headers()["x-frame-options"], "DENY");
  assert.equal(response.headers()["x-content-type-options"], "nosniff");
  await page.locator(".swagger-ui .opblock").first().waitFor({ timeout: LONG });
  assert.deepEqual(page.violations, []);
  await page.close();
});
