// Getting the agent's work out, in headless Chromium against the whole
// stack: a run changes a file, then the dashboard downloads its patch,
// commits it, pushes the branch to a git server over smart HTTP and opens a
// pull request on a stand-in of GitHub's REST API. Both servers are small
// Node servers on 127.0.0.1 in this file: `git http-backend` behind one
// (pushes need basic auth with TOKEN), and `POST /repos/{owner}/{repo}/pulls`
// on the other (it needs `Authorization: Bearer TOKEN`). The backend learns
// the forge from FORGES. Screenshots go to test-artifacts/.

import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";
import { git, startStack } from "./stack.mjs";

const artifacts = resolve(import.meta.dirname, "../test-artifacts");
mkdirSync(artifacts, { recursive: true });
/** A hang guard only: every wait below ends on an event in the page. */
const LONG = 90_000;
const PHONE = { width: 390, height: 844 };
/** The one credential both servers take: to push, and to open a pull request. */
const TOKEN = "ghp_e2eShipToken0123456789";

let stack;
let browser;
let gitServer;
let forge;
/** What the pages' consoles said about a Content-Security-Policy. */
const violations = [];

/** Listens on 127.0.0.1, port 0; resolves with the server and its `host:port`. */
function listen(server) {
  return new Promise((done, fail) => {
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => done(`127.0.0.1:${server.address().port}`));
  });
}

/** Whether a request carries basic auth whose password is TOKEN. */
function basicAuthorized(request) {
  const header = request.headers.authorization || "";
  if (!header.startsWith("Basic ")) return false;
  return Buffer.from(header.slice(6), "base64").toString().endsWith(`:${TOKEN}`);
}

/**
 * A smart-HTTP git server for the bare repositories under `root`:
 * `git http-backend` (CGI) per request, its output streamed back. Fetches
 * are anonymous; a push (receive-pack) needs basic auth with TOKEN.
 */
async function startGitServer(root) {
  const server = createServer((request, response) => {
    const url = new URL(request.url, "http://git.invalid");
    const pushing = url.searchParams.get("service") === "git-receive-pack" || url.pathname.endsWith("/git-receive-pack");
    if (pushing && !basicAuthorized(request)) {
      request.resume();
      response.writeHead(401, { "www-authenticate": 'Basic realm="git"', "content-type": "text/plain" });
      response.end("authentication required");
      return;
    }
    const child = spawn("git", ["http-backend"], {
      env: {
        PATH: process.env.PATH,
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: "1",
        PATH_INFO: url.pathname,
        REQUEST_METHOD: request.method,
        QUERY_STRING: url.search.slice(1),
        CONTENT_TYPE: request.headers["content-type"] || "",
        // http-backend inflates a gzip request body itself when told.
        HTTP_CONTENT_ENCODING: request.headers["content-encoding"] || "",
        GIT_PROTOCOL: request.headers["git-protocol"] || "",
        REMOTE_ADDR: "127.0.0.1",
        // Enables receive-pack; who may push was checked above.
        REMOTE_USER: "alice",
      },
      stdio: ["pipe", "pipe", "pipe"],
    });
    // http-backend may refuse a request before it read the whole body: the
    // pipe then breaks, which its exit status (below) reports.
    child.stdin.on("error", () => {});
    request.pipe(child.stdin);
    let stderr = "";
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
    });
    let head = Buffer.alloc(0);
    let started = false;
    child.stdout.on("data", (chunk) => {
      if (started) {
        response.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const text = head.toString("latin1");
      const end = text.search(/\r?\n\r?\n/);
      if (end < 0) return;
      started = true;
      let status = 200;
      const headers = {};
      for (const line of text.slice(0, end).split(/\r?\n/)) {
        const colon = line.indexOf(":");
        const name = line.slice(0, colon).trim();
        const value = line.slice(colon + 1).trim();
        if (name.toLowerCase() === "status") status = Number.parseInt(value, 10);
        else headers[name] = value;
      }
      response.writeHead(status, headers);
      response.write(head.subarray(end + text.slice(end).match(/^\r?\n\r?\n/)[0].length));
    });
    child.on("close", (code) => {
      if (!started) {
        response.writeHead(502, { "content-type": "text/plain" });
        response.end(`git http-backend failed (${code}): ${stderr}`);
        return;
      }
      response.end();
    });
  });
  const host = await listen(server);
  return { server, host, base: `http://${host}` };
}

