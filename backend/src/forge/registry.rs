//! Which forge serves a host: the known public forges and the operator's
//! `FORGES` list, and the reading of an origin URL into a [`ForgeRepo`].
//!
//! `FORGES` is comma-separated `host=kind:api_base`, for example
//! `git.example.com=gitlab:https://git.example.com/api/v4`. A host may
//! carry a port, and an origin's `host:port` is looked up before its host
//! alone, so one machine can serve two forges on two ports.

use std::collections::HashMap;

use url::Url;

use super::{ForgeError, ForgeKind, ForgeRepo, Result};

/// The forges known without configuration; `FORGES` entries override them.
const KNOWN: [(&str, ForgeKind, &str); 3] = [
    ("github.com", ForgeKind::GitHub, "https://api.github.com"),
    ("gitlab.com", ForgeKind::GitLab, "https://gitlab.com/api/v4"),
    (
        "codeberg.org",
        ForgeKind::Gitea,
        "https://codeberg.org/api/v1",
    ),
];

/// A bad `FORGES` entry: which one (1-based, with its host when it has one;
/// the API base is not echoed, so a credential pasted there stays out of
/// the log) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FORGES entry {index}{}: {problem}", host.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct ForgesError {
    pub index: usize,
    pub host: Option<String>,
    pub problem: EntryProblem,
}

/// What is wrong with a `FORGES` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("expected host=kind:api_base")]
    Shape,
    #[error("the host is not a host name, an IP address or either with a port")]
    Host,
    #[error("unknown forge kind `{0}`: expected github, gitlab, gitea or forgejo")]
    Kind(String),
    #[error("the API base is not an http or https URL")]
    ApiBase,
    #[error("the API base may not carry credentials, a query or a fragment")]
    ApiBaseExtras,
    #[error("the host is listed twice")]
    Duplicate,
}

/// One forge's API.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Forge {
    kind: ForgeKind,
    api_base: Url,
}

/// The forges the backend may open pull requests on, by host (`host` or
/// `host:port`, normalised as URLs normalise them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forges {
    by_host: HashMap<String, Forge>,
}

impl Forges {
    /// Reads the value of `FORGES`; empty means only the known forges.
    pub(crate) fn parse(value: &str) -> Result<Self, ForgesError> {
        let mut by_host = HashMap::new();
        for (host, kind, api_base) in KNOWN {
            // The known bases are constants that parse.
            if let Ok(api_base) = Url::parse(api_base) {
                by_host.insert(host.to_owned(), Forge { kind, api_base });
            }
        }
        let mut configured = Vec::new();
        // Blank entries (a trailing comma) are allowed.
        let entries = value.split(',').map(str::trim).filter(|e| !e.is_empty());
        for (index, entry) in entries.enumerate() {
            let index = index + 1;
            let fail = |host: Option<&str>, problem| ForgesError {
                index,
                host: host.map(str::to_owned),
                problem,
            };
            let (host, rest) = entry
                .split_once('=')
                .ok_or_else(|| fail(None, EntryProblem::Shape))?;
            let host = host.trim();
            let key = host_key(host).ok_or_else(|| fail(Some(host), EntryProblem::Host))?;
            let (kind, api_base) = rest
                .split_once(':')
                .ok_or_else(|| fail(Some(host), EntryProblem::Shape))?;
            let kind = match kind.trim().to_ascii_lowercase().as_str() {
                "github" => ForgeKind::GitHub,
                "gitlab" => ForgeKind::GitLab,
                "gitea" | "forgejo" => ForgeKind::Gitea,
                _ => return Err(fail(Some(host), EntryProblem::Kind(kind.trim().to_owned()))),
            };
            let api_base = parse_api_base(api_base.trim()).map_err(|p| fail(Some(host), p))?;
            if configured.contains(&key) {
                return Err(fail(Some(host), EntryProblem::Duplicate));
            }
            configured.push(key.clone());
            by_host.insert(key, Forge { kind, api_base });
        }
        Ok(Self { by_host })
    }

    /// The forge repository an origin URL names: `https://host[:port]/owner/repo(.git)`,
    /// `http://…`, `ssh://git@host[:port]/owner/repo.git` or scp-like
    /// `git@host:owner/repo.git`. GitHub and Gitea paths are `owner/repo`;
    /// GitLab's may have nested groups.
    pub(crate) fn for_origin(&self, origin_url: &str) -> Result<ForgeRepo> {
        let origin = parse_origin(origin_url.trim())?;
        let with_port = origin.port.map(|port| format!("{}:{port}", origin.host));
        let forge = with_port
            .as_ref()
            .and_then(|key| self.by_host.get(key))
            .or_else(|| self.by_host.get(&origin.host))
            .ok_or_else(|| ForgeError::UnknownForge {
                host: with_port.clone().unwrap_or_else(|| origin.host.clone()),
            })?;
        let fits = match forge.kind {
            ForgeKind::GitHub | ForgeKind::Gitea => origin.segments.len() == 2,
            ForgeKind::GitLab => origin.segments.len() >= 2,
        };
        if !fits {
            return Err(ForgeError::BadOrigin(match forge.kind {
                ForgeKind::GitLab => "the path is not group/repo",
                _ => "the path is not owner/repo",
            }));
        }
        Ok(ForgeRepo {
            kind: forge.kind,
            api_base: forge.api_base.clone(),
            segments: origin.segments,
        })
    }
}

