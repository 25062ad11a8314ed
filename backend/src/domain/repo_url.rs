//! `RepoUrl`: a git remote we are willing to clone.
//!
//! Accepted: `https://`, `http://`, `ssh://`, `git://` URLs and scp-like
//! `user@host:path`; `file://` URLs and absolute local paths only when local
//! repositories are allowed. Refused always: `ext::` and other transport
//! helpers (they run commands), option-like values (`-u...`,
//! `--upload-pack=...`, a host or path starting with `-`), control
//! characters, relative paths (libgit2 would clone an existing one from the
//! backend's own disk), and hosts the [`ClonePolicy`] refuses. Credentials
//! in the URL are taken out: the URL that is stored and shown never carries
//! them. An scp-like remote is handed to libgit2 as an `ssh://` URL, so it
//! can never be read as a local path.

use std::fmt;

use url::Url;

use super::clone_host::{classify, ClonePolicy, HostKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoUrlError {
    #[error("repo_url must not be empty")]
    Empty,
    #[error("repo_url must not start with '-' (it would be read as an option)")]
    OptionLike,
    #[error("repo_url must not contain spaces or control characters")]
    ControlCharacters,
    #[error(
        "repo_url uses a transport helper ({0}::), which can run commands; it is never allowed"
    )]
    TransportHelper(String),
    #[error("repo_url scheme {0:?} is not supported; use https, http, ssh or git")]
    UnsupportedScheme(String),
    #[error("local repositories (file:// or a path) are not allowed here; set ALLOW_LOCAL_REPOS=true to allow them")]
    LocalNotAllowed,
    #[error("repo_url is not a valid URL: {0}")]
    Malformed(String),
    #[error("repo_url is longer than 2048 characters")]
    TooLong,
    #[error("repo_url points at a loopback, private or otherwise internal address ({0}); the operator can allow it with ALLOWED_CLONE_HOSTS or ALLOW_PRIVATE_CLONE_HOSTS=true")]
    InternalHost(String),
}

/// A remote to clone, without credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct RepoUrl {
    /// What libgit2 is given and what is stored: credentials removed.
    url: String,
    /// A password or token found in the URL, if any.
    token: Option<String>,
    /// A user name found in an http(s) URL, if any.
    username: Option<String>,
    /// What libgit2 is given: `url`, or an `ssh://` URL for an scp-like
    /// remote, or the path of a local repository.
    fetch: String,
    /// The host and port a remote clone connects to.
    endpoint: Option<(HostKind, u16)>,
    local: bool,
}

impl fmt::Debug for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepoUrl")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

const EXPECTED: &str = "expected a URL such as https://host/owner/repo.git";

