// The dashboard in headless Chromium against the whole stack (real binaries,
// real Codex CLI with the scripted model, real Postgres). Screenshots of the
// main views go to test-artifacts/.

import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";
import { git, startStack } from "./stack.mjs";

/** As the dashboard shows a duration (timeline.js). */
function formatElapsed(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
}

const artifacts = resolve(import.meta.dirname, "../test-artifacts");
mkdirSync(artifacts, { recursive: true });
/** A hang guard only: every wait below ends on an event in the page. */
const LONG = 90_000;

let stack;
let browser;
/** Bob's API token, once a test made him. */
let bobToken;
/** What the pages' consoles said about a Content-Security-Policy. */
const violations = [];

before(async () => {
  stack = await startStack();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

afterEach(() => {
  assert.deepEqual(violations.splice(0), [], "the dashboard runs within its Content-Security-Policy");
});

async function newPage(viewport = { width: 1280, height: 900 }) {
  const page = await browser.newPage({ viewport });
  const external = [];
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (!["127.0.0.1", "localhost"].includes(url.hostname) && url.protocol !== "data:") external.push(request.url());
  });
  page.on("pageerror", (error) => console.error("page error:", error.message));
  page.on("console", (message) => {
    const text = message.text();
    if (/Content[- ]Security[- ]Policy/i.test(text) && !page.expectedViolation?.(text)) violations.push(text);
  });
  page.external = external;
  await stack.signIn(page);
  return page;
}

