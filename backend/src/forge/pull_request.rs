//! Opening a pull request: one `POST` in the forge's own words (GitHub's
//! pulls, GitLab's merge requests, Gitea's pulls), and the forge's answer
//! read back into a number and a web URL, or into a [`ForgeError`] that
//! passes on the forge's own message.
//!
//! Drafts: GitHub has a `draft` field; GitLab and Gitea mark a draft by a
//! title prefix (`Draft: `, GitLab's documented one; `WIP: `, Gitea's
//! default), which is how their own web pages make one.
//!
//! The answer is read up to [`MAX_ANSWER_BYTES`], and the forge's message
//! is cut to [`MAX_MESSAGE_CHARS`]: a forge (or whatever answers in its
//! place) decides neither how much memory the backend spends nor how long
//! an error message is. The token travels only in a header marked
//! sensitive, and is cut out of any message the forge echoes it in.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::{ForgeError, ForgeKind, ForgeRepo, Result};

/// Longest answer read from a forge.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Longest forge message passed on in an error.
const MAX_MESSAGE_CHARS: usize = 1024;

/// GitHub's REST API version this module speaks.
const GITHUB_API_VERSION: &str = "2022-11-28";

/// A pull request to open from a branch to another of the same repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub title: String,
    pub body: Option<String>,
    /// The branch with the changes, on the same repository.
    pub head: String,
    /// The branch to merge into.
    pub base: String,
    pub draft: bool,
}

/// A pull request the forge opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// GitHub's and Gitea's `number`, GitLab's `iid`: what the forge shows
    /// as `#12` or `!12`.
    pub number: u64,
    /// The pull request's web page.
    pub url: String,
}

/// GitHub's `POST /repos/{owner}/{repo}/pulls` body.
#[derive(Serialize)]
struct GitHubCreate<'a> {
    title: &'a str,
    head: &'a str,
    base: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    draft: bool,
}

/// GitLab's `POST /projects/{id}/merge_requests` body.
#[derive(Serialize)]
struct GitLabCreate<'a> {
    source_branch: &'a str,
    target_branch: &'a str,
    title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

/// Gitea's `POST /repos/{owner}/{repo}/pulls` body.
#[derive(Serialize)]
struct GiteaCreate<'a> {
    title: String,
    head: &'a str,
    base: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
}

/// GitHub's and Gitea's answer (the fields used).
#[derive(Deserialize)]
struct NumberedAnswer {
    number: u64,
    html_url: String,
}

/// GitLab's answer (the fields used).
#[derive(Deserialize)]
struct MergeRequestAnswer {
    iid: u64,
    web_url: String,
}

