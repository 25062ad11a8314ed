// How a command is shown, on an approval card and in the transcript: as
// the shell will read it, so that a harmless-looking first line cannot hide
// what follows. Every line is shown (the element has `white-space:
// pre-wrap`, and long lines wrap), each real line end is marked, so a
// wrapped line does not pass for two; characters a reader cannot see, or
// that reorder what is seen (controls, bidi overrides and isolates,
// zero-width characters, line and paragraph separators), are replaced by a
// visible ⟨U+XXXX⟩; and warnings above the command say how many lines it
// has and how many such characters. The text is set with `textContent`
// only. No import of timeline.js here, which imports this module.

/** Control (Cc) and format (Cf: bidi controls, zero-width characters, tag
 * characters, the BOM) characters, the line and paragraph separators, and
 * the characters that draw nothing although their category says otherwise:
 * the combining grapheme joiner, variation selectors, the Hangul and
 * Khmer fillers, the Braille blank. Tab and newline are shown as what they
 * are. */
const HIDDEN =
  /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\u034F\u115F\u1160\u17B4\u17B5\u180B-\u180F\u2800\u3164\uFE00-\uFE0F\uFFA0\u{E0100}-\u{E01EF}]/u;

const isHidden = (char) => char !== "\n" && char !== "\t" && HIDDEN.test(char);

/** `⟨U+202E⟩` for U+202E. */
export const codePoint = (char) => `⟨U+${char.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}⟩`;

/** What a reader should know before trusting how `command` looks. */
export function inspectCommand(command) {
  const text = String(command ?? "");
  // A final newline adds no command.
  const lines = text.replace(/\n$/, "").split("\n").length;
  let hidden = 0;
  for (const char of text) if (isHidden(char)) hidden++;
  return { lines, hidden };
}

function node(tag, className, text) {
  const element = document.createElement(tag);
  element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

/** The command itself: a `<code class="command">` of text, line-end marks
 * and ⟨U+XXXX⟩ marks. `testid` names it for the tests. */
export function commandCode(command, testid) {
  const code = node("code", "command");
  if (testid) code.dataset.testid = testid;
  let run = "";
  const flush = () => {
    if (run) code.append(document.createTextNode(run));
    run = "";
  };
  const text = String(command ?? "");
  for (const char of text) {
    if (char === "\n") {
      flush();
      // The mark is drawn by CSS (::before), so it is not in the text.
      const mark = node("span", "line-end");
      mark.setAttribute("aria-hidden", "true");
      code.append(mark, "\n");
    } else if (isHidden(char)) {
      flush();
      const mark = node("span", "hidden-char", codePoint(char));
      mark.dataset.testid = "hidden-char";
      mark.title = "A character that does not show, or changes how the text around it shows";
      code.append(mark);
    } else {
      run += char;
    }
  }
  flush();
  return code;
}

/** Text that is not a command but names something the agent made (a
 * file's path, on an approval card, in the file tree, in a run's list of
 * changes): the same ⟨U+XXXX⟩ marks, a newline marked too. */
export function visibleText(text) {
  return [...String(text ?? "")].map((char) => (char === "\n" || isHidden(char) ? codePoint(char) : char)).join("");
}

/** The warnings about `command`, none when it is one plain line. */
export function commandWarnings(command) {
  const { lines, hidden } = inspectCommand(command);
  const warnings = [];
  if (lines > 1) {
    const warning = node("div", "command-warning", `This command has ${lines} lines: all of them run. Read every one.`);
    warning.dataset.testid = "command-lines";
    warnings.push(warning);
  }
  if (hidden > 0) {
    const what = hidden === 1 ? "1 hidden or control character" : `${hidden} hidden or control characters`;
    const warning = node("div", "command-warning", `This command contains ${what}, shown as ⟨U+…⟩.`);
    warning.dataset.testid = "command-hidden";
    warnings.push(warning);
  }
  return warnings;
}
