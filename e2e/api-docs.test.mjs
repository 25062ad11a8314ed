// The browser example of docs/API.md, run as written in headless Chromium
// against the whole stack: it renders every event once, survives a dropped
// connection, and a stream reopened past the end of a finished run gets a
// 204 and stops, with no exception in the page.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { chromium } from "playwright-core";
import { startStack } from "./stack.mjs";

/** A hang guard only: every wait below ends on an event in the page. */
const LONG = 90_000;

/** The first ```js block after "### In a browser" in docs/API.md. */
function documentedExample() {
  const text = readFileSync(resolve(import.meta.dirname, "../docs/API.md"), "utf8");
  const section = text.slice(text.indexOf("### In a browser"));
  const match = section.match(/```js\n([\s\S]*?)```/);
  assert.ok(match, "docs/API.md has no browser example");
  return match[1];
}

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

async function api(method, path, body) {
  const response = await stack.fetch(`${stack.url}${path}`, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  assert.ok(response.ok, `${method} ${path}: ${response.status}`);
  return response.json();
}

async function readySession(name) {
  const created = await api("POST", "/api/sessions", { repo_url: `file://${stack.makeRepo(name)}` });
  for (;;) {
    const session = await api("GET", `/api/sessions/${created.session_id}`);
    if (session.status !== "cloning") {
      assert.equal(session.status, "ready");
      return session.session_id;
    }
    await new Promise((done) => setTimeout(done, 100)); // the API has no clone event
  }
}

test("the documented EventSource example renders a run once, across a dropped connection", async () => {
  const session = await readySession("docs-example");
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  await stack.signIn(page);
  const { run_id: runId } = await api("POST", `/api/sessions/${session}/prompt`, { prompt: "work slowly" });

  // The example's free names: `runId`, `render` and `ended`.
  await page.evaluate(({ code, runId }) => {
    window.rendered = [];
    window.endedWith = null;
    const render = (type, data) => window.rendered.push({ type, data });
    const ended = (id) => { window.endedWith = id; };
    window.source = new Function("runId", "render", "ended", `${code}\nreturn source;`)(runId, render, ended);
  }, { code: documentedExample(), runId });
  await page.waitForFunction(() => window.rendered.some((e) => e.type === "item.completed"), null, { timeout: LONG });
  await stack.restartProxy(); // the page's connection drops mid-run
  await page.waitForFunction(() => window.source.readyState === 2
    && window.rendered.some((e) => e.type === "run.completed"), null, { timeout: LONG });

  const rendered = await page.evaluate(() => window.rendered);
  const response = await stack.fetch(`${stack.url}/api/runs/${runId}/events`);
  const stored = (await response.text()).split("\n").filter((l) => l.startsWith("event: ")).map((l) => l.slice(7));
  // The replay after the end leaves out the deltas of completed items
  // (docs/API.md, "Replays are compact"); the page saw them live.
  const live = rendered.map((e) => e.type).filter((type) => type !== "item.delta");
  assert.deepEqual(live, stored, "every event once, in order");
  assert.deepEqual(errors, []);
  await page.close();
});

test("a stream reopened past the end of a finished run gets 204 and stops reconnecting", async () => {
  const session = await readySession("docs-204");
  const { run_id: runId } = await api("POST", `/api/sessions/${session}/prompt`, { prompt: "hello" });
  const text = await (await stack.fetch(`${stack.url}/api/runs/${runId}/events`)).text();
  const last = text.split("\n").filter((l) => l.startsWith("id: ")).map((l) => Number(l.slice(4))).pop();
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  const requests = [];
  // The run's stream only (the dashboard's own page follows its sessions).
  page.on("request", (request) => { if (request.url().includes(`/api/runs/${runId}/events`)) requests.push(request.url()); });
  await stack.signIn(page);

  // What a page that reloads does: resume with ?after= its last event.
  const documented = documentedExample().replace("/events`", `/events?after=${last}\``);
  const state = await page.evaluate(({ code, runId }) => new Promise((done) => {
    const rendered = [];
    const ended = () => done({ rendered, readyState: source.readyState });
    const source = new Function("runId", "render", "ended", `${code}\nreturn source;`)(
      runId, (type) => rendered.push(type), ended);
  }), { code: documented, runId });

  assert.deepEqual(state, { rendered: [], readyState: 2 });
  assert.equal(requests.length, 1, `EventSource reconnected: ${requests}`);
  assert.deepEqual(errors, []);
  await page.close();
});
