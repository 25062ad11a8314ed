// The names of a run's events, read once from the backend's OpenAPI
// document: `components.schemas.RunEventType.enum`, which the backend writes
// from protocol's `EventName`, the one place the names are spelled. A run's
// stream is an EventSource, which delivers an event only to a listener of
// its name, so a name missing here would be an event the page never sees.
// Leaf module: it imports nothing.

/** The backend's OpenAPI document, public (no sign-in), through the proxy. */
const SPEC = "/api/openapi.json";

/** The names, asked for once: the promise is kept, and dropped again if it
 * failed, so that the next stream opened asks again. */
let names = null;

/** Every event name of a run's stream, in the document's order. Rejects
 * (with an Error that says why) when the document cannot be read or lists
 * none: the caller shows that, it never listens to nothing. */
export function runEventNames() {
  names ??= readNames().catch((error) => {
    names = null;
    throw error;
  });
  return names;
}

async function readNames() {
  const response = await fetch(SPEC);
  if (!response.ok) throw new Error(`GET ${SPEC} answered ${response.status}`);
  const spec = await response.json();
  const list = spec?.components?.schemas?.RunEventType?.enum;
  if (!Array.isArray(list) || !list.length || !list.every((name) => typeof name === "string")) {
    throw new Error(`${SPEC} lists no run event names (components.schemas.RunEventType.enum)`);
  }
  return Object.freeze([...list]);
}

/** A terminal event ends a run: `run.completed`, `run.failed` and
 * `run.cancelled` are the names of the spec that start with `run.`, and
 * the run's status is the rest of the name. */
export const isTerminal = (name) => name.startsWith("run.");
