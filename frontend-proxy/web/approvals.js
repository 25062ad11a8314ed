// An approval card: the agent asks before a command or a change, and the
// card offers three answers, usable on a phone. The command is shown whole,
// as the shell reads it (command.js); once answered (by anyone, or by the
// runner itself), the card says how and by whom.

import { api } from "./api.js";
import { commandCode, commandWarnings, visibleText } from "./command.js";
import { el } from "./dom.js";
import { relative } from "./items.js";

const DECISIONS = [["approve", "Approve"], ["approve_for_session", "Approve for this session"], ["deny", "Deny"]];

/** The card of `approval.requested`'s `data`, for the run `runId`. */
export function approvalCard(runId, data, workspace) {
  const node = el("li", { class: "item approval", "data-testid": "approval", "data-approval-id": data.approvalId });
  node.append(el("div", { class: "item-title", text: data.kind === "file_change" ? "The agent asks to change files" : "The agent asks to run" }));
  // The command whole, as the shell reads it, its warnings above it
  // (command.js): what the card shows is what runs.
  if (data.command) node.append(...commandWarnings(data.command), commandCode(data.command, "approval-command"));
  if (data.cwd) {
    const where = data.cwd === workspace ? "the workspace" : relative(data.cwd, workspace);
    node.append(el("div", { class: "approval-cwd", "data-testid": "approval-cwd", text: `in ${visibleText(where)}` }));
  }
  if (Array.isArray(data.changes) && data.changes.length) {
    const list = el("ul", { class: "changes" });
    for (const change of data.changes) list.append(el("li", { text: `${change.kind} ${visibleText(relative(change.path || "", workspace))}` }));
    node.append(list);
  }
  if (data.reason) node.append(el("div", { class: "item-body", text: visibleText(data.reason) }));
  if (data.refused) {
    // The runner declined it before anyone could answer (an approved
    // action would run outside the sandbox): no buttons, and why.
    node.append(el("div", { class: "approval-refused", "data-testid": "approval-refused", text: `Declined by the runner: ${data.refused}.` }));
  }
  const actions = el("div", { class: "approval-actions" });
  const status = el("div", { class: "approval-status", role: "status", "data-testid": "approval-status" });
  for (const [decision, label] of data.refused ? [] : DECISIONS) {
    const button = el("button", { type: "button", class: `decision ${decision}`, "data-testid": `approval-${decision}`, text: label });
    button.addEventListener("click", async () => {
      for (const b of actions.querySelectorAll("button")) b.disabled = true;
      status.textContent = "Sending…";
      try {
        await api.approve(runId, data.approvalId, decision);
      } catch (error) {
        status.textContent = error.message;
        if (!node.classList.contains("resolved")) for (const b of actions.querySelectorAll("button")) b.disabled = false;
      }
    });
    actions.append(button);
  }
  node.append(actions, status);
  return node;
}

/** Marks the card answered, from `approval.resolved`'s `data`. */
export function showDecision(node, data) {
  node.classList.add("resolved");
  node.dataset.decision = data.decision;
  for (const button of node.querySelectorAll("button")) button.disabled = true;
  const label = DECISIONS.find(([d]) => d === data.decision)?.[1] || data.decision;
  node.querySelector("[data-testid=approval-status]").textContent = `${label}${data.by ? ` (${data.by})` : ""}`;
}
