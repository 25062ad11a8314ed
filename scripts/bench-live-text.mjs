// How long 4,000 streamed deltas take to show in a run card of the dashboard
// (a terminal and a message), in a headless Chromium: the figure in
// docs/BENCHMARKS.md. Run after `cargo build --workspace --bins`:
//   node scripts/bench-live-text.mjs
import { startStack } from "../e2e/stack.mjs";
import { chromium } from "../node_modules/playwright-core/index.mjs";
const stack = await startStack();
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium" });
const page = await browser.newPage();
await page.goto(stack.url);
const r = await page.evaluate(async () => {
  const { LiveText } = await import("/live.js");
  const out = {};
  for (const type of ["command_execution", "agent_message"]) {
    const live = new LiveText(type);
    const card = document.createElement("li");
    document.body.append(card);
    live.place(card, type);
    const t0 = performance.now();
    for (let i = 0; i < 4000; i++) { live.append(`line ${i} of some streamed output text here\n`); await null; }
    // a frame's worth
    await new Promise((r) => requestAnimationFrame(() => r()));
    out[type] = Math.round(performance.now() - t0);
  }
  return out;
});
console.log(JSON.stringify(r));
await browser.close();
await stack.stop();