async function createSession(page, repo, ref) {
  await page.goto(stack.url);
  await page.fill("[data-testid=new-session-url]", `file://${repo}`);
  if (ref) await page.fill("[data-testid=new-session-ref]", ref);
  await page.click("[data-testid=create-session]");
  await page.waitForURL(/#\/s\//);
  return page.url().split("#/s/")[1];
}

async function sendPrompt(page, text) {
  const before = await page.locator("[data-testid=run]").count();
  await page.fill("[data-testid=prompt-input]", text);
  await page.press("[data-testid=prompt-input]", "Enter");
  await page.locator("[data-testid=run]").nth(before).waitFor({ timeout: LONG });
  return page.locator("[data-testid=run]").nth(before);
}

const itemIds = (run) => run.locator("[data-testid=item]").evaluateAll((nodes) => nodes.map((n) => n.dataset.itemId));

test("a prompt's timeline fills live, then the file shows in the tree and the diff", async () => {
  const page = await newPage();
  const repo = stack.makeRepo("live");
  await createSession(page, repo);
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  assert.equal(await page.getByTestId("prompt-input").getAttribute("placeholder").then((p) => p.includes("Enter")), true);
  assert.equal(await page.isDisabled("[data-testid=send-prompt]"), true, "nothing to send yet");

  const run = await sendPrompt(page, "Please create a file");
  // Live: the reasoning item is on the page while the run still runs.
  await run.locator("[data-kind=reasoning]").waitFor({ timeout: LONG });
  assert.notEqual(await run.getAttribute("data-status"), "completed");
  await page.waitForSelector("[data-testid=run][data-status=completed]", { timeout: LONG });

  const kinds = await run.locator("[data-testid=item]").evaluateAll((nodes) => nodes.map((n) => n.dataset.kind));
  assert.deepEqual(kinds, ["reasoning", "command_execution", "agent_message"]);
  assert.equal(await run.locator("[data-kind=command_execution] [data-testid=exit-code]").innerText(), "exit 0");
  assert.equal(await run.locator("[data-kind=agent_message] strong").innerText(), "hello.txt");
  assert.match(await run.getByTestId("usage").innerText(), /tokens: \d+ in/);
  assert.match(await run.getByTestId("run-files").innerText(), /created: hello\.txt/);
  await page.screenshot({ path: join(artifacts, "conversation.png"), fullPage: true });

  await page.click("[data-testid=tab-files]");
  await page.click("[data-testid=file-entry][data-path='hello.txt'] button");
  assert.equal(await page.locator("[data-testid=file-content]").innerText(), "hello\n");
  await page.screenshot({ path: join(artifacts, "files.png") });

  await page.click("[data-testid=tab-diff]");
  await page.locator("[data-testid=diff] .line.add").first().waitFor({ timeout: LONG });
  const added = await page.locator("[data-testid=diff] .line.add").allInnerTexts();
  assert.ok(added.some((line) => line.trim() === "+hello"), added.join(""));
  await page.screenshot({ path: join(artifacts, "diff.png") });

  await page.setViewportSize({ width: 390, height: 844 });
  await page.click("[data-testid=tab-conversation]");
  await page.screenshot({ path: join(artifacts, "phone.png") });
  assert.deepEqual(page.external, [], "the page makes no external requests");
  await page.close();
});

test("a second prompt resumes the same Codex thread", async () => {
  const page = await newPage();
  const session = await createSession(page, stack.makeRepo("resume"));
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  await sendPrompt(page, "remember the word avocado");
  await page.waitForSelector("[data-testid=run]:nth-child(1)[data-status=completed]", { timeout: LONG });
  await sendPrompt(page, "what was the word?");
  await page.waitForSelector("[data-testid=run]:nth-child(2)[data-status=completed]", { timeout: LONG });

  const second = page.locator("[data-testid=run]").nth(1);
  assert.equal(await second.locator("[data-kind=agent_message]").innerText(), "You said: what was the word?");
  const requests = await (await fetch(`${stack.modelUrl}/_requests`)).json();
  const last = JSON.stringify(requests.at(-1).input);
  assert.ok(last.includes("remember the word avocado"), "the model received the earlier turn");
  const runs = await (await stack.fetch(`${stack.url}/api/sessions/${session}/runs`)).json();
  const threads = [];
  for (const run of runs.runs) {
    const events = await (await stack.fetch(`${stack.url}/api/runs/${run.run_id}/events`)).text();
    threads.push(events.match(/"thread_id":"([^"]+)"/)[1]);
  }
  assert.equal(threads[0], threads[1]);
  await page.close();
});

test("a long run can be cancelled", async () => {
  const page = await newPage();
  await createSession(page, stack.makeRepo("cancel"));
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  const run = await sendPrompt(page, "please sleep");
  await run.locator("[data-kind=command_execution]").waitFor({ timeout: LONG });
  assert.match(await run.getByTestId("run-status").innerText(), /running/);
  await run.getByTestId("cancel-run").click();
  await page.waitForSelector("[data-testid=run][data-status=cancelled]", { timeout: LONG });
  assert.equal(await run.getByTestId("cancel-run").isHidden(), true);
  await page.screenshot({ path: join(artifacts, "cancelled.png") });
  await page.close();
});

test("a dropped connection and a reload mid-run show every item once", async () => {
  const page = await newPage();
  await createSession(page, stack.makeRepo("drop"));
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  const run = await sendPrompt(page, "work slowly");
  await run.locator("[data-kind=reasoning]").first().waitFor({ timeout: LONG });

  await stack.restartProxy(); // every connection of the page drops
  await page.waitForSelector("[data-testid=run][data-status=completed]", { timeout: LONG });
  const ids = await itemIds(run);
  assert.equal(new Set(ids).size, ids.length, `duplicates in ${ids}`);
  assert.equal(ids.length, 7, `three reasoning, three commands and a message: ${ids}`);

  const second = await sendPrompt(page, "work slowly again");
  await second.locator("[data-kind=reasoning]").first().waitFor({ timeout: LONG });
  await page.reload();
  await page.waitForSelector("[data-testid=run]:nth-child(2)[data-status=completed]", { timeout: LONG });
  const reloaded = page.locator("[data-testid=run]");
  assert.deepEqual(await itemIds(reloaded.nth(0)), ids, "a reload rebuilds the same timeline");
  const again = await itemIds(reloaded.nth(1));
  assert.equal(new Set(again).size, again.length);
  assert.equal(again.length, 7);
  await page.close();
});

test("model text cannot inject HTML", async () => {
  const page = await newPage();
  await createSession(page, stack.makeRepo("inject"));
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  const run = await sendPrompt(page, "inject something");
  await page.waitForSelector("[data-testid=run][data-status=completed]", { timeout: LONG });
  const message = run.locator("[data-kind=agent_message]");
  assert.match(await message.innerText(), /<img src=x onerror=/);
  assert.equal(await message.locator("img, script").count(), 0);
  assert.equal(await message.locator("a").count(), 0, "javascript:, //host, \\\\host, /\\host and tab-prefixed links are not links");
  assert.match(await message.innerText(), /pr bs sb/);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  await page.close();
});

// --- one vocabulary of run events (issue 22) ----------------------------------

/** The names of a run's events, as the API's document lists them (it is public). */
async function specEventNames() {
  const spec = await (await fetch(`${stack.url}/api/openapi.json`)).json();
  return spec.components.schemas.RunEventType.enum;
}

test("a run's stream is listened to for every event name of the API's spec, and a page that cannot read them says so", async () => {
  const page = await newPage();
  // Every name the page subscribes a run's stream with, as EventSource is told.
  await page.addInitScript(() => {
    window.__runStreamNames = [];
    const add = EventSource.prototype.addEventListener;
    EventSource.prototype.addEventListener = function (type, ...rest) {
      if (/\/api\/runs\/[0-9a-f-]{36}\/events/.test(this.url)) window.__runStreamNames.push(type);
      return add.call(this, type, ...rest);
    };
  });
  const session = await createSession(page, stack.makeRepo("vocabulary"));
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  const run = await sendPrompt(page, "say hello");
  await page.waitForSelector("[data-testid=run][data-status=completed]", { timeout: LONG });
  assert.equal(await run.getAttribute("data-status"), "completed");

  const spec = await specEventNames();
  assert.ok(spec.includes("diff.updated") && spec.includes("run.completed"), spec.join(" "));
  // EventSource's own `error` aside, the page listens to the spec's names, no fewer and no more.
  const subscribed = await page.evaluate(() => window.__runStreamNames);
  const names = [...new Set(subscribed.filter((name) => name !== "error"))].sort();
  assert.deepEqual(names, [...spec].sort(), "the dashboard's run event names are the spec's");
  // And each of them is drawn, or said to be shown elsewhere: none the
  // timeline knows is missing from the spec, none of the spec's is unknown.
  const handled = await page.evaluate(async () => (await import("/event-render.js")).HANDLED_NAMES);
  const terminal = spec.filter((name) => name.startsWith("run."));
  assert.deepEqual([...handled, ...terminal].sort(), [...spec].sort(), "the timeline handles exactly the spec's names");

  // Without the document, a run's card says why its events do not show,
  // instead of listening to nothing; once it can be read, they show.
  await page.route("**/api/openapi.json", (route) => route.fulfill({ status: 503, contentType: "application/json", body: "{}" }));
  await page.goto(`${stack.url}/#/s/${session}`);
  await page.reload();
  const notice = page.locator("[data-testid=run] [data-testid=events-unknown]");
  await notice.waitFor({ timeout: LONG });
  assert.match(await notice.innerText(), /openapi\.json answered 503/);
  assert.equal(await page.locator("[data-testid=run] [data-testid=item]").count(), 0);
  await page.unroute("**/api/openapi.json");
  await page.locator("[data-testid=run] [data-kind=agent_message]").waitFor({ timeout: LONG });
  assert.equal(await notice.count(), 0, "the notice goes once the names are known");
  await page.close();
});

test("streamed text is appended, and past its cap shows its last 200 000 characters, colour codes split between deltas stripped", async () => {
  const page = await newPage();
  await page.goto(stack.url);
  await page.getByTestId("create-form").waitFor();
  const result = await page.evaluate(async () => {
    const { LiveText } = await import("/live.js");
    const MAX = 200_000;
    // A message: each delta appended to what is there, no node replaced
    // until the cap.
    const message = new LiveText("agent_message");
    const card = document.createElement("li");
    const removed = [];
    new MutationObserver((records) => records.forEach((r) => removed.push(...r.removedNodes))).observe(message.root, { childList: true });
    let whole = "";
    let firstNode = null;
    let sameFirst = true;
    for (let i = 0; whole.length < 150_000; i++) {
      const delta = `word ${i} `;
      whole += delta;
      message.append(delta);
      message.place(card, "agent_message");
      firstNode ??= message.root.firstChild;
      sameFirst &&= message.root.firstChild === firstNode;
    }
    await Promise.resolve();
    const beforeCap = { sameFirst, removed: removed.length, equal: message.root.textContent === whole };
    while (whole.length < 450_000) {
      const delta = `more ${whole.length} `.repeat(7);
      whole += delta;
      message.append(delta);
    }
    const atCap = {
      equal: message.root.textContent === whole.slice(-MAX),
      nodes: message.root.childNodes.length,
      inCard: card.firstChild === message.root && card.childNodes.length === 1,
      testid: message.root.dataset.testid,
    };
    // A command's output: a colour code cut in two by the stream.
    const output = new LiveText("command_execution");
    const shown = [];
    for (const delta of ["line 1 \x1b[3", "2mgreen\x1b[0m\n", "line 2 \x1b", "[1mbold\x1b[0m\n"]) {
      output.append(delta);
      shown.push(output.root.textContent);
    }
    return { beforeCap, atCap, shown, outputTestid: output.root.dataset.testid };
  });
  assert.deepEqual(result.beforeCap, { sameFirst: true, removed: 0, equal: true });
  assert.equal(result.atCap.equal, true, "the last 200 000 characters, as before");
  assert.ok(result.atCap.nodes <= 60, `a few thousand characters a text node: ${result.atCap.nodes} nodes`);
  assert.equal(result.atCap.inCard, true);
  assert.equal(result.atCap.testid, "live-text");
  assert.equal(result.outputTestid, "live-output");
  assert.deepEqual(result.shown, ["line 1 ", "line 1 green\n", "line 1 green\nline 2 ", "line 1 green\nline 2 bold\n"]);
  await page.close();
});

test("a failed clone shows its message", async () => {
  const page = await newPage();
  await page.goto(stack.url);
  await page.fill("[data-testid=new-session-url]", `file://${stack.dir}/no-such-repo`);
  await page.click("[data-testid=create-session]");
  const error = page.getByTestId("session-error");
  await error.waitFor({ timeout: LONG });
  assert.match(await error.innerText(), /Clone failed: repository not found/);
  assert.equal(await page.isDisabled("[data-testid=prompt-input]"), true);
  await page.screenshot({ path: join(artifacts, "failed-clone.png") });

  await page.fill("[data-testid=new-session-url]", "ext::sh");
  await page.click("[data-testid=create-session]");
  await page.getByTestId("create-error").filter({ hasText: "transport helper" }).waitFor({ timeout: LONG });
  await page.close();
});

test("bug 5: the list and the header follow one stream and never disagree, with no polling", async () => {
  const page = await newPage();
  const polls = [];
  page.on("request", (request) => {
    if (/\/api\/sessions(\?|\/[0-9a-f-]{36}$)/.test(new URL(request.url()).pathname + new URL(request.url()).search)) polls.push(request.url());
  });
  await page.goto(stack.url);
  await page.fill("[data-testid=new-session-url]", `file://${stack.dir}/no-such-repo-either`);
  await page.click("[data-testid=create-session]");
  await page.waitForURL(/#\/s\//);
  const id = page.url().split("#/s/")[1];

  // The header turns `failed`; at that moment, in the same frame, so has
  // the list's entry: both are drawn from the one event.
  const seen = await page.waitForFunction((id) => {
    const header = document.querySelector("#session-status")?.textContent;
    if (header !== "failed") return null;
    const item = document.querySelector(`[data-session-id="${id}"] .badge`)?.textContent;
    return { header, item };
  }, id, { timeout: LONG, polling: 50 });
  assert.deepEqual(await seen.jsonValue(), { header: "failed", item: "failed" });

  // Deleting it elsewhere (another tab, the API) empties the view here.
  const deleted = await stack.fetch(`${stack.url}/api/sessions/${id}`, { method: "DELETE" });
  assert.equal(deleted.status, 204);
  await page.waitForFunction((id) => !document.querySelector(`[data-session-id="${id}"]`) && location.hash === "", id, { timeout: LONG, polling: 50 });
  // The session was followed on the stream, not polled: at most one read,
  // when the page opened it before the stream had told of it.
  assert.ok(polls.length <= 1, `polled: ${polls}`);
  await page.close();
});

// --- the Preview tab -------------------------------------------------------

test("a page the run built runs in the sandboxed Preview, apart from the dashboard's cookies and API", async () => {
  const page = await newPage();
  const repo = stack.makeRepo("preview");
  // A symlink to a file outside the workspace, committed: the preview
  // reads through the backend, which refuses it.
  symlinkSync("/etc/hostname", join(repo, "outside"));
  git(repo, "add", "outside");
  git(repo, "commit", "-q", "-m", "a symlink out of the workspace");
  await page.goto(stack.url);
  await page.evaluate(() => { document.cookie = "dashboard_secret=s3cret; path=/"; });
  const session = await createSession(page, repo);
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });

  const run = await sendPrompt(page, "build a snake game in the browser");
  await page.waitForSelector("[data-testid=run][data-status=completed]", { timeout: LONG });
  await run.locator("[data-testid=preview-link][data-path='snake/index.html']").click();

  assert.equal(await page.getByTestId("tab-preview").getAttribute("aria-selected"), "true");
  const frameElement = page.getByTestId("preview-frame");
  assert.equal(await frameElement.getAttribute("sandbox"), "allow-scripts");
  // The address carries the session's grant, which the dashboard asks for
  // first: the frame gets its address when the grant comes.
  await page.locator("[data-testid=preview-frame][src]").waitFor({ timeout: LONG });
  const src = await frameElement.getAttribute("src");
  const grant = src.match(new RegExp(`^${stack.previewUrl}/${session}/(rrp_[A-Za-z0-9_-]{43})/snake/index\\.html$`))?.[1];
  assert.ok(grant, src);
  const base = `${stack.previewUrl}/${session}/${grant}`;
  const frame = await (await frameElement.elementHandle()).contentFrame();
  // The page's own script (snake.js, from the preview's origin) runs.
  await frame.waitForFunction(() => Number(document.body.dataset.ticks) >= 2, null, { timeout: LONG });
  assert.equal(await frame.locator("#status").innerText(), "snake is running");
  await page.screenshot({ path: join(artifacts, "preview.png") });

  // An opaque origin: no cookie of the dashboard's host is readable...
  assert.equal(await frame.evaluate(() => self.origin), "null");
  const cookie = await frame.evaluate(() => {
    try {
      return `readable: ${document.cookie}`;
    } catch (error) {
      return `refused: ${error.name}`;
    }
  });
  assert.equal(cookie, "refused: SecurityError", "the sandboxed page cannot read cookies at all");
  assert.equal(await page.evaluate(() => document.cookie), "dashboard_secret=s3cret", "the dashboard still has its cookie");
  // ...and the dashboard's API is out of its reach, cookie or not (the
  // preview's own policy, connect-src, refuses it).
  page.expectedViolation = (text) => text.includes(`${stack.url}/api/sessions`);
  const api = await frame.evaluate(async (url) => {
    try {
      const response = await fetch(url, { credentials: "include" });
      return `answered ${response.status}: ${(await response.text()).slice(0, 40)}`;
    } catch (error) {
      return `refused: ${error.name}`;
    }
  }, `${stack.url}/api/sessions`);
  assert.equal(api, "refused: TypeError");

  // The reload button loads the page again.
  await frame.evaluate(() => { window.__before_reload = true; });
  await page.getByTestId("preview-reload").click();
  await frame.waitForFunction(() => !window.__before_reload && Number(document.body.dataset.ticks) >= 1, null, { timeout: LONG });

  // `.git` and a symlink out of the workspace are refused, in the error schema.
  const hostname = readFileSync("/etc/hostname", "utf8");
  for (const [path, status] of [[".git/config", 403], ["outside", 404]]) {
    const response = await fetch(`${base}/${path}`);
    assert.equal(response.status, status, path);
    const text = await response.text();
    assert.ok(!text.includes(hostname.trim()) || !hostname.trim(), "nothing of the file outside is served");
    const body = JSON.parse(text);
    assert.equal(typeof body.code, "string", path);
    assert.equal(typeof body.message, "string", path);
  }
  // The root folder has no index.html: its files are listed.
  const root = await (await fetch(`${base}/`)).text();
  assert.match(root, /<a href="\.\/snake\/">snake\/<\/a>/);
  assert.deepEqual(page.external, [], "the page makes no external requests");
  await page.close();
});