impl ForgeRepo {
    /// Opens `request` on the forge with `token`. `client` should come from
    /// [`super::client`], whose timeout bounds the whole exchange.
    #[tracing::instrument(
        skip_all,
        fields(forge = %self.kind, repository = %self.path(), head = %request.head)
    )]
    pub(crate) async fn open_pull_request(
        &self,
        client: &reqwest::Client,
        request: &PullRequest,
        token: &str,
    ) -> Result<Opened> {
        let builder = client.post(self.endpoint()?).headers(self.headers(token)?);
        let body = request.body.as_deref();
        let builder = match self.kind {
            ForgeKind::GitHub => builder.json(&GitHubCreate {
                title: &request.title,
                head: &request.head,
                base: &request.base,
                body,
                draft: request.draft,
            }),
            ForgeKind::GitLab => builder.json(&GitLabCreate {
                source_branch: &request.head,
                target_branch: &request.base,
                title: draft_title(request, "Draft: ", &["draft:", "[draft]", "(draft)"]),
                description: body,
            }),
            ForgeKind::Gitea => builder.json(&GiteaCreate {
                title: draft_title(request, "WIP: ", &["wip:", "[wip]"]),
                head: &request.head,
                base: &request.base,
                body,
            }),
        };
        let response = builder
            .send()
            .await
            .map_err(|e| ForgeError::Unavailable(describe(&e)))?;
        let status = response.status();
        let answer = read_bounded(response).await;
        if status.is_success() {
            let answer = answer
                .map_err(|e| ForgeError::Unavailable(describe(&e)))?
                .ok_or_else(|| {
                    ForgeError::Unavailable(format!(
                        "the forge's answer is longer than {MAX_ANSWER_BYTES} bytes"
                    ))
                })?;
            let opened = self.opened(&answer)?;
            tracing::info!(number = opened.number, url = %opened.url, "pull request opened");
            return Ok(opened);
        }
        // An error's answer only adds detail: without it the status speaks.
        let message = answer
            .ok()
            .flatten()
            .map(|answer| forge_message(&answer, token))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| status.to_string());
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ForgeError::Refused(message),
            StatusCode::BAD_REQUEST | StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => {
                ForgeError::Rejected(message)
            }
            StatusCode::NOT_FOUND => ForgeError::NotFound {
                repository: self.path(),
                message,
            },
            status if status.is_redirection() => ForgeError::Unavailable(format!(
                "the forge answered {status}, a redirect, which is not followed: \
                 is the API base in FORGES the API's own URL?"
            )),
            status => ForgeError::Unavailable(format!("the forge answered {status}: {message}")),
        })
    }

    /// The create call's URL: the path's segments go through the `url`
    /// crate's segment encoder, which encodes `/`, `%`, `?` and `#`.
    fn endpoint(&self) -> Result<Url> {
        // The encoder drops `.` and `..` segments without a word, which
        // would name another repository: refuse them, though `for_origin`
        // already has.
        if self
            .segments
            .iter()
            .any(|s| matches!(s.as_str(), "" | "." | ".."))
        {
            return Err(ForgeError::BadOrigin(
                "the path has an empty, `.` or `..` segment",
            ));
        }
        let mut url = self.api_base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| {
                ForgeError::Unavailable("the API base cannot take a path".to_owned())
            })?;
            // A base given with a trailing slash ends in an empty segment.
            path.pop_if_empty();
            match self.kind {
                ForgeKind::GitHub | ForgeKind::Gitea => {
                    path.push("repos").extend(&self.segments).push("pulls");
                }
                // GitLab names a project by its whole path in one segment
                // (`group%2Frepo`).
                ForgeKind::GitLab => {
                    path.push("projects")
                        .push(&self.path())
                        .push("merge_requests");
                }
            }
        }
        Ok(url)
    }

    /// The forge's token header and what else it asks for.
    fn headers(&self, token: &str) -> Result<HeaderMap> {
        let secret = |text: String| {
            HeaderValue::from_str(&text)
                .map(|mut value| {
                    // Kept out of hyper's and reqwest's debug output.
                    value.set_sensitive(true);
                    value
                })
                .map_err(|_| {
                    ForgeError::Refused(
                        "the token holds characters an HTTP header cannot carry".to_owned(),
                    )
                })
        };
        let mut headers = HeaderMap::new();
        match self.kind {
            ForgeKind::GitHub => {
                headers.insert(AUTHORIZATION, secret(format!("Bearer {token}"))?);
                headers.insert(
                    ACCEPT,
                    HeaderValue::from_static("application/vnd.github+json"),
                );
                headers.insert(
                    HeaderName::from_static("x-github-api-version"),
                    HeaderValue::from_static(GITHUB_API_VERSION),
                );
            }
            ForgeKind::GitLab => {
                headers.insert(
                    HeaderName::from_static("private-token"),
                    secret(token.to_owned())?,
                );
                headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
            }
            ForgeKind::Gitea => {
                headers.insert(AUTHORIZATION, secret(format!("token {token}"))?);
                headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
            }
        }
        Ok(headers)
    }

    /// The number and web URL in a success answer.
    fn opened(&self, answer: &[u8]) -> Result<Opened> {
        let unexpected = |_| {
            ForgeError::Unavailable(
                "the forge's answer lacks the pull request's number or web URL".to_owned(),
            )
        };
        Ok(match self.kind {
            ForgeKind::GitHub | ForgeKind::Gitea => {
                let answer: NumberedAnswer = serde_json::from_slice(answer).map_err(unexpected)?;
                Opened {
                    number: answer.number,
                    url: answer.html_url,
                }
            }
            ForgeKind::GitLab => {
                let answer: MergeRequestAnswer =
                    serde_json::from_slice(answer).map_err(unexpected)?;
                Opened {
                    number: answer.iid,
                    url: answer.web_url,
                }
            }
        })
    }
}

