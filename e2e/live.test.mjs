// The dashboard with the runner's app-server driver: a message and its
// reasoning grow word by word, a command's output streams into its terminal block, an approval is
// answered from its card (on a phone too), and the new-session form offers
// the models and settings. Real Chromium, real CLI, the scripted model
// streaming its text (e2e/live-script.json).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startStack } from "./stack.mjs";

/** A hang guard only: every wait below ends on an event in the page. */
const LONG = 90_000;
let stack;
let browser;

before(async () => {
  stack = await startStack({ runnerEnv: { RUNNER_DRIVER: "app-server" }, script: "e2e/live-script.json" });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

async function newSession(page, name, approvals) {
  await stack.signIn(page);
  await page.fill("[data-testid=new-session-url]", `file://${stack.makeRepo(name)}`);
  if (approvals) {
    await page.click("[data-testid=session-settings] summary");
    // The models come from the runner's CLI.
    await page.locator("[data-testid=new-session-model] option[value='gpt-5.5']").waitFor({ state: "attached", timeout: LONG });
    await page.selectOption("[data-testid=new-session-model]", "gpt-5.5");
    await page.selectOption("[data-testid=new-session-approval]", "untrusted");
  }
  await page.click("[data-testid=create-session]");
  await page.waitForURL(/#\/s\//);
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  return page.url().split("#/s/")[1];
}

async function send(page, text) {
  await page.fill("[data-testid=prompt-input]", text);
  await page.press("[data-testid=prompt-input]", "Enter");
  await page.locator("[data-testid=run]").last().waitFor({ timeout: LONG });
  return page.locator("[data-testid=run]").last();
}

test("a message grows word by word and a command's output streams in, colours stripped", async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await newSession(page, "live");
  // Every length the streaming text and the terminal take, as the page shows them.
  await page.evaluate(() => {
    window.__texts = [];
    window.__outputs = [];
    window.__thoughts = [];
    new MutationObserver(() => {
      const live = document.querySelector("[data-testid=live-text]");
      if (live) window.__texts.push(live.textContent);
      const thought = document.querySelector("[data-kind=reasoning] .item-body");
      if (thought) window.__thoughts.push(thought.textContent);
      const output = document.querySelector("[data-testid=live-output]");
      if (output) window.__outputs.push(output.textContent);
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
  });
  const run = await send(page, "count to eight");
  // While the command runs, the send button queues and Steer is offered.
  await page.locator("[data-testid=steer-prompt]").waitFor({ state: "attached", timeout: LONG });
  const running = run.locator("[data-testid=item][data-kind=command_execution]");
  await running.waitFor({ timeout: LONG });
  assert.doesNotMatch(await running.textContent(), /null/, "a command without output yet shows none");
  await run.locator("[data-testid=run-status].completed").waitFor({ timeout: LONG });

  const outputs = await page.evaluate(() => window.__outputs);
  assert.ok(outputs.length >= 3, `the output grew in steps: ${JSON.stringify(outputs)}`);
  assert.ok(outputs.every((o) => !o.includes("\u001b")), "no escape codes on the page");
  assert.ok(outputs.some((o) => o.includes("line 3") && !o.includes("line 8")), "seen before the command ended");
  const texts = await page.evaluate(() => window.__texts);
  const answer = "I counted to eight, one line at a time, and every line came out green in the terminal.";
  assert.ok(texts.length >= 5, `the message grew in steps: ${texts.length}`);
  assert.ok(texts.some((t) => t.length > 0 && t.length < answer.length && answer.startsWith(t)), "a part came before the whole");
  const thought = "Counting out loud, a line at a time, so that you can watch the terminal fill.";
  const thoughts = await page.evaluate(() => window.__thoughts);
  assert.ok(thoughts.some((t) => t.length > 0 && t.length < thought.length && thought.startsWith(t)), "the reasoning grew too");
  assert.ok(thoughts.includes(thought));
  const message = run.locator("[data-testid=item][data-kind=agent_message]");
  assert.equal((await message.textContent()).trim(), answer);
  const command = run.locator("[data-testid=item][data-kind=command_execution] pre.output");
  assert.match(await command.textContent(), /line 1\nline 2[\s\S]*line 8/);
  assert.equal(await page.isHidden("[data-testid=steer-prompt]"), true, "no steering once the run ended");
  await page.close();
});

test("an approval card on a phone: the command, its folder, and the answer", async () => {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const session = await newSession(page, "approvals", true);
  const run = await send(page, "touch a file");
  const card = run.locator("[data-testid=approval]");
  await card.waitFor({ timeout: LONG });
  assert.match(await card.locator("[data-testid=approval-command]").textContent(), /touch approved\.txt/);
  assert.equal(await card.locator("[data-testid=approval-cwd]").textContent(), "in the workspace");
  for (const decision of ["approve", "approve_for_session", "deny"]) {
    const box = await card.locator(`[data-testid=approval-${decision}]`).boundingBox();
    assert.ok(box.height >= 44 && box.x >= 0 && box.x + box.width <= 390, `${decision} fits a thumb: ${JSON.stringify(box)}`);
  }
  assert.equal(existsSync(join(stack.dir, "workspaces", session, "repo", "approved.txt")), false);

  await card.locator("[data-testid=approval-approve]").tap();
  await card.locator("[data-testid=approval-status]", { hasText: "Approve (alice)" }).waitFor({ timeout: LONG });
  await run.locator("[data-testid=run-status].completed").waitFor({ timeout: LONG });
  assert.equal(await card.locator("[data-testid=approval-deny]").isDisabled(), true);
  assert.equal(existsSync(join(stack.dir, "workspaces", session, "repo", "approved.txt")), true);
  // A reload replays the card, already answered.
  await page.reload();
  const again = page.locator("[data-testid=approval]");
  await again.locator("[data-testid=approval-status]", { hasText: "Approve (alice)" }).waitFor({ timeout: LONG });
  await page.close();
});
