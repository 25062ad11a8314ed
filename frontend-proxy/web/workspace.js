// The workspace views: the file tree and the diff.

import { visibleText } from "./command.js";
import { el } from "./dom.js";

/** Renders `{entries: [{path, kind, size}]}` as a nested list of folders
 * and files, hidden characters of their names marked (command.js). */
export function renderTree(container, tree, onOpen) {
  const root = el("ul", { class: "tree" });
  const folders = new Map([["", root]]);
  for (const entry of tree.entries) {
    const slash = entry.path.lastIndexOf("/");
    const parent = folders.get(slash < 0 ? "" : entry.path.slice(0, slash)) || root;
    const name = entry.path.slice(slash + 1);
    if (entry.kind === "dir") {
      const children = el("ul");
      const details = el("details", { open: "" }, el("summary", { text: `${visibleText(name)}/` }), children);
      parent.append(el("li", { class: "dir", "data-testid": "file-entry", "data-path": entry.path }, details));
      folders.set(entry.path, children);
    } else {
      // The agent names files: a bidi override must not pass `x‮fdp.sh` off as
      // `xhs.pdf` here either.
      const button = el("button", { type: "button", class: "file", text: visibleText(name), title: `${visibleText(entry.path)} (${entry.size} bytes)` });
      button.addEventListener("click", () => onOpen(entry.path));
      parent.append(el("li", { class: entry.kind, "data-testid": "file-entry", "data-path": entry.path }, button));
    }
  }
  container.replaceChildren(root);
  if (tree.truncated) container.append(el("p", { class: "muted", text: "Only the first entries are shown." }));
  if (!tree.entries.length) container.append(el("p", { class: "muted", text: "The workspace is empty." }));
}

/** Renders a unified diff with added and removed lines coloured. */
export function renderDiff(container, diff) {
  const summary = el("p", {
    class: "diff-summary",
    text: `${diff.files_changed} file(s) changed, ${diff.insertions} insertion(s), ${diff.deletions} deletion(s) against ${diff.base_commit.slice(0, 10)}`,
  });
  const pre = el("pre", { class: "diff", "data-testid": "diff" });
  for (const line of diff.patch.split("\n")) {
    let kind = "context";
    if (line.startsWith("diff --git") || line.startsWith("index ") || line.startsWith("+++") || line.startsWith("---")) kind = "meta";
    else if (line.startsWith("@@")) kind = "hunk";
    else if (line.startsWith("+")) kind = "add";
    else if (line.startsWith("-")) kind = "del";
    pre.append(el("span", { class: `line ${kind}`, text: `${line}\n` }));
  }
  container.replaceChildren(summary, pre);
  if (diff.truncated) container.append(el("p", { class: "muted", text: "The diff was cut at the size limit." }));
  if (!diff.patch) container.replaceChildren(el("p", { class: "muted", text: "No changes against the cloned commit." }));
}