/** Commits `files` (path -> content) to a new repository; its path. */
function repoWith(name, files) {
  const repo = stack.makeRepo(name);
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(repo, path, ".."), { recursive: true });
    writeFileSync(join(repo, path), content);
  }
  git(repo, "add", ".");
  git(repo, "commit", "-q", "-m", "files");
  return repo;
}

/** A ready session of the user whose token is `token`, made through the API. */
async function apiSession(token, repo) {
  const auth = { authorization: `Bearer ${token}` };
  const created = await (await fetch(`${stack.url}/api/sessions`, {
    method: "POST", headers: { "content-type": "application/json", ...auth }, body: JSON.stringify({ repo_url: `file://${repo}` }),
  })).json();
  for (;;) {
    const session = await (await fetch(`${stack.url}/api/sessions/${created.session_id}`, { headers: auth })).json();
    if (session.status !== "cloning") {
      assert.equal(session.status, "ready", JSON.stringify(session));
      return created.session_id;
    }
    await new Promise((done) => setTimeout(done, 100));
  }
}

/** The Preview tab's frame once it has loaded its address, and that address. */
async function previewFrame(page) {
  const frameElement = page.getByTestId("preview-frame");
  await page.waitForFunction(() => document.querySelector("[data-testid=preview-frame]").getAttribute("src"), null, { timeout: LONG });
  const src = await frameElement.getAttribute("src");
  const frame = await (await frameElement.elementHandle()).contentFrame();
  // Loaded, so that no navigation of the test's races the frame's first.
  await frame.waitForURL(src, { timeout: LONG });
  await frame.waitForLoadState("load", { timeout: LONG });
  return { src, frame };
}