impl RepoUrl {
    pub(crate) fn parse(
        raw: &str,
        allow_local: bool,
        policy: &ClonePolicy,
    ) -> Result<Self, RepoUrlError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(RepoUrlError::Empty);
        }
        if raw.len() > 2048 {
            return Err(RepoUrlError::TooLong);
        }
        if raw.starts_with('-') {
            return Err(RepoUrlError::OptionLike);
        }
        if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(RepoUrlError::ControlCharacters);
        }
        if let Some((helper, _)) = raw.split_once("::") {
            // git's `<transport>::<address>`: a bare name before `::`.
            if helper
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-_".contains(c))
            {
                return Err(RepoUrlError::TransportHelper(helper.to_owned()));
            }
        }
        // `file:`, `FILE://`, `File:/x`: every spelling of a local URL.
        if raw
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case("file:"))
        {
            return Self::local_url(raw, allow_local);
        }
        if raw.starts_with('/') {
            return Self::local_path(raw, allow_local);
        }
        if !raw.contains("://") {
            return Self::scp_like(raw, policy);
        }
        let mut url = Url::parse(raw).map_err(|e| RepoUrlError::Malformed(e.to_string()))?;
        match url.scheme() {
            "https" | "http" | "ssh" | "git" => {}
            other => return Err(RepoUrlError::UnsupportedScheme(other.to_owned())),
        }
        let host = url.host_str().unwrap_or_default();
        if host.is_empty() {
            return Err(RepoUrlError::Malformed("it has no host".into()));
        }
        if host.starts_with('-') {
            return Err(RepoUrlError::OptionLike);
        }
        let kind = checked_host(host, policy)?;
        let port = url.port_or_known_default().unwrap_or(match url.scheme() {
            "ssh" => 22,
            _ => 9418,
        });
        let token = url.password().map(decode);
        let username = (!url.username().is_empty()).then(|| decode(url.username()));
        let is_http = matches!(url.scheme(), "https" | "http");
        // A user name alone in an https URL is often the token itself
        // (https://TOKEN@github.com/...).
        let (username, token) = match (is_http, username, token) {
            (true, Some(user), None) => (None, Some(user)),
            (_, user, token) => (user, token),
        };
        // Both fail only for a URL that cannot have credentials; keeping
        // them would store a secret, so that is a refusal.
        let stripped = (!is_http || url.set_username("").is_ok()) && url.set_password(None).is_ok();
        if !stripped {
            return Err(RepoUrlError::Malformed(
                "its credentials cannot be taken out".into(),
            ));
        }
        let url = url.to_string();
        Ok(Self {
            fetch: url.clone(),
            url,
            token,
            username: if is_http { username } else { None },
            endpoint: Some((kind, port)),
            local: false,
        })
    }

    fn local_url(raw: &str, allow_local: bool) -> Result<Self, RepoUrlError> {
        if !allow_local {
            return Err(RepoUrlError::LocalNotAllowed);
        }
        let url = Url::parse(raw).map_err(|e| RepoUrlError::Malformed(e.to_string()))?;
        let path = url.to_file_path().map_err(|()| {
            RepoUrlError::Malformed("a file URL must name an absolute path".into())
        })?;
        Self::local_path(&path.to_string_lossy(), allow_local)
    }

    fn local_path(path: &str, allow_local: bool) -> Result<Self, RepoUrlError> {
        if !allow_local {
            return Err(RepoUrlError::LocalNotAllowed);
        }
        Ok(Self {
            url: format!("file://{path}"),
            fetch: path.to_owned(),
            token: None,
            username: None,
            endpoint: None,
            local: true,
        })
    }

    /// `[user[:password]@]host:path`: the form git reads as ssh. The host must
    /// be a host name or an IP address, never a path; the password is dropped.
    fn scp_like(raw: &str, policy: &ClonePolicy) -> Result<Self, RepoUrlError> {
        let malformed =
            || RepoUrlError::Malformed(format!("{EXPECTED} (relative paths are not accepted)"));
        // The user part, if any, ends at the first '@' and holds no '/'.
        let (user, rest) = match raw.split_once('@') {
            Some((user, rest)) if !user.contains('/') => (Some(user), rest),
            _ => (None, raw),
        };
        let user = user.map(|u| u.split_once(':').map_or(u, |(name, _password)| name));
        if let Some(user) = user {
            if user.is_empty()
                || user.starts_with('-')
                || !user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(malformed());
            }
        }
        let (host, path) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (inside, after) = bracketed.split_once(']').ok_or_else(malformed)?;
            let path = after.strip_prefix(':').ok_or_else(malformed)?;
            (format!("[{inside}]"), path)
        } else {
            let (host, path) = rest.split_once(':').ok_or_else(malformed)?;
            (host.to_owned(), path)
        };
        if host.starts_with('-') || path.starts_with('-') {
            return Err(RepoUrlError::OptionLike);
        }
        let valid_name = |h: &str| {
            !h.is_empty()
                && h.split('.').all(|label| {
                    !label.is_empty()
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        };
        if path.is_empty() || !(host.starts_with('[') || valid_name(&host)) {
            return Err(malformed());
        }
        let kind = checked_host(&host, policy)?;
        let user_at = user.map(|u| format!("{u}@")).unwrap_or_default();
        // git reads a relative scp path from the user's home: `/~/` in a URL.
        let url_path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/~/{path}")
        };
        Ok(Self {
            url: format!("{user_at}{host}:{path}"),
            fetch: format!("ssh://{user_at}{host}{url_path}"),
            token: None,
            username: None,
            endpoint: Some((kind, 22)),
            local: false,
        })
    }

    /// The URL without credentials: what is stored and shown.
    pub(crate) fn as_str(&self) -> &str {
        &self.url
    }

    /// What libgit2 clones: the URL, an scp-like remote as `ssh://`, or a
    /// local repository's path.
    pub(crate) fn fetch_url(&self) -> &str {
        &self.fetch
    }

    /// The host and port a remote clone connects to; `None` for a local one.
    pub(crate) fn endpoint(&self) -> Option<&(HostKind, u16)> {
        self.endpoint.as_ref()
    }

    pub(crate) fn is_local(&self) -> bool {
        self.local
    }

    pub(crate) fn is_http(&self) -> bool {
        self.url.starts_with("https://") || self.url.starts_with("http://")
    }

    /// Credentials that came inside the URL: (user name, token).
    pub(crate) fn embedded_credentials(&self) -> (Option<&str>, Option<&str>) {
        (self.username.as_deref(), self.token.as_deref())
    }
}

