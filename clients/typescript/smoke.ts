// Drives repo-runner with TypeScript types generated from its OpenAPI spec
// (openapi-typescript) and openapi-fetch: create a session, send a prompt,
// read the run until it completes, read a file the agent wrote.
//
// Usage: BASE_URL=http://127.0.0.1:9100 API_TOKEN=rr_… REPO_URL=file:///path node smoke.js
// (compiled with tsc next to the generated `schema.d.ts`).

import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Run = components["schemas"]["Run"];

// The spec declares bearer authentication: every call sends the token.
const client = createClient<paths>({
  baseUrl: process.env.BASE_URL,
  headers: { Authorization: `Bearer ${process.env.API_TOKEN}` },
});

async function wait<T>(fetch: () => Promise<T>, done: (value: T) => boolean, what: string): Promise<T> {
  // A plain HTTP client has no event for these states: poll, bounded.
  for (let i = 0; i < 600; i++) {
    const value = await fetch();
    if (done(value)) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function must<T>(result: { data?: T; error?: unknown }): T {
  if (result.data === undefined) throw new Error(`API error: ${JSON.stringify(result.error)}`);
  return result.data;
}

const created = must(await client.POST("/api/sessions", { body: { repo_url: process.env.REPO_URL! } }));
const session_id = created.session_id;
const session = await wait(
  async () => must(await client.GET("/api/sessions/{session_id}", { params: { path: { session_id } } })),
  (s) => s.status !== "cloning",
  "the clone",
);
if (session.status !== "ready") throw new Error(`clone failed: ${session.error}`);

const accepted = must(
  await client.POST("/api/sessions/{session_id}/prompt", {
    params: { path: { session_id } },
    body: { prompt: "Please create a file" },
  }),
);
const run: Run = await wait(
  async () => must(await client.GET("/api/runs/{run_id}", { params: { path: { run_id: accepted.run_id } } })),
  (r) => r.status !== "queued" && r.status !== "running",
  "the run",
);
if (run.status !== "completed") throw new Error(`run ${run.status}: ${run.error}`);
if (JSON.stringify(run.files?.created) !== JSON.stringify(["hello.txt"])) throw new Error(`files: ${JSON.stringify(run.files)}`);

const file = must(
  await client.GET("/api/sessions/{session_id}/files/{path}", { params: { path: { session_id, path: "hello.txt" } } }),
);
if (file.content !== "hello\n") throw new Error(`hello.txt: ${JSON.stringify(file)}`);
console.log(`typescript client: run ${run.run_id} ${run.status}: ${JSON.stringify(run.final_response)}; hello.txt read`);