test("a page in one session's preview cannot load another user's session's files, with its grant or without one", async () => {
  // Bob's session holds a script that would say it ran.
  bobToken ??= (stack.admin("user", "add", "bob"), stack.admin("token", "create", "bob"));
  const bobs = await apiSession(bobToken, repoWith("bobs", { "secret.js": "window.stolen = 'bob';" }));
  // Alice's page tries bob's script, by her own grant and by none, beside
  // her own script; it is told bob's session id in its fragment.
  const attack = `<!doctype html><title>attack</title><script>
const [, , grant] = location.pathname.split("/");
const other = location.hash.slice(1);
const results = {};
let pending = 3;
function load(name, src) {
  const script = document.createElement("script");
  script.src = src;
  script.onload = () => done(name, "loaded");
  script.onerror = () => done(name, "refused");
  document.head.append(script);
}
function done(name, how) {
  results[name] = how;
  if (--pending === 0) document.body.dataset.results = JSON.stringify({ ...results, stolen: window.stolen ?? null, own: window.own ?? null });
}
load("ownScript", "own.js");
load("withHerGrant", "/" + other + "/" + grant + "/secret.js");
load("withoutGrant", "/" + other + "/secret.js");
</script>`;
  const page = await newPage();
  const alices = await createSession(page, repoWith("alices", { "site/attack.html": attack, "site/own.js": "window.own = 'alice';" }));
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  await page.getByTestId("tab-preview").click();
  const { src, frame } = await previewFrame(page);
  assert.match(src, new RegExp(`^${stack.previewUrl}/${alices}/rrp_[A-Za-z0-9_-]{43}/$`));

  await frame.goto(`${src}site/attack.html#${bobs}`);
  await frame.waitForFunction(() => document.body?.dataset.results, null, { timeout: LONG });

  assert.deepEqual(JSON.parse(await frame.evaluate(() => document.body.dataset.results)), {
    ownScript: "loaded", own: "alice",
    withHerGrant: "refused", withoutGrant: "refused", stolen: null,
  });
  // As the proxy answered them: bob's session does not exist for her
  // grant, and an address without a grant is refused.
  const grant = src.split("/")[4];
  assert.equal((await fetch(`${stack.previewUrl}/${bobs}/${grant}/secret.js`)).status, 404);
  assert.equal((await fetch(`${stack.previewUrl}/${bobs}/secret.js`)).status, 401);
  assert.deepEqual(page.external, [], "the page makes no external requests");
  await page.close();
});