/// `host` or `host:port` in one form: lower case, IP addresses canonical,
/// IPv6 in brackets. `None` when it is not a host.
fn host_key(text: &str) -> Option<String> {
    let (host, port) = match text.strip_prefix('[') {
        Some(inner) => {
            let (address, after) = inner.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (format!("[{address}]"), port)
        }
        None => match text.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (text.to_owned(), None),
        },
    };
    let host = normal_host(&host)?;
    match port {
        None => Some(host),
        Some(port) => {
            let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
            Some(format!("{host}:{port}"))
        }
    }
}

/// A host as a URL parser reads it (`GitHub.COM` → `github.com`, `127.1` →
/// `127.0.0.1`), or `None` when it is no host.
fn normal_host(host: &str) -> Option<String> {
    // The parser refuses an empty host and one with `/`, `@`, `:` (outside
    // IPv6 brackets) or spaces.
    url::Host::parse(host).ok().map(|h| h.to_string())
}

fn parse_api_base(text: &str) -> Result<Url, EntryProblem> {
    let url = Url::parse(text).map_err(|_| EntryProblem::ApiBase)?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(EntryProblem::ApiBase);
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(EntryProblem::ApiBaseExtras);
    }
    Ok(url)
}

/// An origin URL's host, port and repository path segments.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    host: String,
    port: Option<u16>,
    segments: Vec<String>,
}

