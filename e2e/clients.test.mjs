// Clients generated from the running backend's spec work: a Python client
// (openapi-python-client) and TypeScript types (openapi-typescript) with
// openapi-fetch each drive a session to a completed run and read a file.
// A spec change that breaks generation or the scripts fails here.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { startStack } from "./stack.mjs";

const root = resolve(import.meta.dirname, "..");
const bin = (name) => join(root, "node_modules/.bin", name);
let stack;
let spec;

before(async () => {
  stack = await startStack();
  spec = join(stack.dir, "openapi.json");
  writeFileSync(spec, await (await fetch(`${stack.url}/api/openapi.json`)).text());
});

after(async () => {
  await stack?.stop();
});

function run(program, args, options = {}) {
  try {
    return execFileSync(program, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...options });
  } catch (error) {
    throw new Error(`${program} ${args.join(" ")} failed:\n${error.stdout}\n${error.stderr}`);
  }
}

test("a TypeScript client from openapi-typescript and openapi-fetch drives a run", () => {
  const dir = join(stack.dir, "ts-client");
  mkdirSync(dir, { recursive: true });
  cpSync(join(root, "clients/typescript"), dir, { recursive: true });
  run(bin("openapi-typescript"), [spec, "-o", join(dir, "schema.d.ts")]);
  // Resolve openapi-fetch from the project's node_modules.
  cpSync(join(root, "node_modules"), join(dir, "node_modules"), { recursive: true, dereference: false });
  writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
  run(bin("tsc"), ["-p", dir]);
  const repo = stack.makeRepo("ts-client");
  const out = run("node", [join(dir, "smoke.js")], { env: { ...process.env, BASE_URL: stack.url, API_TOKEN: stack.token, REPO_URL: `file://${repo}` } });
  assert.match(out, /typescript client: run \S+ completed: "Created \*\*hello.txt\*\* with `hello`."; hello.txt read/);
});

test("a Python client from openapi-python-client drives a run", () => {
  // With `--meta none` the package's files land in the output folder itself.
  const dir = join(stack.dir, "py-client", "repo_runner_client");
  const venv = process.env.CLIENTS_VENV || join(root, ".venv-clients");
  if (!existsSync(join(venv, "bin/openapi-python-client"))) {
    run("python3", ["-m", "venv", venv]);
    run(join(venv, "bin/pip"), ["install", "--quiet", "openapi-python-client==0.29.1"]);
  }
  run(join(venv, "bin/openapi-python-client"), ["generate", "--path", spec, "--output-path", dir, "--meta", "none"]);
  const repo = stack.makeRepo("py-client");
  const out = run(join(venv, "bin/python"), [join(root, "clients/python/smoke.py")], {
    env: { ...process.env, BASE_URL: stack.url, API_TOKEN: stack.token, REPO_URL: `file://${repo}`, PYTHONPATH: join(dir, "..") },
  });
  assert.match(out, /python client: run \S+ completed: 'Created \*\*hello.txt\*\* with `hello`.'; hello.txt read/);
});