/**
 * GitHub's REST API as far as opening a pull request goes:
 * `POST /repos/{owner}/{repo}/pulls` with `Authorization: Bearer TOKEN` (or
 * GitHub's older `token TOKEN`), `{title, head, base, body?, draft?}`;
 * `201 {number, html_url, …}`. Every request is recorded.
 */
async function startForge() {
  const requests = [];
  let base;
  const server = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => {
      body += chunk;
    });
    request.on("end", () => {
      requests.push({ method: request.method, path: request.url, headers: request.headers, body });
      const reply = (status, value) => {
        response.writeHead(status, { "content-type": "application/json; charset=utf-8" });
        response.end(JSON.stringify(value));
      };
      const route = request.url.match(/^\/repos\/([^/?]+)\/([^/?]+)\/pulls$/);
      if (request.method !== "POST" || !route) return reply(404, { message: "Not Found" });
      const [scheme, token] = (request.headers.authorization || "").split(" ");
      if (!/^(bearer|token)$/i.test(scheme || "") || token !== TOKEN) return reply(401, { message: "Bad credentials" });
      let pull;
      try {
        pull = JSON.parse(body);
      } catch {
        return reply(400, { message: "Problems parsing JSON" });
      }
      const missing = ["title", "head", "base"].filter((field) => typeof pull[field] !== "string" || !pull[field]);
      if (missing.length) return reply(422, { message: "Validation Failed", errors: missing.map((field) => ({ field, code: "missing_field" })) });
      const number = requests.filter((r) => r.created).length + 1;
      requests.at(-1).created = true;
      // The repository `hostile` answers with an address that is a script.
      const web = route[2] === "hostile" ? "javascript:window.__pwned=2" : `${base}/${route[1]}/${route[2]}/pull/${number}`;
      reply(201, {
        number,
        html_url: web,
        head: { ref: pull.head },
        base: { ref: pull.base },
        draft: !!pull.draft,
      });
    });
  });
  const host = await listen(server);
  base = `http://${host}`;
  return { server, host, base, requests };
}

/** A bare repository `owner/name.git` on the git server, `main` with one commit. */
function makeRemote(name) {
  const work = mkdtempSync(join(stack.dir, "work-"));
  git(work, "init", "-q", "-b", "main");
  writeFileSync(join(work, "README.md"), `# ${name}\n`);
  git(work, "add", ".");
  git(work, "commit", "-q", "-m", "initial");
  const bare = join(gitRoot, "alice", `${name}.git`);
  mkdirSync(join(gitRoot, "alice"), { recursive: true });
  git(stack.dir, "clone", "-q", "--bare", work, bare);
  return { url: `${gitServer.base}/alice/${name}.git`, bare, main: git(work, "rev-parse", "HEAD") };
}

let gitRoot;

before(async () => {
  gitRoot = mkdtempSync(join(tmpdir(), "repo-runner-e2e-git-"));
  gitServer = await startGitServer(gitRoot);
  forge = await startForge();
  stack = await startStack({
    backendEnv: {
      // The git server's host is GitHub-like, its API at the stand-in.
      FORGES: `${gitServer.host}=github:${forge.base}`,
      // Seals the tokens sessions keep; a fresh one per run.
      BACKEND_SECRET_KEY: randomBytes(32).toString("hex"),
    },
  });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  await stack?.stop();
  gitServer?.server.close();
  forge?.server.close();
  if (gitRoot) rmSync(gitRoot, { recursive: true, force: true });
});

afterEach(() => {
  assert.deepEqual(violations.splice(0), [], "the dashboard runs within its Content-Security-Policy");
});

async function newPage(viewport) {
  const page = await browser.newPage({ viewport });
  page.on("pageerror", (error) => console.error("page error:", error.message));
  page.on("console", (message) => {
    if (/Content[- ]Security[- ]Policy/i.test(message.text())) violations.push(message.text());
  });
  await stack.signIn(page);
  return page;
}

