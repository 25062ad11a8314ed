// How a session is named in the list and the header: `owner/repo` for a
// forge-style remote (a host, then at least two path parts), else the
// repository's own name (a local path, file://, a one-part remote path).
// Pure functions, so node tests can import them without a page.

/** The repository part of a session's name, from its URL as stored. */
export function repoName(url) {
  const text = String(url || "").trim();
  let host = "";
  let path = text;
  const scheme = text.match(/^([a-z][a-z0-9+.-]*):\/\/([^/]*)(.*)$/i);
  const scpLike = !scheme && text.match(/^(?:[^@/:]+@)?([^/:]+):(?!\/)(.*)$/);
  if (scheme) {
    host = scheme[1].toLowerCase() === "file" ? "" : scheme[2];
    path = scheme[3];
  } else if (scpLike) {
    host = scpLike[1];
    path = scpLike[2];
  }
  const parts = path.split(/[/\\]/).filter(Boolean);
  if (parts.length) parts[parts.length - 1] = parts[parts.length - 1].replace(/\.git$/i, "");
  const named = parts.filter(Boolean);
  if (!named.length) return text;
  return host && named.length >= 2 ? named.slice(-2).join("/") : named[named.length - 1];
}

/** The whole name: the repository and the ref, if one was asked for. */
export function sessionName(session) {
  const name = repoName(session.repo_url);
  return session.ref ? `${name} @ ${session.ref}` : name;
}
