// schemathesis against the whole stack, through the proxy, signed in with
// a user's API token: every operation of the served document, with a fixed
// seed and a small number of cases (e2e/schemathesis.toml). No answer may be
// a 5xx; every answer must match the document: its status, content type,
// headers and body (each event of a stream included); and a request the
// document does not allow must be refused. Sessions and runs made first give
// the operations that take ids real objects to find: schemathesis takes ids
// from what the list operations return.
//
// Nothing is excluded. The caller cannot lose its credential mid-run: the
// API has no operation that revokes a token (that is `backend admin`), and
// signing out ends cookie sign-ins only. Deleting a session is fuzzed like
// the rest; there are several to find.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { join, resolve } from "node:path";
import { startStack } from "./stack.mjs";

const root = resolve(import.meta.dirname, "..");
const SCHEMATHESIS = "4.32.5";
const SEED = "20261202";
const CHECKS = [
  "not_a_server_error",
  "status_code_conformance",
  "content_type_conformance",
  "response_headers_conformance",
  "response_schema_conformance",
  "negative_data_rejection",
];
const venv = process.env.SCHEMATHESIS_VENV || join(root, ".venv-schemathesis");
const schemathesis = join(venv, "bin/schemathesis");
let stack;

function installed() {
  try {
    return execFileSync(schemathesis, ["--version"], { encoding: "utf8" }).includes(`version ${SCHEMATHESIS}`);
  } catch {
    return false;
  }
}

function install(program, args) {
  try {
    execFileSync(program, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (error) {
    throw new Error(`${program} ${args.join(" ")} failed:\n${error.stdout}\n${error.stderr}`);
  }
}

before(() => {
  // Before the stack starts: nothing reads its logs while this blocks.
  if (!installed()) {
    install("python3", ["-m", "venv", venv]);
    install(join(venv, "bin/pip"), ["install", "--quiet", `schemathesis==${SCHEMATHESIS}`]);
  }
});

after(async () => {
  await stack?.stop();
});

async function api(method, path, body) {
  const response = await stack.fetch(`${stack.url}${path}`, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${await response.clone().text()}`);
  return response.json();
}

/** A ready session of a new repository, and its run of `prompt`, ended. */
async function sessionWithRun(name, prompt) {
  const { session_id: session } = await api("POST", "/api/sessions", { repo_url: `file://${stack.makeRepo(name)}` });
  for (;;) {
    const { status } = await api("GET", `/api/sessions/${session}`);
    if (status !== "cloning") {
      assert.equal(status, "ready");
      break;
    }
    await new Promise((done) => setTimeout(done, 100)); // the API has no clone event
  }
  const { run_id: run } = await api("POST", `/api/sessions/${session}/prompt`, { prompt });
  // The stream closes after the run's terminal event.
  await (await stack.fetch(`${stack.url}/api/runs/${run}/events`)).text();
  assert.equal((await api("GET", `/api/runs/${run}`)).status, "completed");
}

/** Runs a program to its end without blocking: the stack's logs keep flowing. */
function run(program, args, options) {
  return new Promise((done, fail) => {
    const child = spawn(program, args, { ...options, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk) => { output += chunk; });
    child.stderr.on("data", (chunk) => { output += chunk; });
    child.once("error", fail);
    child.once("close", (code, signal) => done({ code, signal, output }));
  });
}

test("schemathesis finds no 5xx and no answer that departs from the document", { timeout: 300_000 }, async () => {
  // Rate limits off: they would answer most of the run with 429s, which
  // the document allows, and hide what the operations do.
  stack = await startStack({ backendEnv: { BACKEND_IP_RATE_PER_SEC: "0", BACKEND_USER_RATE_PER_SEC: "0" } });
  await sessionWithRun("fuzz-files", "create a file");
  await sessionWithRun("fuzz-chat", "hello");
  await sessionWithRun("fuzz-more", "hello");

  const { code, signal, output } = await run(schemathesis, [
    "--config-file", join(root, "e2e/schemathesis.toml"),
    "--no-color",
    "run", `${stack.url}/api/openapi.json`,
    // The document has no `servers`: its paths start at the root.
    "--url", stack.url,
    "--header", `Authorization: Bearer ${stack.token}`,
    "--seed", SEED,
    "--checks", CHECKS.join(","),
  ], { cwd: stack.dir, env: { ...process.env, NO_COLOR: "1" } });
  assert.equal(code, 0, `schemathesis exited with ${code ?? signal}:\n${output}`);
});