/** Creates a session from the new-session form; `token` typed into it, kept when `keep`. */
async function createSession(page, url, { token, keep } = {}) {
  await page.goto(stack.url);
  await page.fill("[data-testid=new-session-url]", url);
  if (token) {
    assert.equal(await page.isDisabled("[data-testid=new-session-keep-token]"), true, "no token, nothing to keep");
    await page.fill("[data-testid=new-session-token]", token);
    if (keep) await page.check("[data-testid=new-session-keep-token]");
  }
  await page.click("[data-testid=create-session]");
  await page.waitForURL(/#\/s\//);
  await page.waitForSelector("[data-testid=session-status].ready", { timeout: LONG });
  return page.url().split("#/s/")[1];
}

/** Sends a prompt; returns its run's card once it is on the page. */
async function runPrompt(page, text) {
  const before = await page.locator("[data-testid=run]").count();
  await page.fill("[data-testid=prompt-input]", text);
  await page.press("[data-testid=prompt-input]", "Enter");
  const run = page.locator("[data-testid=run]").nth(before);
  await run.waitFor({ timeout: LONG });
  return run;
}

/** Clicks `locator` and returns the text of the download it starts, named `name`. */
async function downloadText(page, locator, name) {
  const [download] = await Promise.all([page.waitForEvent("download", { timeout: LONG }), locator.click()]);
  assert.equal(download.suggestedFilename(), name);
  return readFileSync(await download.path(), "utf8");
}

/** The header's git line once it reads `pattern`. */
async function gitLine(page, pattern) {
  const line = page.getByTestId("session-git");
  await line.filter({ hasText: pattern }).waitFor({ timeout: LONG });
  return (await line.textContent()).replace(/\s+/g, " ").trim();
}

/** The page does not scroll sideways. */
const noSideScroll = (page) => page.evaluate(() => document.scrollingElement.scrollWidth <= innerWidth);

test("a run's work leaves as a patch, a commit, a push and a pull request, with the token the session kept", async () => {
  const page = await newPage({ width: 1280, height: 900 });
  const remote = makeRemote("widgets");
  const session = await createSession(page, remote.url, { token: TOKEN, keep: true });
  const branch = `repo-runner/${session.slice(0, 8)}`;
  assert.equal(await gitLine(page, "0 changed files"), "main · 0 commits ahead · 0 changed files");

  const made = await runPrompt(page, "please create a file");
  await page.waitForSelector("[data-testid=run][data-status=completed]", { timeout: LONG });
  assert.equal(await gitLine(page, "1 changed file"), "main · 0 commits ahead · 1 changed file");

  // The run's own patch, from its card.
  const runId = await made.getAttribute("data-run-id");
  const runPatch = await downloadText(page, made.getByTestId("run-patch"), `run-${runId.slice(0, 8)}.patch`);
  assert.match(runPatch, /^diff --git a\/hello\.txt b\/hello\.txt$/m);

  // While a run goes, nothing can be committed or pushed.
  const sleeping = await runPrompt(page, "please sleep");
  await sleeping.locator("[data-kind=command_execution]").waitFor({ timeout: LONG });
  await page.click("[data-testid=tab-diff]");
  assert.equal(await page.isDisabled("[data-testid=ship-commit]"), true);
  assert.equal(await page.isDisabled("[data-testid=ship-push]"), true);
  assert.equal(await page.getByTestId("ship-busy").isVisible(), true);
  await page.click("[data-testid=tab-conversation]");
  await sleeping.getByTestId("cancel-run").click();
  await page.waitForSelector("[data-testid=run][data-status=cancelled]", { timeout: LONG });
  await page.click("[data-testid=tab-diff]");
  await page.waitForSelector("[data-testid=ship-commit]:not([disabled])", { timeout: LONG });

  // The whole workspace as a patch that applies to a fresh clone.
  const patch = await downloadText(page, page.getByTestId("ship-download"), `widgets-${session.slice(0, 8)}.patch`);
  assert.match(patch, /^diff --git a\/hello\.txt b\/hello\.txt$/m);
  const check = mkdtempSync(join(stack.dir, "apply-"));
  git(stack.dir, "clone", "-q", remote.bare, check);
  writeFileSync(join(check, "ship.patch"), patch);
  git(check, "apply", "ship.patch");
  assert.equal(readFileSync(join(check, "hello.txt"), "utf8"), "hello\n");
  await page.screenshot({ path: join(artifacts, "ship-diff.png") });

  // Commit: the message is the last completed run's answer.
  await page.click("[data-testid=ship-commit]");
  const message = page.getByTestId("commit-message");
  assert.equal(await message.evaluate((node) => node === document.activeElement), true, "the focus moves into the dialog");
  assert.equal(await message.inputValue(), "Created **hello.txt** with `hello`.");
  assert.equal(await page.getByTestId("commit-branch").getAttribute("placeholder"), branch);
  await page.screenshot({ path: join(artifacts, "ship-commit.png") });
  await page.click("[data-testid=commit-submit]");
  await page.getByTestId("commit-dialog").waitFor({ state: "hidden" });
  assert.equal(await gitLine(page, "1 commit ahead"), `${branch} · 1 commit ahead · 0 changed files`);
  assert.match(await page.getByTestId("ship-status").innerText(), new RegExp(`Committed [0-9a-f]{10} on ${branch}`));

  // Push: onto the default branch only when asked twice.
  await page.click("[data-testid=ship-push]");
  assert.equal(await page.getByTestId("push-to-default").isVisible(), false);
  await page.fill("[data-testid=push-remote-branch]", "main");
  await page.click("[data-testid=push-submit]");
  await page.getByTestId("push-to-default").waitFor({ timeout: LONG });
  assert.match(await page.getByTestId("push-error").innerText(), /default branch/);
  await page.fill("[data-testid=push-remote-branch]", "");
  await page.click("[data-testid=push-submit]");
  await page.getByTestId("push-dialog").waitFor({ state: "hidden", timeout: LONG });
  assert.match(await page.getByTestId("ship-status").innerText(), new RegExp(`Pushed [0-9a-f]{10} to ${branch}`));
  const head = (await (await stack.fetch(`${stack.url}/api/sessions/${session}/git`)).json()).head;
  assert.equal(git(stack.dir, "--git-dir", remote.bare, "rev-parse", `refs/heads/${branch}`), head);
  assert.equal(git(stack.dir, "--git-dir", remote.bare, "rev-parse", "refs/heads/main"), remote.main, "main is as it was");

  // A pull request, titled by the commit's subject.
  await page.click("[data-testid=ship-pr]");
  assert.equal(await page.getByTestId("pr-title").inputValue(), "Created **hello.txt** with `hello`.");
  await page.fill("[data-testid=pr-body]", "Made by the agent.");
  await page.click("[data-testid=pr-submit]");
  await page.getByTestId("pr-dialog").waitFor({ state: "hidden", timeout: LONG });
  const opened = forge.requests.filter((r) => r.created);
  assert.equal(opened.length, 1);
  assert.equal(opened[0].path, "/repos/alice/widgets/pulls");
  const sent = JSON.parse(opened[0].body);
  assert.deepEqual({ title: sent.title, head: sent.head, base: sent.base, body: sent.body },
    { title: "Created **hello.txt** with `hello`.", head: branch, base: "main", body: "Made by the agent." });
  const url = `${forge.base}/alice/widgets/pull/1`;
  await page.locator("[data-testid=session-git] [data-testid=pr-link]").waitFor({ timeout: LONG });
  assert.equal(await page.locator("[data-testid=session-git] [data-testid=pr-link]").getAttribute("href"), url);
  assert.equal(await page.locator("[data-testid=ship-prs] [data-testid=pr-link]").getAttribute("href"), url);
  assert.match(await gitLine(page, "PR #1"), new RegExp(`^${branch} · 1 commit ahead · 0 changed files · PR #1$`));
  await page.screenshot({ path: join(artifacts, "ship-pr.png") });
  await page.close();
});

test("on a phone: commit, a push that asks for a token, and a pull request with one, nothing sideways", async () => {
  const page = await newPage(PHONE);
  const remote = makeRemote("gadgets");
  const session = await createSession(page, remote.url);
  const branch = `repo-runner/${session.slice(0, 8)}`;
  await runPrompt(page, "please create a file");
  await page.waitForSelector("[data-testid=run][data-status=completed]", { timeout: LONG });
  assert.equal(await gitLine(page, "1 changed file"), "main · 0 commits ahead · 1 changed file");

  await page.click("[data-testid=tab-diff]");
  assert.match(await downloadText(page, page.getByTestId("ship-download"), `gadgets-${session.slice(0, 8)}.patch`), /^diff --git a\/hello\.txt b\/hello\.txt$/m);
  assert.equal(await noSideScroll(page), true);

  await page.click("[data-testid=ship-commit]");
  await page.fill("[data-testid=commit-message]", "Add hello.txt\n\nFrom the phone.");
  assert.equal(await noSideScroll(page), true);
  await page.screenshot({ path: join(artifacts, "ship-phone-commit.png") });
  await page.click("[data-testid=commit-submit]");
  await page.getByTestId("commit-dialog").waitFor({ state: "hidden" });
  assert.equal(await gitLine(page, "1 commit ahead"), `${branch} · 1 commit ahead · 0 changed files`);

  // The session kept no token: the server refuses the push, and the
  // dialog asks for one, which goes with that request only.
  await page.click("[data-testid=ship-push]");
  await page.click("[data-testid=push-submit]");
  const error = page.getByTestId("push-error");
  await error.filter({ hasText: /credentials/ }).waitFor({ timeout: LONG });
  assert.equal(await page.getByTestId("push-token").evaluate((node) => node === document.activeElement), true, "the token field has the focus");
  assert.equal(await noSideScroll(page), true);
  await page.screenshot({ path: join(artifacts, "ship-phone-push-token.png") });
  await page.fill("[data-testid=push-token]", TOKEN);
  await page.click("[data-testid=push-submit]");
  await page.getByTestId("push-dialog").waitFor({ state: "hidden", timeout: LONG });
  assert.equal(await page.getByTestId("push-token").inputValue(), "", "the token is gone with the dialog");
  assert.ok(git(stack.dir, "--git-dir", remote.bare, "rev-parse", `refs/heads/${branch}`));

  // No token, no pull request; with one, it opens.
  await page.click("[data-testid=ship-pr]");
  assert.equal(await page.getByTestId("pr-title").inputValue(), "Add hello.txt");
  await page.check("[data-testid=pr-draft]");
  await page.click("[data-testid=pr-submit]");
  await page.getByTestId("pr-error").filter({ hasText: /token/ }).waitFor({ timeout: LONG });
  assert.equal(await page.getByTestId("pr-token").evaluate((node) => node === document.activeElement), true, "the token field has the focus");
  await page.fill("[data-testid=pr-token]", TOKEN);
  await page.click("[data-testid=pr-submit]");
  await page.getByTestId("pr-dialog").waitFor({ state: "hidden", timeout: LONG });
  const opened = forge.requests.filter((r) => r.created && r.path === "/repos/alice/gadgets/pulls");
  assert.equal(opened.length, 1);
  assert.equal(JSON.parse(opened[0].body).draft, true);
  await page.locator("[data-testid=session-git] [data-testid=pr-link]").waitFor({ timeout: LONG });
  assert.match(await page.locator("[data-testid=session-git] [data-testid=pr-link]").getAttribute("href"), /\/alice\/gadgets\/pull\/\d+$/);
  assert.equal(await noSideScroll(page), true);
  const lines = await page.getByTestId("session-git").evaluate((node) => node.getBoundingClientRect().height / Number.parseFloat(getComputedStyle(node).lineHeight));
  assert.ok(lines < 2, `the git line is one line on a phone: ${lines} lines`);
  const link = await page.locator("[data-testid=session-git] [data-testid=pr-link]").boundingBox();
  assert.ok(link.x + link.width <= PHONE.width, `the pull request's link is on the screen: ${JSON.stringify(link)}`);
  await page.screenshot({ path: join(artifacts, "ship-phone.png") });
  await page.close();
});

test("a branch, a commit subject and a pull request's address from elsewhere show as text, and only an http(s) address is a link", async () => {
  const page = await newPage({ width: 1280, height: 900 });
  const remote = makeRemote("hostile");
  await createSession(page, remote.url, { token: TOKEN, keep: true });
  await runPrompt(page, "please create a file");
  await page.waitForSelector("[data-testid=run][data-status=completed]", { timeout: LONG });
  await gitLine(page, "1 changed file");

  // A branch name git takes: markup, and a character that turns the text around.
  const branch = "<img/src=x/onerror=window.__pwned=1>\u202Efdp";
  await page.click("[data-testid=tab-diff]");
  await page.click("[data-testid=ship-commit]");
  await page.fill("[data-testid=commit-message]", "<script>window.__pwned=3</script>");
  await page.fill("[data-testid=commit-branch]", branch);
  await page.click("[data-testid=commit-submit]");
  await page.getByTestId("commit-dialog").waitFor({ state: "hidden", timeout: LONG });
  const shown = "<img/src=x/onerror=window.__pwned=1>⟨U+202E⟩fdp";
  assert.equal(await gitLine(page, "1 commit ahead"), `${shown} · 1 commit ahead · 0 changed files`);

  await page.click("[data-testid=ship-pr]");
  assert.equal(await page.getByTestId("pr-title").inputValue(), "<script>window.__pwned=3</script>");
  await page.click("[data-testid=pr-submit]");
  await page.getByTestId("pr-dialog").waitFor({ state: "hidden", timeout: LONG });
  await gitLine(page, /PR #\d+/);
  assert.equal(await page.locator("[data-testid=session-git] a, [data-testid=ship-prs] a, [data-testid=ship-status] a").count(), 0, "a javascript: address is no link");
  assert.match(await page.getByTestId("ship-prs").innerText(), new RegExp(`Pull request #\\d+ ${shown.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} → main`));
  assert.equal(await page.locator("img, script:not([src])").count(), 0);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  await page.screenshot({ path: join(artifacts, "ship-hostile.png") });
  await page.close();
});
