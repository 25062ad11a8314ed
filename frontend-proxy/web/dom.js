// The page's building blocks, shared by every view: finding an element,
// making one, and the banner that says what went wrong. A leaf module: it
// imports nothing.

/** The first element that matches `selector`. */
export const $ = (selector) => document.querySelector(selector);

/** A new element: `attrs` are attributes, but `class` sets the class and
 * `text` the text (never HTML); children that are null are left out. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

/** Shows `message` in the banner at the top, or hides it when empty. */
export function showError(message) {
  const banner = $("#banner");
  banner.textContent = message;
  banner.hidden = !message;
}
