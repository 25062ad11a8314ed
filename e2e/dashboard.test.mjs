// The dashboard in headless Chromium against the whole stack (real binaries,
// real Codex CLI with the scripted model, real Postgres). Screenshots of the
// main views go to test-artifacts/.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";
import { startStack } from "./stack.mjs";

const artifacts = resolve(import.meta.dirname, "../test-artifacts");
mkdirSync(artifacts, { recursive: true });
/** A hang guard only: every wait below ends on an event in the page. */
const LONG = 90_000;

let stack;
let browser;

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

async function newPage(viewport = { width: 1280, height: 900 }) {
  const page = await browser.newPage({ viewport });
  const external = [];
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (!["127.0.0.1", "localhost"].includes(url.hostname) && url.protocol !== "data:") external.push(request.url());
  });
  page.on("pageerror", (error) => console.error("page error:", error.message));
  page.external = external;
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
  const runs = await (await fetch(`${stack.url}/api/sessions/${session}/runs`)).json();
  const threads = [];
  for (const run of runs.runs) {
    const events = await (await fetch(`${stack.url}/api/runs/${run.run_id}/events`)).text();
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