/// The title with the forge's draft prefix, unless it already has one of
/// the forge's prefixes (`known`, lower case).
fn draft_title(request: &PullRequest, prefix: &str, known: &[&str]) -> String {
    let lower = request.title.to_lowercase();
    if request.draft && !known.iter().any(|k| lower.starts_with(k)) {
        format!("{prefix}{}", request.title)
    } else {
        request.title.clone()
    }
}

/// The answer's body, or `None` when it is longer than
/// [`MAX_ANSWER_BYTES`] (read no further).
async fn read_bounded(mut response: reqwest::Response) -> reqwest::Result<Option<Vec<u8>>> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// A failed exchange, with its causes (refused, resolver, ...). The URL
/// holds no credentials: the token travels in a header.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "the forge did not answer in time".to_owned();
    }
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

/// The forge's own message in an error answer, in one line: GitHub's
/// `{message, errors: [{message} | {field, code}]}`, GitLab's `{message}`
/// (a string, a list, or lists by field) or `{error}`, Gitea's `{message}`
/// or its list of field errors; a short plain-text answer as it is.
fn forge_message(answer: &[u8], token: &str) -> String {
    let parts = match serde_json::from_slice::<Value>(answer) {
        Ok(value) => json_parts(&value),
        Err(_) => {
            let text = String::from_utf8_lossy(answer);
            // An HTML error page says nothing a status does not.
            if text.trim_start().starts_with('<') {
                Vec::new()
            } else {
                vec![text.into_owned()]
            }
        }
    };
    let mut parts = parts.into_iter().filter(|p| !p.trim().is_empty());
    let mut message = parts.next().unwrap_or_default();
    let details: Vec<String> = parts.collect();
    if !details.is_empty() {
        message = format!("{message}: {}", details.join("; "));
    }
    // One line, no control characters, bounded.
    let mut message = message
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>();
    if message.chars().count() > MAX_MESSAGE_CHARS {
        message = message.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
    }
    // A forge echoing the token back must not put it in a log. Short
    // strings would match ordinary words; tokens are long.
    if token.len() >= 8 {
        message = message.replace(token, "[token]");
    }
    message
}