test("a preview whose grant has expired gets a new one and shows the same page again", async () => {
  const page = await newPage();
  const session = await createSession(page, repoWith("expiry", {
    "app/index.html": `<!doctype html><title>app</title><body><script src="app.js"></script></body>`,
    "app/app.js": "document.body.dataset.loaded = String(Date.now());",
  }));
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  await page.getByTestId("tab-preview").click();
  const first = await previewFrame(page);
  await first.frame.goto(`${first.src}app/`);
  await first.frame.waitForFunction(() => document.body?.dataset.loaded, null, { timeout: LONG });

  // Every grant ends now (the clock is not waited on).
  execFileSync("psql", [stack.databaseUrl, "-qc", "UPDATE preview_grants SET expires_at = now() - interval '1 second'"]);
  // The page's next load is refused; the dashboard gets a new grant and
  // loads the page it was at.
  await first.frame.evaluate(() => { setTimeout(() => location.reload(), 0); });
  await page.waitForFunction((old) => {
    const src = document.querySelector("[data-testid=preview-frame]").getAttribute("src");
    return src && src !== old;
  }, first.src, { timeout: LONG });
  const src = await page.getByTestId("preview-frame").getAttribute("src");
  assert.match(src, new RegExp(`^${stack.previewUrl}/${session}/rrp_[A-Za-z0-9_-]{43}/app/$`));
  assert.notEqual(src.split("/")[4], first.src.split("/")[4], "a new grant");
  const frame = await (await page.getByTestId("preview-frame").elementHandle()).contentFrame();
  await frame.waitForFunction(() => document.body?.dataset.loaded, null, { timeout: LONG });
  assert.equal(await page.getByTestId("preview-path").innerText(), "/app/");
  await page.close();
});

// --- the phone layout --------------------------------------------------------

const PHONE = { width: 390, height: 844 };

/** The box of a locator, or null when it is not rendered. */
const box = (locator) => locator.boundingBox();

