// A small, safe Markdown renderer for agent messages. Every character of the
// input is HTML-escaped first; only the tags this module writes itself can
// appear in the output, and links keep only http(s) or relative targets.
// So model text can never inject HTML or script.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// A link is kept only if it is absolute http(s), a path on this origin, a
// fragment, or ./ ../ relative. Browsers drop tabs, newlines and leading
// control characters from a URL and read "\" as "/", so "//evil", "/\evil"
// and "\t//evil" would all leave the origin: any control character, space
// or backslash makes the link inert, and a path may not start with "//".
function safeHref(escapedUrl) {
  const url = escapedUrl.replace(/&amp;/g, "&");
  if (/[\u0000-\u0020\u007f-\u009f\\]/.test(url)) return false;
  return /^(https?:\/\/[^/]|\/(?!\/)|#|\.\.?\/)/i.test(url);
}

function inline(escaped) {
  // Code spans first, kept away from the other rules.
  const spans = [];
  let text = escaped.replace(/`([^`]+)`/g, (_, code) => {
    spans.push(`<code>${code}</code>`);
    return `\u0000${spans.length - 1}\u0000`;
  });
  text = text
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^*])\*([^*\s][^*]*)\*/g, "$1<em>$2</em>")
    .replace(/\[([^\]]+)\]\(([^)\s]+)\)/g, (whole, label, href) =>
      safeHref(href) ? `<a href="${href}" rel="noopener noreferrer" target="_blank">${label}</a>` : label,
    );
  return text.replace(/\u0000(\d+)\u0000/g, (_, i) => spans[Number(i)]);
}

export function renderMarkdown(source) {
  const lines = escapeHtml(source).split("\n");
  const out = [];
  let paragraph = [];
  let list = null; // { tag, items }
  const flushParagraph = () => {
    if (paragraph.length) out.push(`<p>${inline(paragraph.join(" "))}</p>`);
    paragraph = [];
  };
  const flushList = () => {
    if (list) out.push(`<${list.tag}>${list.items.map((i) => `<li>${inline(i)}</li>`).join("")}</${list.tag}>`);
    list = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(/^```\s*([\w-]*)\s*$/);
    if (fence) {
      flushParagraph();
      flushList();
      const code = [];
      i++;
      while (i < lines.length && !/^```\s*$/.test(lines[i])) code.push(lines[i++]);
      out.push(`<pre><code>${code.join("\n")}</code></pre>`);
      continue;
    }
    const heading = line.match(/^(#{1,4})\s+(.*)$/);
    const bullet = line.match(/^\s*[-*]\s+(.*)$/);
    const numbered = line.match(/^\s*\d+[.)]\s+(.*)$/);
    const quote = line.match(/^&gt;\s?(.*)$/);
    if (heading) {
      flushParagraph();
      flushList();
      const level = heading[1].length + 2; // h3..h6 inside a message
      out.push(`<h${level}>${inline(heading[2])}</h${level}>`);
    } else if (bullet || numbered) {
      flushParagraph();
      const tag = bullet ? "ul" : "ol";
      if (!list || list.tag !== tag) {
        flushList();
        list = { tag, items: [] };
      }
      list.items.push((bullet || numbered)[1]);
    } else if (quote) {
      flushParagraph();
      flushList();
      out.push(`<blockquote>${inline(quote[1])}</blockquote>`);
    } else if (line.trim() === "") {
      flushParagraph();
      flushList();
    } else {
      flushList();
      paragraph.push(line.trim());
    }
  }
  flushParagraph();
  flushList();
  return out.join("");
}
