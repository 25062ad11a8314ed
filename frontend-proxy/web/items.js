// How a completed (or started) item of a run's timeline is drawn, by its
// `type`: the agent's message as Markdown, reasoning folded, a command with
// its exit code and output, file changes, to-do lists, errors. Text from the
// agent is set as text only (Markdown through markdown.js, which escapes).

import { commandCode, commandWarnings } from "./command.js";
import { el } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

/** Colour and cursor codes a terminal would interpret: shown as plain text. */
const ANSI = /\x1b\[[0-9;?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;
export const stripAnsi = (text) => text.replace(ANSI, "");

/** `path` relative to the workspace folder, when it is inside it. */
export function relative(path, workspace) {
  return workspace && path.startsWith(`${workspace}/`) ? path.slice(workspace.length + 1) : path;
}

/** The elements of an item's card; null for a part the item has not
 * (a command without output yet). */
export function renderItem(item, workspace) {
  switch (item.type) {
    case "agent_message": {
      const body = el("div", { class: "markdown" });
      body.innerHTML = renderMarkdown(item.text || ""); // escaped by renderMarkdown
      return [body];
    }
    case "reasoning": {
      const details = el("details", { class: "reasoning" });
      details.append(el("summary", { text: "Reasoning" }), el("div", { class: "item-body", text: item.text || "" }));
      return [details];
    }
    case "command_execution": {
      const exit = item.exit_code;
      const status = item.status === "in_progress" ? "running" : exit === 0 ? "exit 0" : `exit ${exit ?? "?"}`;
      const head = el("div", { class: "command-head" },
        commandCode(item.command),
        el("span", { class: `badge ${exit === 0 ? "completed" : item.status === "in_progress" ? "running" : "failed"}`, "data-testid": "exit-code", text: status }));
      const output = item.aggregated_output ? el("pre", { class: "output", text: stripAnsi(item.aggregated_output) }) : null;
      return [...commandWarnings(item.command), head, output];
    }
    case "file_change": {
      const list = el("ul", { class: "changes" });
      for (const change of item.changes || []) {
        list.append(el("li", { class: change.kind, text: `${change.kind} ${relative(change.path, workspace)}` }));
      }
      return [el("div", { class: "item-title", text: `File changes (${item.status})` }), list];
    }
    case "todo_list": {
      const list = el("ul", { class: "todos" });
      for (const todo of item.items || []) {
        const box = el("input", { type: "checkbox", disabled: "" });
        box.checked = !!todo.completed;
        list.append(el("li", { class: todo.completed ? "done" : "" }, box, document.createTextNode(` ${todo.text}`)));
      }
      return [el("div", { class: "item-title", text: "To-do" }), list];
    }
    case "error":
      return [el("div", { class: "item-title", text: "Error" }), el("div", { class: "item-body", text: item.message || "" })];
    case "mcp_tool_call":
      return [el("div", { class: "item-title", text: `Tool ${item.server}.${item.tool} (${item.status})` })];
    case "web_search":
      return [el("div", { class: "item-title", text: `Web search: ${item.query || ""}` })];
    default:
      return [el("div", { class: "item-title", text: item.type || "item" }), el("pre", { class: "output", text: JSON.stringify(item, null, 2) })];
  }
}
