//! `RepoUrl`: a git remote we are willing to clone.
//!
//! Accepted: `https://`, `http://`, `ssh://`, `git://` URLs and scp-like
//! `user@host:path`; `file://` URLs and absolute local paths only when local
//! repositories are allowed. Refused always: `ext::` and other transport
//! helpers (they run commands), option-like values (`-u...`,
//! `--upload-pack=...`), control characters. Credentials in the URL are
//! taken out: the URL that is stored and shown never carries them.

use std::fmt;

use url::Url;

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

impl RepoUrl {
    pub fn parse(raw: &str, allow_local: bool) -> Result<Self, RepoUrlError> {
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
            if !helper.contains('/') && !helper.contains(':') {
                return Err(RepoUrlError::TransportHelper(helper.to_owned()));
            }
        }
        if raw.starts_with('/') {
            return Self::local(raw, allow_local);
        }
        if !raw.contains("://") {
            return Self::scp_like(raw);
        }
        let mut url = Url::parse(raw).map_err(|e| RepoUrlError::Malformed(e.to_string()))?;
        match url.scheme() {
            "https" | "http" | "ssh" | "git" => {}
            "file" => return Self::local(raw, allow_local),
            other => return Err(RepoUrlError::UnsupportedScheme(other.to_owned())),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(RepoUrlError::Malformed("it has no host".into()));
        }
        if url.host_str().is_some_and(|h| h.starts_with('-')) {
            return Err(RepoUrlError::OptionLike);
        }
        let token = url.password().map(decode);
        let username = (!url.username().is_empty()).then(|| decode(url.username()));
        let is_http = matches!(url.scheme(), "https" | "http");
        // A user name alone in an https URL is often the token itself
        // (https://TOKEN@github.com/...).
        let (username, token) = match (is_http, username, token) {
            (true, Some(user), None) => (None, Some(user)),
            (_, user, token) => (user, token),
        };
        if is_http {
            let _ = url.set_username("");
            let _ = url.set_password(None);
        } else {
            let _ = url.set_password(None);
        }
        Ok(Self {
            url: url.to_string(),
            token,
            username: if is_http { username } else { None },
            local: false,
        })
    }

    fn local(raw: &str, allow_local: bool) -> Result<Self, RepoUrlError> {
        if !allow_local {
            return Err(RepoUrlError::LocalNotAllowed);
        }
        Ok(Self {
            url: raw.to_owned(),
            token: None,
            username: None,
            local: true,
        })
    }

    /// `user@host:path/repo.git`: the form git reads as ssh.
    fn scp_like(raw: &str) -> Result<Self, RepoUrlError> {
        let Some((host_part, path)) = raw.split_once(':') else {
            return Err(RepoUrlError::Malformed(
                "expected a URL such as https://host/owner/repo.git".into(),
            ));
        };
        let host = host_part.rsplit('@').next().unwrap_or(host_part);
        if host.is_empty() || path.is_empty() || host.contains('/') {
            return Err(RepoUrlError::Malformed(
                "expected a URL such as https://host/owner/repo.git".into(),
            ));
        }
        Ok(Self {
            url: raw.to_owned(),
            token: None,
            username: None,
            local: false,
        })
    }

    /// The URL without credentials: what is cloned, stored and shown.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn is_local(&self) -> bool {
        self.local
    }

    pub fn is_http(&self) -> bool {
        self.url.starts_with("https://") || self.url.starts_with("http://")
    }

    /// Credentials that came inside the URL: (user name, token).
    pub fn embedded_credentials(&self) -> (Option<&str>, Option<&str>) {
        (self.username.as_deref(), self.token.as_deref())
    }
}

fn decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_of_every_supported_kind_are_accepted() {
        for raw in [
            "https://github.com/openai/codex.git",
            "http://127.0.0.1:8080/repo.git",
            "ssh://git@github.com/openai/codex.git",
            "git://example.org/repo.git",
            "git@github.com:openai/codex.git",
        ] {
            let url = RepoUrl::parse(raw, false).unwrap();
            assert_eq!(url.as_str(), raw);
        }
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
            (
                "ftp://example.org/r.git",
                RepoUrlError::UnsupportedScheme("ftp".into()),
            ),
            ("", RepoUrlError::Empty),
        ];
        for (raw, expected) in cases {
            assert_eq!(RepoUrl::parse(raw, true), Err(expected), "{raw}");
        }
    }

    #[test]
    fn local_repositories_need_permission() {
        assert_eq!(
            RepoUrl::parse("file:///srv/repo", false),
            Err(RepoUrlError::LocalNotAllowed)
        );
        assert_eq!(
            RepoUrl::parse("/srv/repo", false),
            Err(RepoUrlError::LocalNotAllowed)
        );
        assert!(RepoUrl::parse("file:///srv/repo", true).unwrap().is_local());
        assert!(RepoUrl::parse("/srv/repo", true).unwrap().is_local());
    }

    #[test]
    fn credentials_are_taken_out_of_the_url() {
        let url = RepoUrl::parse("https://user:s3cr%40t@example.org/r.git", false).unwrap();
        assert_eq!(url.as_str(), "https://example.org/r.git");
        assert_eq!(url.embedded_credentials(), (Some("user"), Some("s3cr@t")));
        assert!(!format!("{url:?}").contains("s3cr"));

        let token_only = RepoUrl::parse("https://ghp_abc@example.org/r.git", false).unwrap();
        assert_eq!(token_only.as_str(), "https://example.org/r.git");
        assert_eq!(token_only.embedded_credentials(), (None, Some("ghp_abc")));
    }
}