/// The host as the policy sees it; refused when it names an internal address.
fn checked_host(host: &str, policy: &ClonePolicy) -> Result<HostKind, RepoUrlError> {
    let kind = classify(host)
        .ok_or_else(|| RepoUrlError::Malformed(format!("{host:?} is not a host name")))?;
    if !policy.allows_host(&kind) {
        return Err(RepoUrlError::InternalHost(host.to_owned()));
    }
    Ok(kind)
}

/// Percent-decoding only: `+` is a plus in a URL's user info, not a space.
fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public() -> ClonePolicy {
        ClonePolicy::default()
    }

    fn parse(raw: &str) -> Result<RepoUrl, RepoUrlError> {
        RepoUrl::parse(raw, false, &public())
    }

    #[test]
    fn remotes_of_every_supported_kind_are_accepted() {
        for raw in [
            "https://github.com/openai/codex.git",
            "http://example.org:8080/repo.git",
            "ssh://git@github.com/openai/codex.git",
            "git://example.org/repo.git",
            "git@github.com:openai/codex.git",
        ] {
            let url = parse(raw).unwrap();
            assert_eq!(url.as_str(), raw);
        }
        let open = ClonePolicy::new(true, "");
        let local = RepoUrl::parse("http://127.0.0.1:8080/repo.git", false, &open).unwrap();
        assert_eq!(local.as_str(), "http://127.0.0.1:8080/repo.git");
    }

    #[test]
    fn dangerous_values_are_refused_even_when_local_is_allowed() {
        let cases = [
            (
                "ext::sh -c touch% /tmp/pwned",
                RepoUrlError::ControlCharacters,
            ),
            ("ext::sh", RepoUrlError::TransportHelper("ext".into())),
            ("fd::17", RepoUrlError::TransportHelper("fd".into())),
            ("-uevil", RepoUrlError::OptionLike),
            ("--upload-pack=touch /tmp/x", RepoUrlError::OptionLike),
            ("-oProxyCommand=touch:x", RepoUrlError::OptionLike),
            ("git@-oProxyCommand=touch:x", RepoUrlError::OptionLike),
            ("host:-x", RepoUrlError::OptionLike),
            (
                "ftp://example.org/r.git",
                RepoUrlError::UnsupportedScheme("ftp".into()),
            ),
            ("", RepoUrlError::Empty),
        ];
        for (raw, expected) in cases {
            assert_eq!(RepoUrl::parse(raw, true, &public()), Err(expected), "{raw}");
        }
    }

    #[test]
    fn local_repositories_need_permission_in_every_spelling() {
        for raw in [
            "file:///srv/repo",
            "FILE:///srv/repo",
            "File:/srv/repo",
            "/srv/repo",
        ] {
            assert_eq!(parse(raw), Err(RepoUrlError::LocalNotAllowed), "{raw}");
            let url = RepoUrl::parse(raw, true, &public()).unwrap();
            assert!(url.is_local(), "{raw}");
            assert_eq!(url.fetch_url(), "/srv/repo");
        }
    }

    #[test]
    fn a_relative_path_is_never_a_remote() {
        // The attack: a symlink named like an scp remote inside another
        // session's workspace, named by a path relative to the backend's
        // working directory.
        for raw in [
            "ws/1234/repo/l@127.0.0.1:x",
            "./repo",
            "repo",
            "../x:y",
            "a/b:c",
        ] {
            for allow_local in [false, true] {
                let refused = RepoUrl::parse(raw, allow_local, &ClonePolicy::new(true, ""));
                assert!(
                    matches!(refused, Err(RepoUrlError::Malformed(_))),
                    "{raw}: {refused:?}"
                );
            }
        }
    }

    #[test]
    fn scp_remotes_go_to_libgit2_as_ssh_urls_without_passwords() {
        let url = parse("bob:SECRET@example.org:team/repo.git").unwrap();
        assert_eq!(url.as_str(), "bob@example.org:team/repo.git");
        assert_eq!(url.fetch_url(), "ssh://bob@example.org/~/team/repo.git");
        assert!(!format!("{url:?}").contains("SECRET"));
        let absolute = parse("git@example.org:/srv/repo.git").unwrap();
        assert_eq!(absolute.fetch_url(), "ssh://git@example.org/srv/repo.git");
    }

    #[test]
    fn internal_addresses_are_refused_in_every_spelling() {
        for raw in [
            "http://127.0.0.1/r.git",
            "http://127.1/r.git",
            "http://2130706433/r.git",
            "http://0x7f.1/r.git",
            "http://0177.0.0.1/r.git",
            "http://0.0.0.0/r.git",
            "http://localhost:5432/r.git",
            "https://[::1]/r.git",
            "https://[::ffff:127.0.0.1]/r.git",
            "git://10.0.0.1/r.git",
            "ssh://git@169.254.169.254/r.git",
            "ssh://git@0x7f.1/r.git",
            "git@127.0.0.1:r.git",
            "git@2130706433:r.git",
            "git@[::1]:r.git",
            "git@localhost:r.git",
        ] {
            assert!(
                matches!(parse(raw), Err(RepoUrlError::InternalHost(_))),
                "{raw}: {:?}",
                parse(raw)
            );
        }
        let listed = ClonePolicy::new(false, "127.0.0.1");
        assert!(RepoUrl::parse("http://127.1:9/r.git", false, &listed).is_ok());
    }

    #[test]
    fn credentials_are_taken_out_of_the_url() {
        let url = parse("https://user:s3cr%40t@example.org/r.git").unwrap();
        assert_eq!(url.as_str(), "https://example.org/r.git");
        assert_eq!(url.embedded_credentials(), (Some("user"), Some("s3cr@t")));
        assert!(!format!("{url:?}").contains("s3cr"));

        let token_only = parse("https://ghp_abc@example.org/r.git").unwrap();
        assert_eq!(token_only.as_str(), "https://example.org/r.git");
        assert_eq!(token_only.embedded_credentials(), (None, Some("ghp_abc")));
    }

    #[test]
    fn a_plus_in_credentials_stays_a_plus() {
        let url = parse("https://user:a+b%2Bc@example.org/r.git").unwrap();
        assert_eq!(url.embedded_credentials(), (Some("user"), Some("a+b+c")));
        let ssh = parse("ssh://git:pa+ss@example.org/r.git").unwrap();
        assert_eq!(ssh.as_str(), "ssh://git@example.org/r.git");
    }
}