test("on a phone, the list and the session are two views, and the last message and the prompt box fit the screen", async () => {
  const page = await newPage(PHONE);
  await page.goto(stack.url);
  // The page shows the list once it learned who is signed in (/api/auth/me).
  await page.getByTestId("create-form").waitFor();
  await page.screenshot({ path: join(artifacts, "phone-list.png") });
  const session = await createSession(page, stack.makeRepo("phone"));
  assert.equal(await page.getByTestId("create-form").isVisible(), false, "the list is a view of its own");
  assert.equal(await page.getByTestId("back").isVisible(), true);
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  for (const n of [1, 2, 3, 4]) {
    await sendPrompt(page, `message number ${n} of a conversation that is longer than a phone's screen`);
    await page.waitForSelector(`[data-testid=run]:nth-child(${n})[data-status=completed]`, { timeout: LONG });
  }

  // Open the session afresh, as from a link.
  await page.goto(`${stack.url}/#/s/${session}`);
  await page.reload();
  const last = page.locator("[data-testid=run]:nth-child(4) [data-kind=agent_message]");
  await last.waitFor({ timeout: LONG });
  await page.waitForFunction(() => {
    const runs = document.querySelector("[data-testid=runs]");
    return runs.scrollTop + runs.clientHeight >= runs.scrollHeight - 2;
  }, null, { timeout: LONG });
  const prompt = await box(page.getByTestId("prompt-input"));
  const send = await box(page.getByTestId("send-prompt"));
  const message = await box(last);
  assert.equal(await page.evaluate(() => document.scrollingElement.scrollHeight <= innerHeight), true, "the page itself does not scroll");
  assert.ok(message.y >= 0 && message.y + message.height <= prompt.y, `the last message ${JSON.stringify(message)} is above the prompt box ${JSON.stringify(prompt)}`);
  assert.ok(prompt.y + prompt.height <= PHONE.height && send.y + send.height <= PHONE.height, "the prompt box is on the screen");
  assert.equal(await last.innerText(), "You said: message number 4 of a conversation that is longer than a phone's screen");
  await page.screenshot({ path: join(artifacts, "phone-session.png") });

  // Send from there: the new answer comes into view above the prompt box.
  await page.getByTestId("prompt-input").fill("one more from the phone");
  await page.getByTestId("send-prompt").click();
  const answer = page.locator("[data-testid=run]:nth-child(5) [data-kind=agent_message]");
  await answer.waitFor({ timeout: LONG });
  await page.waitForFunction(() => {
    const runs = document.querySelector("[data-testid=runs]");
    return runs.scrollTop + runs.clientHeight >= runs.scrollHeight - 2;
  }, null, { timeout: LONG });
  const answerBox = await box(answer);
  assert.ok(answerBox.y + answerBox.height <= (await box(page.getByTestId("prompt-input"))).y, "the answer is in view");

  await page.getByTestId("back").click();
  await page.waitForURL((url) => !url.hash.includes("/s/"));
  // The page switches views on the hash change, after the URL changed.
  await page.getByTestId("create-form").waitFor();
  assert.equal(await page.locator(`[data-session-id='${session}']`).isVisible(), true);
  await page.close();
});

// --- bugs of the first hour (issue 13) ---------------------------------------

test("bug 6: a session is named owner/repo or by its repository, with the ref, and the full URL in a tooltip", async () => {
  const page = await newPage();
  const repo = stack.makeRepo("named-repo");
  await createSession(page, repo, "main");
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  const item = page.locator("[data-testid=session-item].session-link", { hasText: "named-repo" }).first();
  await item.waitFor({ timeout: LONG });
  assert.equal(await item.locator(".repo").innerText(), "named-repo");
  assert.equal(await item.locator(".repo").getAttribute("title"), `file://${repo}`);
  assert.equal(await item.locator(".ref").innerText(), "@main");
  assert.equal(await page.getByTestId("session-repo").innerText(), "named-repo");
  assert.equal(await page.getByTestId("session-repo").getAttribute("title"), `file://${repo}`);

  // A forge-style remote (whether its clone works does not matter here).
  const forge = "http://127.0.0.1:9/owner/todo-cli.git";
  await page.fill("[data-testid=new-session-url]", forge);
  await page.click("[data-testid=create-session]");
  await page.getByTestId("session-repo").filter({ hasText: "owner/todo-cli" }).waitFor({ timeout: LONG });
  assert.equal(await page.getByTestId("session-repo").getAttribute("title"), forge);
  const forgeItem = page.locator(`[data-testid=session-item] .repo[title='${forge}']`);
  await forgeItem.waitFor({ timeout: LONG });
  assert.equal(await forgeItem.innerText(), "owner/todo-cli");

  const names = await page.evaluate(async () => {
    const { repoName } = await import("/names.js");
    return ["https://github.com/openai/codex.git", "git@github.com:openai/codex.git", "http://127.0.0.1:9180/todo-cli.git",
      "ssh://git@host:2222/team/app", "file:///srv/repos/tool.git", "/srv/repos/tool"].map(repoName);
  });
  assert.deepEqual(names, ["openai/codex", "openai/codex", "todo-cli", "team/app", "tool", "tool"]);
  await page.close();
});

test("bug 7: a whitespace-only URL says what is wrong", async () => {
  const page = await newPage();
  await page.goto(stack.url);
  await page.fill("[data-testid=new-session-url]", "   ");
  await page.click("[data-testid=create-session]");
  const error = page.getByTestId("create-error");
  await error.filter({ hasText: "Enter the URL of a git repository." }).waitFor({ timeout: LONG });
  assert.equal(await error.isVisible(), true);
  assert.equal(page.url().includes("#/s/"), false, "no session was created");
  await page.close();
});