fn parse_origin(origin: &str) -> Result<Origin> {
    // A URL parser reads `\` as `/` in http(s) URLs and drops `.` and `..`
    // segments; the path is read from the text as given instead, so a
    // backslash has no meaning to guess at.
    if origin.contains('\\') || origin.chars().any(char::is_control) {
        return Err(ForgeError::BadOrigin(
            "it holds a backslash or a control character",
        ));
    }
    match origin.split_once("://") {
        Some((_, rest)) => {
            let url = Url::parse(origin).map_err(|_| ForgeError::BadOrigin("it is not a URL"))?;
            if !matches!(url.scheme(), "http" | "https" | "ssh") {
                return Err(ForgeError::BadOrigin(
                    "the scheme is not http, https or ssh",
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(ForgeError::BadOrigin("it has a query or a fragment"));
            }
            // ssh URLs' hosts are opaque to the parser: normalise them here.
            let host = url
                .host_str()
                .and_then(normal_host)
                .ok_or(ForgeError::BadOrigin("it has no host"))?;
            // The authority holds no `/` (the parser accepted it), so the
            // path starts at the first one.
            let path = rest.find('/').map_or("", |start| &rest[start..]);
            Ok(Origin {
                host,
                port: url.port(),
                segments: repository_segments(path, true)?,
            })
        }
        None => {
            // scp-like: `[user@]host:path`, where the host holds no `/`.
            let (authority, path) = split_scp(origin).ok_or(ForgeError::BadOrigin(
                "it is neither a URL nor user@host:path",
            ))?;
            let host = authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host);
            let host = normal_host(host).ok_or(ForgeError::BadOrigin("it has no host"))?;
            Ok(Origin {
                host,
                port: None,
                segments: repository_segments(path, false)?,
            })
        }
    }
}

/// `(user@host, path)` of `user@host:path`; the host may be `[IPv6]`.
fn split_scp(origin: &str) -> Option<(&str, &str)> {
    let colon = match origin.find('[') {
        Some(open) if !origin[..open].contains([':', '/']) => {
            let close = open + origin[open..].find(']')?;
            close + 1 + origin[close + 1..].find(':')?
        }
        _ => origin.find(':')?,
    };
    let (authority, path) = (&origin[..colon], &origin[colon + 1..]);
    (!authority.is_empty() && !authority.contains('/')).then_some((authority, path))
}

/// The repository's path segments: one leading `/` and any trailing ones
/// dropped, then `.git`; every segment non-empty and neither `.` nor `..`.
/// URL paths are percent-decoded (as the forge would), and a segment that
/// decodes to something with a `/` is refused: it is no repository name.
fn repository_segments(path: &str, decode: bool) -> Result<Vec<String>> {
    let path = path.strip_prefix('/').unwrap_or(path).trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    if path.is_empty() {
        return Err(ForgeError::BadOrigin("it names no repository"));
    }
    path.split('/')
        .map(|raw| {
            let segment = if decode {
                percent_encoding::percent_decode_str(raw)
                    .decode_utf8()
                    .map_err(|_| ForgeError::BadOrigin("a path segment is not UTF-8"))?
                    .into_owned()
            } else {
                raw.to_owned()
            };
            match segment.as_str() {
                "" => Err(ForgeError::BadOrigin("the path has an empty segment")),
                "." | ".." => Err(ForgeError::BadOrigin("the path has a `.` or `..` segment")),
                s if s.contains(['/', '\\']) || s.chars().any(char::is_control) => {
                    Err(ForgeError::BadOrigin(
                        "a path segment holds an encoded slash or control character",
                    ))
                }
                _ => Ok(segment),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_error(value: &str) -> ForgesError {
        Forges::parse(value).unwrap_err()
    }

    fn bad(index: usize, host: Option<&str>, problem: EntryProblem) -> ForgesError {
        ForgesError {
            index,
            host: host.map(str::to_owned),
            problem,
        }
    }

    fn repo(kind: ForgeKind, api_base: &str, segments: &[&str]) -> ForgeRepo {
        ForgeRepo {
            kind,
            api_base: Url::parse(api_base).unwrap(),
            segments: segments.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_known_forges_need_no_configuration() {
        let forges = Forges::parse("").unwrap();

        assert_eq!(
            forges
                .for_origin("https://github.com/acme/widgets")
                .unwrap(),
            repo(
                ForgeKind::GitHub,
                "https://api.github.com",
                &["acme", "widgets"]
            )
        );
        assert_eq!(
            forges
                .for_origin("https://gitlab.com/acme/tools/widgets.git")
                .unwrap(),
            repo(
                ForgeKind::GitLab,
                "https://gitlab.com/api/v4",
                &["acme", "tools", "widgets"]
            )
        );
        assert_eq!(
            forges
                .for_origin("https://codeberg.org/acme/widgets")
                .unwrap(),
            repo(
                ForgeKind::Gitea,
                "https://codeberg.org/api/v1",
                &["acme", "widgets"]
            )
        );
    }

    #[test]
    fn forges_entries_add_hosts_and_override_known_ones() {
        let forges = Forges::parse(
            " git.example.com=gitlab:https://git.example.com/api/v4/ , \
             GitHub.com=github:https://ghe.example.com/api/v3,\
             127.0.0.1:8080=forgejo:http://127.0.0.1:9000/api/v1,",
        )
        .unwrap();

        let gitlab = forges
            .for_origin("https://git.example.com/g/sub/r")
            .unwrap();
        assert_eq!(gitlab.kind(), ForgeKind::GitLab);
        assert_eq!(
            gitlab.api_base().as_str(),
            "https://git.example.com/api/v4/"
        );
        assert_eq!(gitlab.path(), "g/sub/r");
        assert_eq!(
            forges
                .for_origin("https://github.com/o/r")
                .unwrap()
                .api_base()
                .as_str(),
            "https://ghe.example.com/api/v3"
        );
        let gitea = forges.for_origin("http://127.0.0.1:8080/o/r.git").unwrap();
        assert_eq!(
            (gitea.kind(), gitea.api_base().as_str()),
            (ForgeKind::Gitea, "http://127.0.0.1:9000/api/v1")
        );
    }

    #[test]
    fn host_and_port_match_before_the_host_alone() {
        let forges = Forges::parse(
            "forge.test=gitea:https://forge.test/api/v1,forge.test:8443=gitlab:https://forge.test:8443/api/v4",
        )
        .unwrap();

        assert_eq!(
            forges
                .for_origin("https://forge.test:8443/g/r")
                .unwrap()
                .kind(),
            ForgeKind::GitLab
        );
        // Another port of the same host falls back to the host's entry.
        assert_eq!(
            forges
                .for_origin("ssh://git@forge.test:2222/o/r.git")
                .unwrap()
                .kind(),
            ForgeKind::Gitea
        );
        assert_eq!(
            forges.for_origin("git@forge.test:o/r.git").unwrap().kind(),
            ForgeKind::Gitea
        );
    }

    #[test]
    fn each_kind_of_bad_entry_is_named_with_its_reason() {
        let cases = [
            ("gitlab.test", bad(1, None, EntryProblem::Shape)),
            (
                "a.test=gitea:https://a.test,b.test",
                bad(2, None, EntryProblem::Shape),
            ),
            (
                "=github:https://x.test",
                bad(1, Some(""), EntryProblem::Host),
            ),
            (
                "x.test/api=github:https://x.test",
                bad(1, Some("x.test/api"), EntryProblem::Host),
            ),
            (
                "x.test:99999=github:https://x.test",
                bad(1, Some("x.test:99999"), EntryProblem::Host),
            ),
            (
                "user@x.test=github:https://x.test",
                bad(1, Some("user@x.test"), EntryProblem::Host),
            ),
            ("x.test=github", bad(1, Some("x.test"), EntryProblem::Shape)),
            (
                "x.test=bitbucket:https://x.test",
                bad(1, Some("x.test"), EntryProblem::Kind("bitbucket".into())),
            ),
            (
                "x.test=github:x.test/api",
                bad(1, Some("x.test"), EntryProblem::ApiBase),
            ),
            (
                "x.test=github:ftp://x.test/api",
                bad(1, Some("x.test"), EntryProblem::ApiBase),
            ),
            (
                "x.test=github:https://me:secret@x.test/api",
                bad(1, Some("x.test"), EntryProblem::ApiBaseExtras),
            ),
            (
                "x.test=github:https://x.test/api?a=b",
                bad(1, Some("x.test"), EntryProblem::ApiBaseExtras),
            ),
            (
                "X.test=github:https://x.test,x.TEST=gitea:https://x.test",
                bad(2, Some("x.TEST"), EntryProblem::Duplicate),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(entry_error(value), expected, "{value}");
        }
        assert_eq!(
            entry_error("x.test=gitee:https://x.test").to_string(),
            "FORGES entry 1 (x.test): unknown forge kind `gitee`: expected github, gitlab, gitea or forgejo"
        );
        // A credential in the API base is not echoed.
        let message = entry_error("x.test=github:https://me:secret@x.test/api").to_string();
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn every_origin_form_names_the_same_repository() {
        let forges = Forges::parse("forge.test=github:https://forge.test/api/v3").unwrap();
        for origin in [
            "https://forge.test/acme/widgets",
            "https://forge.test/acme/widgets.git",
            "https://forge.test/acme/widgets/",
            "https://forge.test/acme/widgets.git/",
            "https://user:pw@FORGE.test/acme/widgets",
            "http://forge.test/acme/widgets",
            "https://forge.test:443/acme/widgets",
            "ssh://git@forge.test/acme/widgets.git",
            "ssh://git@Forge.Test:22/acme/widgets.git",
            "git@forge.test:acme/widgets.git",
            "git@forge.test:/acme/widgets.git",
            "forge.test:acme/widgets",
            " https://forge.test/acme/wid%67ets ",
        ] {
            let found = forges
                .for_origin(origin)
                .unwrap_or_else(|e| panic!("{origin}: {e}"));
            assert_eq!(found.path(), "acme/widgets", "{origin}");
        }
    }

    #[test]
    fn an_unknown_host_says_to_add_it_to_forges() {
        let forges = Forges::parse("").unwrap();

        let error = forges
            .for_origin("https://git.corp.test:8443/a/b")
            .unwrap_err();
        assert!(
            matches!(&error, ForgeError::UnknownForge { host } if host == "git.corp.test:8443")
        );
        assert_eq!(
            error.to_string(),
            "no forge is configured for host git.corp.test:8443: add \
             `git.corp.test:8443=<github|gitlab|gitea>:<API base URL>` to FORGES"
        );
    }

    #[test]
    fn paths_that_are_not_one_repository_are_refused() {
        let forges = Forges::parse("").unwrap();
        for origin in [
            "https://github.com/acme/../widgets",
            "https://github.com/acme/%2e%2E/widgets",
            "https://github.com/acme/./widgets",
            "https://github.com/acme%2Fwidgets/x",
            "https://github.com/acme%2F..%2Fother/widgets",
            "https://github.com//acme/widgets",
            "https://github.com/acme//widgets",
            "https://github.com/acme/.git",
            "https://github.com/",
            "https://github.com",
            "https://github.com/acme",
            "https://github.com/acme/widgets/pulls",
            "https://github.com/acme/widgets?x=1",
            "https://github.com/acme/widgets#x",
            "https://github.com\\acme\\widgets",
            "git@github.com:acme/../widgets.git",
            "git@github.com:acme/widgets/..",
            "ftp://github.com/acme/widgets",
            "file:///srv/acme/widgets",
            "/srv/acme/widgets",
            "widgets",
        ] {
            let error = forges.for_origin(origin).unwrap_err();
            assert!(
                matches!(error, ForgeError::BadOrigin(_)),
                "{origin}: {error}"
            );
        }
        // GitLab takes nested groups, and still no `..`.
        assert!(forges.for_origin("https://gitlab.com/a/b/c/d").is_ok());
        assert!(forges.for_origin("https://gitlab.com/a/b/../d").is_err());
    }
}
