// Starts the whole product for a browser test from the real binaries:
// a private PostgreSQL, the scripted model, the runner (real Codex CLI), the
// backend and the frontend-proxy. Each process is awaited on its own
// "listening" log line, not on a timer. The servers bind port 0 and the
// address each got is read from that line: no port is picked here and
// released for another process to take (PostgreSQL, which cannot bind port
// 0, is the exception).

import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, chmodSync } from "node:fs";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { execFileSync } from "node:child_process";

const root = resolve(import.meta.dirname, "..");
const bin = (name) => join(process.env.CARGO_TARGET_DIR || join(root, "target"), "debug", name);

export function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

/** Spawns a process and resolves when a line of its output matches. */
function start(name, program, args, env, pattern) {
  const child = spawn(program, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((done, fail) => {
    let found = false;
    /** Every line before the one awaited, for values logged earlier. */
    const lines = [];
    const onLine = (line) => {
      if (process.env.E2E_VERBOSE) console.error(`${name}| ${line}`);
      const match = !found && line.match(pattern);
      if (!found) lines.push(line);
      if (match) {
        found = true;
        done({ child, match, lines });
      }
    };
    createInterface({ input: child.stdout }).on("line", onLine);
    createInterface({ input: child.stderr }).on("line", onLine);
    child.once("exit", (code) => {
      if (!found) fail(new Error(`${name} exited (${code}) before it was ready`));
    });
  });
}

export function git(dir, ...args) {
  return execFileSync("git", args, {
    cwd: dir,
    env: { ...process.env, GIT_AUTHOR_NAME: "Test", GIT_AUTHOR_EMAIL: "t@example.com", GIT_COMMITTER_NAME: "Test", GIT_COMMITTER_EMAIL: "t@example.com" },
  }).toString().trim();
}

/**
 * `backendEnv`, `runnerEnv`: more of the backend's and the runner's
 * environment (limits, the driver), over the stack's own. `script`: the
 * scripted model's script (e2e/script.json).
 */
export async function startStack({ backendEnv = {}, runnerEnv = {}, script = "e2e/script.json" } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "repo-runner-e2e-"));
  chmodSync(dir, 0o755);
  const workspaces = join(dir, "workspaces");
  mkdirSync(workspaces);

  const pgPort = await freePort();
  const databaseUrl = execFileSync(bin("local-postgres"), ["start", join(dir, "pg"), String(pgPort), "repo_runner"]).toString().trim();

  const model = await start("model", bin("scripted-model"),
    ["--script", join(root, script), "--write-config", join(dir, "codex.toml")], {}, /^(http:\/\/\S+)$/);
  const runner = await start("runner", bin("runner"), [], {
    RUNNER_ADDR: "127.0.0.1:0",
    WORKSPACES_ROOT: workspaces,
    RUNNER_CODEX_HOMES: join(dir, "codex-homes"),
    CODEX_BIN: process.env.CODEX_BIN || join(root, "node_modules/.bin/codex"),
    RUNNER_CODEX_CONFIG: join(dir, "codex.toml"),
    ...runnerEnv,
  }, /runner listening addr=(\S+)/);
  const runnerAddr = runner.match[1];
  const backend = await start("backend", bin("backend"), [], {
    BACKEND_ADDR: "127.0.0.1:0",
    DATABASE_URL: databaseUrl,
    RUNNER_URL: `http://${runnerAddr}`,
    WORKSPACES_ROOT: workspaces,
    ALLOW_LOCAL_REPOS: "true",
    // Sessions of forge-style http URLs on loopback (nothing listens there).
    ALLOWED_CLONE_HOSTS: "127.0.0.1",
    ...backendEnv,
  }, /backend listening addr=(\S+)/);
  const backendUrl = `http://${backend.match[1]}`;
  // The tests' user, as an operator makes one. The preview needs no token:
  // each of its addresses carries a grant the dashboard asked for.
  const admin = (...args) => execFileSync(bin("backend"), ["admin", ...args], {
    env: { ...process.env, DATABASE_URL: databaseUrl, RUST_LOG: "warn" },
  }).toString().trim();
  admin("user", "add", "alice");
  const token = admin("token", "create", "alice");
  // The first start binds port 0 for both listeners; a restart binds the
  // ports it got again, so the page's address and its preview links stay.
  let proxyAddr = "127.0.0.1:0";
  let previewAddr = "127.0.0.1:0";
  const startProxy = async () => {
    const started = await start("proxy", bin("frontend-proxy"), [],
      { PROXY_ADDR: proxyAddr, PREVIEW_ADDR: previewAddr, BACKEND_URL: backendUrl },
      /previews listening addr=(\S+)/);
    proxyAddr = started.lines.map((l) => l.match(/frontend-proxy listening addr=(\S+)/)).find(Boolean)[1];
    previewAddr = started.match[1];
    return started.child;
  };
  let proxy = await startProxy();

  return {
    dir,
    url: `http://${proxyAddr}`,
    previewUrl: `http://${previewAddr}`,
    backendUrl,
    /** The stack's database (its password included), for tests that plant a state. */
    databaseUrl,
    modelUrl: model.match[1],
    /** alice's API token, and `backend admin` on this stack's database. */
    token,
    admin,
    /** `fetch` as alice: her token on every request. */
    fetch(url, init = {}) {
      return fetch(url, { ...init, headers: { ...(init.headers || {}), authorization: `Bearer ${token}` } });
    },
    /** A one-time sign-in link for `user`, as `backend admin signin-link` prints it. */
    signinLink(user = "alice") {
      return admin("signin-link", user, "--url", `${this.url}/`);
    },
    /** Signs a page in through a sign-in link, as a new user does: open it, confirm. */
    async signIn(page, user = "alice") {
      await page.goto(this.signinLink(user));
      await page.getByTestId("signin-confirm-yes").click();
      await page.locator("[data-testid=signed-in-user]").waitFor();
    },
    /** Kills the proxy (every browser connection drops) and starts it again. */
    async restartProxy() {
      await this.killProxy();
      await this.startProxy();
    },
    /** Kills the proxy: the page loses the API until `startProxy`. */
    async killProxy() {
      const exited = new Promise((done) => proxy.once("exit", done));
      proxy.kill("SIGKILL");
      await exited;
    },
    async startProxy() {
      proxy = await startProxy();
    },
    /** A repository with one commit, for sessions to clone. */
    makeRepo(name) {
      const repo = join(dir, "repos", name);
      mkdirSync(repo, { recursive: true });
      git(repo, "init", "-q", "-b", "main");
      writeFileSync(join(repo, "README.md"), `# ${name}\n`);
      git(repo, "add", ".");
      git(repo, "commit", "-q", "-m", "initial");
      return repo;
    },
    async stop() {
      for (const child of [proxy, backend.child, runner.child, model.child]) child.kill("SIGTERM");
      try {
        execFileSync(bin("local-postgres"), ["stop", join(dir, "pg")]);
      } catch {}
    },
  };
}