test("bug 8: a run whose end the page learns late shows the duration the server recorded, and stops counting", async () => {
  const page = await newPage();
  const session = await createSession(page, stack.makeRepo("timer"));
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  const run = await sendPrompt(page, "work slowly");
  await run.locator("[data-kind=reasoning]").first().waitFor({ timeout: LONG });
  const runId = await run.getAttribute("data-run-id");

  // The page loses the API mid-run (as in a restart); the run ends meanwhile.
  await stack.killProxy();
  // The run's event stream ends with its terminal event.
  await (await stack.fetch(`${stack.backendUrl}/api/runs/${runId}/events`)).text();
  const recorded = await (await stack.fetch(`${stack.backendUrl}/api/runs/${runId}`)).json();
  assert.equal(recorded.status, "completed");
  const expected = formatElapsed(Date.parse(recorded.finished_at) - Date.parse(recorded.started_at));
  // The page, cut off, counts on past the end by two seconds or more.
  const past = Math.floor((Date.parse(recorded.finished_at) - Date.parse(recorded.started_at)) / 1000) + 2;
  await page.waitForFunction(([past]) => {
    const text = document.querySelector("[data-testid=run] [data-testid=run-elapsed]").textContent;
    return /^\d+s$/.test(text) && Number.parseInt(text, 10) >= past;
  }, [past], { timeout: LONG });
  await stack.startProxy();

  await page.waitForSelector("[data-testid=run][data-status=completed]", { timeout: LONG });
  const elapsed = run.getByTestId("run-elapsed");
  await page.waitForFunction((text) => document.querySelector("[data-testid=run] [data-testid=run-elapsed]").textContent === text, expected, { timeout: LONG });
  // Two more polls of the run list later, it still says the same.
  for (let i = 0; i < 2; i++) await page.waitForResponse((r) => r.url().endsWith(`/api/sessions/${session}/runs`), { timeout: LONG });
  assert.equal(await elapsed.innerText(), expected);
  await page.close();
});

test("bug 9: the file viewer takes the height of the window and long lines wrap, in the file and the diff", async () => {
  const page = await newPage();
  const repo = stack.makeRepo("long-lines");
  writeFileSync(join(repo, "wide.txt"), `${"y".repeat(4000)}\n${Array.from({ length: 300 }, (_, i) => `line ${i}`).join("\n")}\n`);
  git(repo, "add", "wide.txt");
  git(repo, "commit", "-q", "-m", "a wide file");
  await createSession(page, repo);
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  await sendPrompt(page, "write a long line");
  await page.waitForSelector("[data-testid=run][data-status=completed]", { timeout: LONG });

  await page.click("[data-testid=tab-files]");
  await page.click("[data-testid=file-entry][data-path='wide.txt'] button");
  const content = page.getByTestId("file-content");
  await content.waitFor({ timeout: LONG });
  const viewer = await box(content);
  const height = page.viewportSize().height;
  assert.ok(viewer.height > 320, `taller than the old fixed 320 px: ${viewer.height}`);
  assert.ok(viewer.y + viewer.height <= height, "it ends on the screen");
  assert.ok(height - (viewer.y + viewer.height) <= 32, `it reaches down to the window's edge: ends at ${viewer.y + viewer.height} of ${height}`);
  const wraps = (selector) => page.evaluate((s) => {
    const node = document.querySelector(s);
    return node.scrollWidth <= node.clientWidth;
  }, selector);
  assert.equal(await wraps("[data-testid=file-content]"), true, "the long line wraps instead of being cut");
  await page.screenshot({ path: join(artifacts, "files-long-lines.png") });

  await page.click("[data-testid=tab-diff]");
  await page.locator("[data-testid=diff] .line.add", { hasText: "xxxx" }).waitFor({ timeout: LONG });
  assert.equal(await wraps("[data-testid=diff]"), true, "the diff's long line wraps instead of being cut");
  await page.close();
});

test("a browser signs in with the link, streams with its cookie, and signing out stops the stream", async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  // Signed out, the page asks for a token; a wrong one is refused.
  await page.goto(stack.url);
  await page.getByTestId("signin").waitFor();
  await page.fill("[data-testid=signin-token]", "rr_wrong");
  await page.click("[data-testid=signin-submit]");
  await page.waitForFunction(() => document.querySelector("[data-testid=signin-error]").textContent.includes("not valid"));

  // The link says whom it signs in and asks; its code leaves the address
  // bar and history at once, and works once.
  const link = stack.signinLink();
  const code = link.split("#code=")[1];
  assert.match(code, /^rrs_[A-Za-z0-9_-]{43}$/);
  await page.goto(link);
  await page.getByTestId("signin-confirm").waitFor();
  assert.equal(await page.getByTestId("signin-confirm-user").innerText(), "alice");
  assert.ok(!page.url().includes(code), page.url());
  await page.getByTestId("signin-confirm-yes").click();
  await page.getByTestId("signed-in-user").waitFor();
  assert.equal(await page.getByTestId("signed-in-user").innerText(), "alice");
  assert.ok(!page.url().includes(code), page.url());
  const [cookie] = (await page.context().cookies()).filter((c) => c.name === "rr_session");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.equal(await page.evaluate(() => document.cookie), "", "no script reads the cookie");

  // A run streams with the cookie (EventSource sends no header).
  await page.fill("[data-testid=new-session-url]", `file://${stack.makeRepo("cookie-flow")}`);
  await page.click("[data-testid=create-session]");
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  await sendPrompt(page, "sleep");
  await page.locator("[data-testid=run] [data-testid=item]").first().waitFor({ timeout: LONG });
  const session = page.url().split("#/s/")[1];
  const runs = await (await stack.fetch(`${stack.url}/api/sessions/${session}/runs`)).json();
  const runId = runs.runs[0].run_id;

  // A second tab of the same browser holds the run's stream open.
  const tab = await page.context().newPage();
  await tab.goto(`${stack.url}/mode.json`);
  await tab.evaluate((url) => {
    window.received = [];
    window.stopped = false;
    const source = new EventSource(url);
    for (const type of ["item.started", "item.completed", "run.completed", "run.cancelled"]) {
      source.addEventListener(type, () => window.received.push(type));
    }
    source.addEventListener("error", () => {
      // The server ended the stream; the reconnection with the old cookie
      // is refused (401), which closes the source.
      if (source.readyState === EventSource.CLOSED) window.stopped = true;
    });
  }, `${stack.url}/api/runs/${runId}/events`);
  await tab.waitForFunction(() => window.received.includes("item.started"), null, { timeout: LONG });

  await page.click("[data-testid=sign-out]");
  await page.getByTestId("signin").waitFor();
  await tab.waitForFunction(() => window.stopped, null, { timeout: LONG });
  const received = await tab.evaluate(() => window.received);
  assert.ok(!received.some((t) => t.startsWith("run.")), `the stream stopped before the run ended: ${received}`);
  const status = (await (await stack.fetch(`${stack.url}/api/runs/${runId}`)).json()).status;
  assert.equal(status, "running", "signing out stops the stream, not the run");
  const refused = await fetch(`${stack.url}/api/sessions`, { headers: { cookie: `rr_session=${cookie.value}` } });
  assert.equal(refused.status, 401);
  await stack.fetch(`${stack.url}/api/runs/${runId}/cancel`, { method: "POST" });
  await context.close();
});

