// The streamed text of an item that has not completed yet (`item.delta`):
// a message, reasoning, or a command's output, growing in place. Each
// delta is appended, never the whole text set again, so a long message
// costs time linear in its length. The text sits in Text nodes of at most
// CHUNK_CHARS each (a delta grows the last one with `appendData`, which
// copies that node only), so the cap drops whole nodes from the front.
// When the item completes, its card is drawn whole (items.js) and this goes.

import { el } from "./dom.js";
import { stripAnsi } from "./items.js";

/** The most characters of one item's streamed text a page keeps: past it,
 * the last MAX_LIVE_CHARS show. (For a command's output, the characters
 * shown, colour codes already out.) */
const MAX_LIVE_CHARS = 200_000;
/** A Text node grows to about this many characters before a new one starts. */
const CHUNK_CHARS = 4096;
/** An unfinished colour code held back for the next delta is shown as it
 * is once longer than this (it was no colour code). */
const MAX_HELD = 256;
/** The start of a colour code (see items.js's ANSI) cut off at the end of
 * a delta, its rest to come in the next one. */
const UNFINISHED_ESCAPE = /\x1b(?:\[[0-9;?]*[ -\/]*|\][^\x07\x1b]*\x1b?)?$/;

/** How an item of `type` shows its streamed text. */
function layoutOf(type) {
  if (type === "command_execution" || type === "file_change") return "output";
  return type === "reasoning" ? "reasoning" : "message";
}

export class LiveText {
  constructor(type) {
    /** Characters of text in `holder`. */
    this.length = 0;
    /** The start of a colour code split between two deltas (output only). */
    this.held = "";
    this.build(layoutOf(type), "");
  }

  /** The elements for `layout`: `root` goes into the item's card, `holder`
   * holds the text. */
  build(layout, text) {
    this.layout = layout;
    if (layout === "output") {
      this.root = el("pre", { class: "output live", "data-testid": "live-output" });
      this.holder = this.root;
      this.follow(this.root);
    } else if (layout === "reasoning") {
      this.holder = el("div", { class: "item-body" });
      this.root = el("details", { class: "reasoning", open: "" }, el("summary", { text: "Reasoning…" }), this.holder);
    } else {
      this.root = el("div", { class: "markdown live", "data-testid": "live-text" });
      this.holder = this.root;
    }
    this.length = 0;
    this.add(text);
  }

  /** Appends a delta. */
  append(delta) {
    let text = delta;
    if (this.layout === "output") {
      text = stripAnsi(this.held + delta);
      const unfinished = text.match(UNFINISHED_ESCAPE)?.[0] ?? "";
      this.held = unfinished.length <= MAX_HELD ? unfinished : "";
      text = text.slice(0, text.length - this.held.length);
    }
    this.add(text);
  }

  /** Scrolled to its end, the terminal stays there as output comes; the
   * reader who scrolls up stops that, and scrolling back to the end starts
   * it again. Nothing here reads the layout per delta (that made a long
   * output cost quadratic time): the scroll to the end happens once a
   * frame, and a scroll event that is ours (the terminal where we put it,
   * text added since) does not count as the reader's. */
  follow(pre) {
    this.following = true;
    this.scrolledTo = -1;
    this.scrollPending = false;
    pre.addEventListener("scroll", () => {
      if (pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4) this.following = true;
      else if (Math.abs(pre.scrollTop - this.scrolledTo) > 1) this.following = false;
    });
  }

  scrollToEnd() {
    if (!this.following || this.scrollPending) return;
    this.scrollPending = true;
    requestAnimationFrame(() => {
      this.scrollPending = false;
      if (!this.following) return;
      this.root.scrollTop = this.root.scrollHeight;
      this.scrolledTo = this.root.scrollTop;
    });
  }

  add(text) {
    if (!text) return;
    const last = this.holder.lastChild;
    if (last?.nodeType === Node.TEXT_NODE && last.length + text.length <= CHUNK_CHARS) last.appendData(text);
    else this.holder.append(document.createTextNode(text));
    this.length += text.length;
    // Past the cap, the first characters go: whole nodes, then part of one.
    let excess = this.length - MAX_LIVE_CHARS;
    while (excess > 0) {
      const first = this.holder.firstChild;
      if (first.length <= excess) {
        first.remove();
        excess -= first.length;
        this.length -= first.length;
      } else {
        first.deleteData(0, excess);
        this.length -= excess;
        excess = 0;
      }
    }
    if (this.layout === "output") this.scrollToEnd();
  }

  /** Puts the text into the card `node` of an item of `type`: a command's
   * output below (or in place of) what the card shows of it; a message or
   * reasoning as the whole card. */
  place(node, type) {
    const layout = layoutOf(type);
    if (layout !== this.layout) {
      const text = this.holder.textContent;
      this.build(layout, layout === "output" ? stripAnsi(text) : text);
    }
    if (layout === "output") {
      if (this.root.parentNode === node) return;
      const shown = node.querySelector("pre.output");
      if (shown) shown.replaceWith(this.root);
      else node.append(this.root);
    } else if (node.firstChild !== this.root || node.childNodes.length !== 1) {
      node.replaceChildren(this.root);
    }
  }
}