fn json_parts(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items.iter().flat_map(json_parts).collect(),
        Value::Object(map) => {
            let mut parts = Vec::new();
            match map.get("message") {
                // GitLab's validation errors: `{"message": {"field": ["is invalid"]}}`.
                Some(Value::Object(fields)) => {
                    for (field, texts) in fields {
                        parts.push(format!("{field} {}", json_parts(texts).join(", ")));
                    }
                }
                Some(message) => {
                    let texts = json_parts(message);
                    // Gitea's field errors: `{"fieldNames": ["Title"], "message": "Required"}`.
                    match map.get("fieldNames").and_then(Value::as_array) {
                        Some(names) if !names.is_empty() => {
                            let names: Vec<String> = names.iter().flat_map(json_parts).collect();
                            parts.push(format!("{}: {}", names.join(", "), texts.join(", ")));
                        }
                        _ => parts.extend(texts),
                    }
                }
                // GitHub's error items without a message: `{"field": "head", "code": "invalid"}`.
                None => {
                    if let (Some(field), Some(code)) = (
                        map.get("field").and_then(Value::as_str),
                        map.get("code").and_then(Value::as_str),
                    ) {
                        parts.push(format!("{field} {code}"));
                    }
                }
            }
            for key in ["error", "error_description"] {
                if let Some(Value::String(text)) = map.get(key) {
                    parts.push(text.clone());
                }
            }
            if let Some(errors) = map.get("errors") {
                parts.extend(json_parts(errors));
            }
            parts
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use test_support::forge::{Forge, ForgeStandIn, NESTED_REPOSITORY, REPOSITORY};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::domain::ClonePolicy;
    use crate::forge::{client, Forges};

    const TOKEN: &str = "tok_forge_s3cret_1234";

    fn test_client() -> reqwest::Client {
        // The stand-ins listen on 127.0.0.1, an IP literal; the policy
        // sees names only (see `the_client_resolves_names_through_the_clone_policy`).
        client(
            &ClonePolicy::default(),
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .unwrap()
    }

    fn kind_of(forge: Forge) -> &'static str {
        match forge {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::Gitea => "gitea",
        }
    }

    /// The stand-in, and its repository as `for_origin` reads an origin.
    async fn forge_with(forge: Forge, repository: &str) -> (ForgeStandIn, ForgeRepo) {
        let stand_in = ForgeStandIn::start(forge, TOKEN).await;
        let forges = Forges::parse(&format!(
            "{}={}:{}",
            stand_in.host,
            kind_of(forge),
            stand_in.api_base
        ))
        .unwrap();
        let repo = forges
            .for_origin(&format!("http://{}/{repository}.git", stand_in.host))
            .unwrap();
        (stand_in, repo)
    }

    fn request(draft: bool) -> PullRequest {
        PullRequest {
            title: "Add the frobnicator".to_owned(),
            body: Some("Made by repo-runner.".to_owned()),
            head: "rr/frobnicator".to_owned(),
            base: "main".to_owned(),
            draft,
        }
    }

    #[tokio::test]
    async fn a_github_pull_request_is_posted_as_github_documents() {
        let (stand_in, repo) = forge_with(Forge::GitHub, REPOSITORY).await;

        let opened = repo
            .open_pull_request(&test_client(), &request(false), TOKEN)
            .await
            .unwrap();

        let requests = stand_in.requests();
        assert_eq!(requests.len(), 1);
        let sent = &requests[0];
        assert_eq!(
            (sent.method.as_str(), sent.path.as_str()),
            ("POST", "/repos/acme/widgets/pulls")
        );
        let bearer = format!("Bearer {TOKEN}");
        assert_eq!(sent.header("authorization"), Some(bearer.as_str()));
        assert_eq!(sent.header("accept"), Some("application/vnd.github+json"));
        assert_eq!(sent.header("x-github-api-version"), Some("2022-11-28"));
        assert!(sent
            .header("user-agent")
            .unwrap()
            .starts_with("repo-runner/"));
        assert_eq!(
            sent.json(),
            json!({
                "title": "Add the frobnicator", "head": "rr/frobnicator", "base": "main",
                "body": "Made by repo-runner.", "draft": false,
            })
        );
        assert_eq!(
            opened,
            Opened {
                number: 1,
                url: format!("http://{}/acme/widgets/pull/1", stand_in.host)
            }
        );
    }

    #[tokio::test]
    async fn a_gitlab_merge_request_names_the_nested_project_in_one_encoded_segment() {
        let (stand_in, repo) = forge_with(Forge::GitLab, NESTED_REPOSITORY).await;

        let opened = repo
            .open_pull_request(&test_client(), &request(false), TOKEN)
            .await
            .unwrap();

        let sent = &stand_in.requests()[0];
        assert_eq!(
            (sent.method.as_str(), sent.path.as_str()),
            (
                "POST",
                "/api/v4/projects/acme%2Ftools%2Fwidgets/merge_requests"
            )
        );
        assert_eq!(sent.header("private-token"), Some(TOKEN));
        assert_eq!(sent.header("authorization"), None);
        assert_eq!(
            sent.json(),
            json!({
                "source_branch": "rr/frobnicator", "target_branch": "main",
                "title": "Add the frobnicator", "description": "Made by repo-runner.",
            })
        );
        assert_eq!(
            opened,
            Opened {
                number: 1,
                url: format!(
                    "http://{}/acme/tools/widgets/-/merge_requests/1",
                    stand_in.host
                )
            }
        );
    }

    #[tokio::test]
    async fn a_gitea_pull_request_is_posted_as_gitea_documents() {
        let (stand_in, repo) = forge_with(Forge::Gitea, REPOSITORY).await;
        let mut without_body = request(false);
        without_body.body = None;

        let opened = repo
            .open_pull_request(&test_client(), &without_body, TOKEN)
            .await
            .unwrap();

        let sent = &stand_in.requests()[0];
        assert_eq!(
            (sent.method.as_str(), sent.path.as_str()),
            ("POST", "/api/v1/repos/acme/widgets/pulls")
        );
        let token = format!("token {TOKEN}");
        assert_eq!(sent.header("authorization"), Some(token.as_str()));
        assert_eq!(
            sent.json(),
            json!({"title": "Add the frobnicator", "head": "rr/frobnicator", "base": "main"})
        );
        assert_eq!(
            opened,
            Opened {
                number: 1,
                url: format!("http://{}/acme/widgets/pulls/1", stand_in.host)
            }
        );
    }

    #[tokio::test]
    async fn a_draft_is_marked_the_way_each_forge_marks_one() {
        for (forge, field, expected) in [
            (Forge::GitHub, "draft", json!(true)),
            (Forge::GitLab, "title", json!("Draft: Add the frobnicator")),
            (Forge::Gitea, "title", json!("WIP: Add the frobnicator")),
        ] {
            let (stand_in, repo) = forge_with(forge, REPOSITORY).await;

            repo.open_pull_request(&test_client(), &request(true), TOKEN)
                .await
                .unwrap();

            let body = stand_in.requests()[0].json();
            assert_eq!(body[field], expected, "{forge:?}");
            if forge == Forge::GitHub {
                assert_eq!(body["title"], json!("Add the frobnicator"));
            } else {
                assert_eq!(body.get("draft"), None, "{forge:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_title_with_the_forges_draft_prefix_gets_no_second_one() {
        let (stand_in, repo) = forge_with(Forge::GitLab, REPOSITORY).await;
        let mut draft = request(true);
        draft.title = "draft: already".to_owned();

        repo.open_pull_request(&test_client(), &draft, TOKEN)
            .await
            .unwrap();

        assert_eq!(
            stand_in.requests()[0].json()["title"],
            json!("draft: already")
        );
    }

    #[tokio::test]
    async fn a_second_pull_request_for_the_same_branch_passes_on_the_forges_reason() {
        for (forge, expected) in [
            (
                Forge::GitHub,
                "Validation Failed: A pull request already exists for acme:rr/frobnicator.",
            ),
            (
                Forge::GitLab,
                "Another open merge request already exists for this source branch: !1",
            ),
            (
                Forge::Gitea,
                "pull request already exists for these targets [id: 1, issue_id: 1, \
                 head_repo_id: 1, base_repo_id: 1, head_branch: rr/frobnicator, base_branch: main]",
            ),
        ] {
            let (_stand_in, repo) = forge_with(forge, REPOSITORY).await;
            let client = test_client();
            repo.open_pull_request(&client, &request(false), TOKEN)
                .await
                .unwrap();

            let error = repo
                .open_pull_request(&client, &request(false), TOKEN)
                .await
                .unwrap_err();

            assert!(
                matches!(&error, ForgeError::Rejected(message) if message == expected),
                "{forge:?}: {error:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_wrong_token_is_refused_with_the_forges_words_and_never_echoed() {
        for (forge, expected) in [
            (
                Forge::GitHub,
                "the forge refused the token: Bad credentials",
            ),
            (
                Forge::GitLab,
                "the forge refused the token: 401 Unauthorized",
            ),
            (
                Forge::Gitea,
                "the forge refused the token: token is required",
            ),
        ] {
            let (stand_in, repo) = forge_with(forge, REPOSITORY).await;
            let wrong = "tok_wrong_s3cret_9876";

            let error = repo
                .open_pull_request(&test_client(), &request(false), wrong)
                .await
                .unwrap_err();

            assert!(
                matches!(error, ForgeError::Refused(_)),
                "{forge:?}: {error:?}"
            );
            assert_eq!(error.to_string(), expected);
            assert!(!format!("{error:?}").contains(wrong));
            assert_eq!(stand_in.requests().len(), 1);
        }
    }

    #[tokio::test]
    async fn an_unknown_repository_is_not_found() {
        for forge in [Forge::GitHub, Forge::GitLab, Forge::Gitea] {
            let (_stand_in, repo) = forge_with(forge, "acme/gadgets").await;

            let error = repo
                .open_pull_request(&test_client(), &request(false), TOKEN)
                .await
                .unwrap_err();

            assert!(
                matches!(&error, ForgeError::NotFound { repository, .. } if repository == "acme/gadgets"),
                "{forge:?}: {error:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_owner_or_repo_with_slashes_dots_or_query_characters_stays_one_segment() {
        for (forge, segments, expected_path) in [
            (
                Forge::GitHub,
                ["acme/widgets/pulls?x=1#", "y"],
                "/repos/acme%2Fwidgets%2Fpulls%3Fx=1%23/y/pulls",
            ),
            (
                Forge::GitHub,
                ["acme%2F..", "widgets"],
                "/repos/acme%252F../widgets/pulls",
            ),
            (
                Forge::Gitea,
                ["acme", "../../x"],
                "/api/v1/repos/acme/..%2F..%2Fx/pulls",
            ),
            (
                Forge::GitLab,
                ["acme", "widgets/merge_requests?"],
                "/api/v4/projects/acme%2Fwidgets%2Fmerge_requests%3F/merge_requests",
            ),
        ] {
            let stand_in = ForgeStandIn::start(forge, TOKEN).await;
            // Built by hand: `for_origin` refuses these paths outright.
            let repo = ForgeRepo {
                kind: match forge {
                    Forge::GitHub => ForgeKind::GitHub,
                    Forge::GitLab => ForgeKind::GitLab,
                    Forge::Gitea => ForgeKind::Gitea,
                },
                api_base: Url::parse(&stand_in.api_base).unwrap(),
                segments: segments.iter().map(|s| s.to_string()).collect(),
            };

            let error = repo
                .open_pull_request(&test_client(), &request(false), TOKEN)
                .await
                .unwrap_err();

            assert!(matches!(error, ForgeError::NotFound { .. }), "{error:?}");
            let paths: Vec<String> = stand_in.requests().into_iter().map(|r| r.path).collect();
            assert_eq!(paths, [expected_path]);
        }
        // A `..` segment is refused before any request: the encoder would
        // drop it and name another repository.
        let repo = ForgeRepo {
            kind: ForgeKind::GitHub,
            api_base: Url::parse("http://127.0.0.1:9/").unwrap(),
            segments: vec!["..".to_owned(), "widgets".to_owned()],
        };
        let error = repo
            .open_pull_request(&test_client(), &request(false), TOKEN)
            .await
            .unwrap_err();
        assert!(matches!(error, ForgeError::BadOrigin(_)), "{error:?}");
    }

    #[tokio::test]
    async fn the_client_resolves_names_through_the_clone_policy() {
        let stand_in = ForgeStandIn::start(Forge::GitHub, TOKEN).await;
        let port = stand_in.host.rsplit_once(':').unwrap().1;
        let forges =
            Forges::parse(&format!("localhost:{port}=github:http://localhost:{port}")).unwrap();
        let repo = forges
            .for_origin(&format!("http://localhost:{port}/acme/widgets"))
            .unwrap();

        // `localhost` resolves to loopback, which the default policy refuses.
        let error = repo
            .open_pull_request(&test_client(), &request(false), TOKEN)
            .await
            .unwrap_err();

        assert!(
            matches!(&error, ForgeError::Unavailable(m) if m.contains("clones may not reach")),
            "{error:?}"
        );
        assert_eq!(stand_in.requests(), []);
        // A policy that allows loopback reaches it.
        let open = client(
            &ClonePolicy::new(true, ""),
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .unwrap();
        let opened = repo
            .open_pull_request(&open, &request(false), TOKEN)
            .await
            .unwrap();
        assert_eq!(opened.number, 1);
    }

    /// A server on 127.0.0.1 that reads one request head and writes
    /// `answer` (`None`: never answers), then closes.
    async fn raw_server(answer: Option<Vec<u8>>) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buffer).await.unwrap();
                if n == 0 {
                    return;
                }
                head.extend_from_slice(&buffer[..n]);
            }
            match answer {
                Some(answer) => {
                    // The client may stop reading and close first.
                    let _closed_early = stream.write_all(&answer).await;
                }
                // Holds the connection open until the client gives up.
                None => {
                    let _closed = stream.read(&mut buffer).await;
                }
            }
        });
        (base, task)
    }

    fn github_repo(api_base: &str) -> ForgeRepo {
        ForgeRepo {
            kind: ForgeKind::GitHub,
            api_base: Url::parse(api_base).unwrap(),
            segments: vec!["acme".to_owned(), "widgets".to_owned()],
        }
    }

    #[tokio::test]
    async fn an_answer_longer_than_the_bound_is_not_read() {
        let mut answer = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"number\":1,\"html_url\":\"".to_vec();
        answer.extend(std::iter::repeat_n(b'x', 2 * MAX_ANSWER_BYTES));
        answer.extend_from_slice(b"\"}");
        let (base, _server) = raw_server(Some(answer)).await;

        let error = github_repo(&base)
            .open_pull_request(&test_client(), &request(false), TOKEN)
            .await
            .unwrap_err();

        assert!(
            matches!(&error, ForgeError::Unavailable(m) if m.contains("longer than 65536 bytes")),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_forge_is_unavailable_after_the_timeout() {
        let (base, _server) = raw_server(None).await;
        let impatient = client(
            &ClonePolicy::default(),
            Duration::from_secs(5),
            Duration::from_millis(200),
        )
        .unwrap();

        let error = github_repo(&base)
            .open_pull_request(&impatient, &request(false), TOKEN)
            .await
            .unwrap_err();

        assert!(
            matches!(&error, ForgeError::Unavailable(m) if m == "the forge did not answer in time"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        let answer = b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:9/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec();
        let (base, _server) = raw_server(Some(answer)).await;

        let error = github_repo(&base)
            .open_pull_request(&test_client(), &request(false), TOKEN)
            .await
            .unwrap_err();

        assert!(
            matches!(&error, ForgeError::Unavailable(m) if m.contains("not followed")),
            "{error:?}"
        );
    }

    #[test]
    fn the_forges_message_shapes_are_read() {
        let cases = [
            (
                json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}]}),
                "Validation Failed: head invalid",
            ),
            (
                json!({"message": "Validation Failed", "errors": [{"code": "custom", "message": "No commits between main and x"}]}),
                "Validation Failed: No commits between main and x",
            ),
            (
                json!({"message": ["Another open merge request already exists for this source branch: !1"]}),
                "Another open merge request already exists for this source branch: !1",
            ),
            (
                json!({"message": {"source_branch": ["is invalid", "is too long"]}}),
                "source_branch is invalid, is too long",
            ),
            (json!({"error": "title is missing"}), "title is missing"),
            (
                json!({"error": "invalid_token", "error_description": "Token was revoked"}),
                "invalid_token: Token was revoked",
            ),
            (
                json!([{"fieldNames": ["Title"], "classification": "RequiredError", "message": "Required"}]),
                "Title: Required",
            ),
            (
                json!({"message": "Invalid request.\n\n\"head\" wasn't supplied."}),
                "Invalid request. \"head\" wasn't supplied.",
            ),
            (
                json!({"message": format!("token {TOKEN} is revoked")}),
                "token [token] is revoked",
            ),
        ];
        for (answer, expected) in cases {
            assert_eq!(
                forge_message(answer.to_string().as_bytes(), TOKEN),
                expected
            );
        }
        assert_eq!(forge_message(b"<html><body>502</body></html>", TOKEN), "");
        assert_eq!(
            forge_message(b"Request forbidden\n", TOKEN),
            "Request forbidden"
        );
        let long = "x".repeat(3 * MAX_MESSAGE_CHARS);
        assert_eq!(
            forge_message(long.as_bytes(), TOKEN).chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
    }
}