test("a sign-in link from someone else asks first, and a second sign-in cookie signs no one in", async () => {
  // The second attack run: any page could sign a victim's browser in as the
  // attacker with a `#token=` link, and a page on another port of the host
  // could add an `rr_session` cookie of its own that the API then took.
  try {
    stack.admin("user", "add", "mallory");
  } catch {
    // Made by an earlier run of this test on the same stack.
  }
  const malloryToken = stack.admin("token", "create", "mallory");
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  await stack.signIn(page);
  assert.equal(await page.getByTestId("signed-in-user").innerText(), "alice");

  // An old-style link with mallory's token signs no one in.
  await page.goto(`${stack.url}/#token=${malloryToken}`);
  await page.getByTestId("signed-in-user").waitFor();
  assert.equal(await page.getByTestId("signed-in-user").innerText(), "alice");
  assert.ok(!page.url().includes(malloryToken), page.url());

  // Mallory's sign-in link names mallory, says who is signed in now, and
  // does nothing unless confirmed: Cancel keeps alice.
  await page.goto(stack.signinLink("mallory"));
  await page.getByTestId("signin-confirm").waitFor();
  assert.equal(await page.getByTestId("signin-confirm-user").innerText(), "mallory");
  assert.match(await page.getByTestId("signin-confirm-current").innerText(), /signed in as alice/);
  await page.getByTestId("signin-confirm-no").click();
  await page.getByTestId("signed-in-user").waitFor();
  assert.equal(await page.getByTestId("signed-in-user").innerText(), "alice");

  // A used link is dead.
  const once = stack.signinLink("alice");
  const code = once.split("#code=")[1];
  const first = await fetch(`${stack.url}/api/auth/session`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ code }),
  });
  assert.equal(first.status, 200);
  const again = await fetch(`${stack.url}/api/auth/session`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ code }),
  });
  assert.equal(again.status, 401);

  // Cookie tossing: mallory's own cookie, set for a longer path (so the
  // browser sends it first) by a page on another port of this host.
  const signedIn = await fetch(`${stack.url}/api/auth/session`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: malloryToken }),
  });
  const malloryCookie = signedIn.headers.get("set-cookie").match(/rr_session=([^;]+)/)[1];
  await context.addCookies([{ name: "rr_session", value: malloryCookie, domain: "127.0.0.1", path: "/api" }]);
  const answer = await page.evaluate(async () => {
    const response = await fetch("/api/sessions");
    return { status: response.status, body: await response.json() };
  });
  assert.equal(answer.status, 401);
  assert.match(answer.body.message, /more than one sign-in cookie/);
  await page.reload();
  await page.getByTestId("signin").waitFor();
  assert.match(await page.getByTestId("signin-error").innerText(), /more than one sign-in cookie/);
  await context.close();
});

test("a file's name shows the characters it hides: in the tree, the viewer and the preview's listing", async () => {
  // The agent names files: a right-to-left override turns `fdp.sh` into
  // what reads as `hs.pdf` wherever the name is shown as it is.
  const name = "invoice\u202efdp.sh";
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  await stack.signIn(page);
  const session = await createSession(page, repoWith("spoof-names", { [`docs/${name}`]: "echo hi\n" }));
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  await page.click("[data-testid=tab-files]");
  const entry = page.locator(`[data-testid=file-entry][data-path='docs/${name}'] button`);
  assert.equal(await entry.textContent(), "invoice⟨U+202E⟩fdp.sh");
  await entry.click();
  await page.getByTestId("file-title").waitFor();
  assert.match(await page.getByTestId("file-title").textContent(), /^docs\/invoice⟨U\+202E⟩fdp\.sh · /);
  // The preview's own folder listing, with a grant of alice's.
  const grant = await (await stack.fetch(`${stack.url}/api/sessions/${session}/preview`, { method: "POST" })).json();
  const listing = await (await fetch(`${stack.previewUrl}${grant.url_path}docs/`)).text();
  assert.ok(listing.includes("invoice⟨U+202E⟩fdp.sh"), listing);
  assert.ok(!listing.includes("\u202e"), "the override itself is not in the page's text");
  await context.close();
});
