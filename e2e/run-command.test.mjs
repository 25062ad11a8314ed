// The README's run command in a clean copy of the repository: fresh data
// folder, no DATABASE_URL, no API key (demo mode). One demo prompt through
// the API to completion, then Ctrl-C (SIGINT to the process group), then
// nothing may be left: no process working in the copy, no port open.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, chmodSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { freePort, git } from "./stack.mjs";

const root = resolve(import.meta.dirname, "..");
const README_RUN = "./scripts/dev.sh";

function portOpen(address) {
  const [host, port] = address.split(":");
  return new Promise((done) => {
    const socket = connect({ host, port: Number(port) });
    socket.once("connect", () => { socket.destroy(); done(true); });
    socket.once("error", () => done(false));
  });
}

/** Processes whose working directory is inside `dir`. */
function processesIn(dir) {
  const found = [];
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      if (readlinkSync(`/proc/${pid}/cwd`).startsWith(dir)) {
        found.push(`${pid}: ${readFileSync(`/proc/${pid}/cmdline`).toString().replaceAll("\0", " ")}`);
      }
    } catch {}
  }
  return found;
}

async function readEvents(url, headers) {
  const response = await fetch(url, { headers });
  const text = await response.text(); // the stream closes after the terminal event
  return text.split("\n").filter((l) => l.startsWith("event: ")).map((l) => l.slice(7));
}

test("the README's run command starts everything in demo mode and Ctrl-C stops it all", { timeout: 900_000 }, async () => {
  const readme = execFileSync("cat", [join(root, "README.md")]).toString();
  assert.ok(readme.includes(README_RUN), "the README shows the run command");

  const copy = mkdtempSync(join(tmpdir(), "repo-runner-clean-"));
  chmodSync(copy, 0o755);
  const files = execFileSync("git", ["ls-files", "-co", "--exclude-standard"], { cwd: root }).toString().split("\n").filter(Boolean);
  for (const file of files) if (existsSync(join(root, file))) cpSync(join(root, file), join(copy, file), { recursive: true });
  const repo = join(copy, "..", `${copy.split("/").pop()}-repo`);
  execFileSync("mkdir", ["-p", repo]);
  git(repo, "init", "-q", "-b", "main");
  execFileSync("sh", ["-c", `echo '# demo' > ${repo}/README.md`]);
  git(repo, "add", ".");
  git(repo, "commit", "-q", "-m", "initial");

  const ports = { PROXY_ADDR: `127.0.0.1:${await freePort()}`, BACKEND_ADDR: `127.0.0.1:${await freePort()}`, RUNNER_ADDR: `127.0.0.1:${await freePort()}`, PREVIEW_ADDR: `127.0.0.1:${await freePort()}` };
  const pgPort = await freePort();
  const env = { ...process.env, ...ports, PG_PORT: String(pgPort), ALLOW_LOCAL_REPOS: "true", PROFILE: "debug", DEMO_PACE: "0",
    // Reuse the compiled binaries; everything else (node_modules, data) is fresh.
    CARGO_TARGET_DIR: process.env.CARGO_TARGET_DIR || join(root, "target") };
  for (const key of ["DATABASE_URL", "CODEX_API_KEY", "OPENAI_API_KEY", "RUNNER_CODEX_CONFIG", "CODEX_BIN", "WORKSPACES_ROOT"]) delete env[key];

  const child = spawn("bash", ["-c", README_RUN], { cwd: copy, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const output = [];
  let url;
  const link = await new Promise((done, fail) => {
    const onLine = (line) => {
      output.push(line);
      const match = line.match(/dashboard at (http:\/\/\S+)/);
      if (match) url = match[1];
      const signIn = line.match(/sign in as admin .*: (http:\/\/\S+)$/);
      if (signIn) done(signIn[1]);
    };
    createInterface({ input: child.stdout }).on("line", onLine);
    createInterface({ input: child.stderr }).on("line", onLine);
    child.once("exit", (code) => fail(new Error(`the run command exited (${code}):\n${output.slice(-30).join("\n")}`)));
  });
  assert.equal(url, `http://${ports.PROXY_ADDR}`);
  // The sign-in link carries a one-time code in the fragment, which no
  // request sends; traded once, it is the browser's cookie.
  const [page0, code] = link.split("#code=");
  assert.equal(page0, `${url}/`);
  assert.match(code, /^rrs_[A-Za-z0-9_-]{43}$/);
  const signedIn = await fetch(`${url}/api/auth/session`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ code }),
  });
  assert.equal(signedIn.status, 200);
  const cookie = signedIn.headers.get("set-cookie").split(";")[0];
  assert.match(cookie, /^rr_session=rrc_/);
  const auth = { cookie };
  assert.equal((await fetch(`${url}/api/sessions`)).status, 401, "the API needs the token");
  assert.ok(output.some((l) => l.includes("DEMO MODE")), "demo mode is announced");
  const previewPort = Number(ports.PREVIEW_ADDR.split(":")[1]);
  assert.deepEqual(await (await fetch(`${url}/mode.json`)).json(), { demo: true, preview_port: previewPort });
  assert.ok(output.some((l) => l.includes(`previews of the workspaces at http://${ports.PREVIEW_ADDR}`)), "the preview address is printed");

  const created = await (await fetch(`${url}/api/sessions`, {
    method: "POST", headers: { "content-type": "application/json", ...auth }, body: JSON.stringify({ repo_url: `file://${repo}` }),
  })).json();
  const prompt = await (await fetch(`${url}/api/sessions/${created.session_id}/prompt`, {
    method: "POST", headers: { "content-type": "application/json", ...auth }, body: JSON.stringify({ prompt: "build a snake game in the browser" }),
  })).json();
  const events = await readEvents(`${url}/api/runs/${prompt.run_id}/events`, auth);
  assert.equal(events.at(-1), "run.completed", events.join(","));
  const run = await (await fetch(`${url}/api/runs/${prompt.run_id}`, { headers: auth })).json();
  assert.deepEqual(run.files.created.sort(), ["snake/index.html", "snake/snake.js"]);
  const game = await (await fetch(`${url}/api/sessions/${created.session_id}/files/snake/index.html`, { headers: auth })).json();
  assert.match(game.content, /<canvas id="board"/);
  // The game as a page, on the preview listener, with a grant for its session.
  const grant = await (await fetch(`${url}/api/sessions/${created.session_id}/preview`, { method: "POST", headers: auth })).json();
  assert.equal(grant.url_path, `/${created.session_id}/${grant.grant}/`);
  assert.equal((await fetch(`http://${ports.PREVIEW_ADDR}/${created.session_id}/snake/`)).status, 401, "no grant, no page");
  const page = await fetch(`http://${ports.PREVIEW_ADDR}${grant.url_path}snake/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-security-policy"), /sandbox allow-scripts/);
  assert.match(await page.text(), /<canvas id="board"/);

  const exited = new Promise((done) => child.once("exit", (code, signal) => done({ code, signal })));
  process.kill(-child.pid, "SIGINT"); // Ctrl-C: the whole foreground process group
  await exited;

  for (const address of [...Object.values(ports), `127.0.0.1:${pgPort}`]) {
    assert.equal(await portOpen(address), false, `${address} is still open`);
  }
  assert.deepEqual(processesIn(copy), [], "no process is left working in the copy");
  assert.equal(existsSync(join(copy, ".data/postgres/postmaster.pid")), false, "PostgreSQL is stopped");
});
