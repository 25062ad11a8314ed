//! Loopback stand-ins for the REST APIs that open pull requests on GitHub,
//! GitLab and Gitea/Forgejo: one small poem server on 127.0.0.1, port 0,
//! per forge. Each checks what its forge checks (route, method, token
//! header, JSON body fields and their types), records every request it
//! gets, and answers in its forge's own shapes and statuses, so a client
//! that passes here sends what the real API accepts. A request the real API
//! would refuse gets that API's 4xx, never a 201.
//!
//! Every stand-in knows one repository, [`REPOSITORY`]; GitLab's also knows
//! the nested [`NESTED_REPOSITORY`]. Anything else is an unknown
//! repository (404).

use std::sync::{Arc, Mutex};

use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{handler, Body, EndpointExt, Request, Response, Route};
use serde_json::{json, Value};

/// The repository every stand-in knows.
pub const REPOSITORY: &str = "acme/widgets";

/// A repository in a nested group, known to GitLab's stand-in only.
pub const NESTED_REPOSITORY: &str = "acme/tools/widgets";

/// Which forge a stand-in plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    GitLab,
    /// Gitea and Forgejo (Forgejo kept Gitea's API).
    Gitea,
}

impl Forge {
    /// The API's path under the server, as the forge serves it
    /// (`https://api.github.com`, `…/api/v4`, `…/api/v1`).
    fn api_prefix(self) -> &'static str {
        match self {
            Forge::GitHub => "",
            Forge::GitLab => "/api/v4",
            Forge::Gitea => "/api/v1",
        }
    }
}

/// One request as the stand-in received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path as sent, percent-encoding and all, with the query if any.
    pub path: String,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RecordedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A pull request the stand-in opened.
#[derive(Debug, Clone)]
struct Opened {
    repository: String,
    head: String,
    base: String,
}

#[derive(Debug, Default)]
struct State {
    requests: Vec<RecordedRequest>,
    opened: Vec<Opened>,
}

#[derive(Clone)]
struct Setup {
    forge: Forge,
    token: String,
    /// `http://127.0.0.1:<port>`: where the forge's web pages would be.
    web_base: String,
    state: Arc<Mutex<State>>,
}

/// A forge's API on 127.0.0.1; it stops when dropped.
pub struct ForgeStandIn {
    /// What FORGES would name as the API base (`http://127.0.0.1:p/api/v4`).
    pub api_base: String,
    /// `host:port` of the server, as FORGES would name the host.
    pub host: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ForgeStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ForgeStandIn {
    /// Starts a stand-in for `forge` that accepts `expected_token` only.
    pub async fn start(forge: Forge, expected_token: &str) -> Self {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let setup = Setup {
            forge,
            token: expected_token.to_owned(),
            web_base: format!("http://{addr}"),
            state: state.clone(),
        };
        let app = Route::new().at("/*path", serve).data(setup);
        let task = tokio::spawn(async move {
            if let Err(e) = poem::Server::new_with_acceptor(acceptor).run(app).await {
                tracing::error!(error = %e, "the forge stand-in stopped");
            }
        });
        Self {
            api_base: format!("http://{addr}{}", forge.api_prefix()),
            host: addr.to_string(),
            state,
            task,
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// A JSON answer.
fn answer(status: StatusCode, body: Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .body(body.to_string())
}

#[handler]
async fn serve(req: &Request, body: Body, Data(setup): Data<&Setup>) -> Response {
    let body = String::from_utf8_lossy(&body.into_vec().await.unwrap_or_default()).into_owned();
    let recorded = RecordedRequest {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(String::new, |p| p.as_str().to_owned()),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    setup.state.lock().unwrap().requests.push(recorded.clone());
    match setup.forge {
        Forge::GitHub => github(&recorded, setup),
        Forge::GitLab => gitlab(&recorded, setup),
        Forge::Gitea => gitea(&recorded, setup),
    }
}

/// The path's segments under the API prefix, percent-decoded as the
/// forge's router decodes them; `None` for a path outside the API or with
/// a query (no create call takes one).
fn segments(request: &RecordedRequest, forge: Forge) -> Option<Vec<String>> {
    if request.path.contains('?') {
        return None;
    }
    let rest = request.path.strip_prefix(forge.api_prefix())?;
    let rest = rest.strip_prefix('/')?;
    Some(rest.split('/').map(percent_decode).collect())
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The token in `Authorization: <scheme> <token>` for one of `schemes`.
fn authorization<'a>(request: &'a RecordedRequest, schemes: &[&str]) -> Option<&'a str> {
    let value = request.header("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
        .then_some(token.trim())
}

/// Which required string fields are missing, and which given fields have
/// the wrong JSON type (`Err` when the body is no JSON object).
struct Fields {
    missing: Vec<&'static str>,
    wrong_type: Vec<(&'static str, &'static str)>,
}

fn check_fields(
    body: &Value,
    required: &[&'static str],
    optional_strings: &[&'static str],
    optional_bools: &[&'static str],
) -> Fields {
    let mut fields = Fields {
        missing: Vec::new(),
        wrong_type: Vec::new(),
    };
    for &name in required {
        match body.get(name) {
            None | Some(Value::Null) => fields.missing.push(name),
            Some(Value::String(_)) => {}
            Some(_) => fields.wrong_type.push((name, "string")),
        }
    }
    for &name in optional_strings {
        if let Some(value) = body.get(name) {
            if !value.is_string() && !value.is_null() {
                fields.wrong_type.push((name, "string"));
            }
        }
    }
    for &name in optional_bools {
        if let Some(value) = body.get(name) {
            if !value.is_boolean() {
                fields.wrong_type.push((name, "boolean"));
            }
        }
    }
    fields
}

fn text<'a>(body: &'a Value, name: &str) -> &'a str {
    body.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// Records a new pull request and returns its number (per stand-in, from 1).
fn open(setup: &Setup, repository: &str, head: &str, base: &str) -> u64 {
    let mut state = setup.state.lock().unwrap();
    state.opened.push(Opened {
        repository: repository.to_owned(),
        head: head.to_owned(),
        base: base.to_owned(),
    });
    state.opened.len() as u64
}

/// The number of an open pull request matching `same`.
fn existing(setup: &Setup, same: impl Fn(&Opened) -> bool) -> Option<u64> {
    let state = setup.state.lock().unwrap();
    state
        .opened
        .iter()
        .position(same)
        .map(|index| index as u64 + 1)
}

/// GitHub: `POST /repos/{owner}/{repo}/pulls`.
fn github(request: &RecordedRequest, setup: &Setup) -> Response {
    const DOCS: &str = "https://docs.github.com/rest/pulls/pulls#create-a-pull-request";
    let not_found = || {
        answer(
            StatusCode::NOT_FOUND,
            json!({"message": "Not Found", "documentation_url": DOCS, "status": "404"}),
        )
    };
    // GitHub refuses a request without a User-Agent before anything else,
    // in plain text.
    if request.header("user-agent").is_none_or(str::is_empty) {
        return Response::builder()
            .status(StatusCode::FORBIDDEN)
            .content_type("text/plain")
            .body(
                "Request forbidden by administrative rules. Please make sure your request has \
                 a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). \
                 Check https://developer.github.com for other possible causes.\n",
            );
    }
    if let Some(version) = request.header("x-github-api-version") {
        if version != "2022-11-28" {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({
                    "message": format!("API version '{version}' is not supported."),
                    "documentation_url": "https://docs.github.com/rest/about-the-rest-api/api-versions",
                    "status": "400",
                }),
            );
        }
    }
    let Some(segments) = segments(request, Forge::GitHub) else {
        return not_found();
    };
    let [repos, owner, repo, pulls] = segments.as_slice() else {
        return not_found();
    };
    if repos != "repos" || pulls != "pulls" || request.method != "POST" {
        return not_found();
    }
    match authorization(request, &["Bearer", "token"]) {
        None => {
            return answer(
                StatusCode::UNAUTHORIZED,
                json!({"message": "Requires authentication", "documentation_url": DOCS, "status": "401"}),
            )
        }
        Some(token) if token != setup.token => {
            return answer(
                StatusCode::UNAUTHORIZED,
                json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
            )
        }
        Some(_) => {}
    }
    let repository = format!("{owner}/{repo}");
    if repository != REPOSITORY {
        return not_found();
    }
    let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"message": "Problems parsing JSON", "documentation_url": DOCS, "status": "400"}),
        );
    };
    let invalid = |detail: String| {
        answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": format!("Invalid request.\n\n{detail}"), "documentation_url": DOCS, "status": "422"}),
        )
    };
    if !body.is_object() {
        return invalid("Invalid input: the body must be an object.".to_owned());
    }
    let fields = check_fields(
        &body,
        &["title", "head", "base"],
        &["body", "head_repo"],
        &["draft", "maintainer_can_modify"],
    );
    if let Some(name) = fields.missing.first() {
        return invalid(format!("\"{name}\" wasn't supplied."));
    }
    if let Some((name, kind)) = fields.wrong_type.first() {
        return invalid(format!(
            "For 'properties/{name}', {} is not a {kind}.",
            body[*name]
        ));
    }
    let (title, head, base) = (
        text(&body, "title"),
        text(&body, "head"),
        text(&body, "base"),
    );
    let validation_failed = |error: Value| {
        answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "Validation Failed", "errors": [error], "documentation_url": DOCS, "status": "422"}),
        )
    };
    if head == base {
        return validation_failed(json!({
            "resource": "PullRequest", "code": "custom",
            "message": format!("No commits between {base} and {head}"),
        }));
    }
    if existing(setup, |pr| {
        pr.repository == repository && pr.head == head && pr.base == base
    })
    .is_some()
    {
        return validation_failed(json!({
            "resource": "PullRequest", "code": "custom",
            "message": format!("A pull request already exists for {owner}:{head}."),
        }));
    }
    let number = open(setup, &repository, head, base);
    answer(
        StatusCode::CREATED,
        json!({
            "id": 1_000_000 + number,
            "number": number,
            "state": "open",
            "title": title,
            "body": body.get("body").cloned().unwrap_or(Value::Null),
            "draft": body.get("draft").and_then(Value::as_bool).unwrap_or(false),
            "url": format!("{}/repos/{repository}/pulls/{number}", setup.web_base),
            "html_url": format!("{}/{repository}/pull/{number}", setup.web_base),
            "head": {"ref": head},
            "base": {"ref": base},
        }),
    )
}

/// GitLab: `POST /projects/{url-encoded path}/merge_requests`.
fn gitlab(request: &RecordedRequest, setup: &Setup) -> Response {
    let route_not_found = || answer(StatusCode::NOT_FOUND, json!({"error": "404 Not Found"}));
    let Some(segments) = segments(request, Forge::GitLab) else {
        return route_not_found();
    };
    // The project's path is one segment: its slashes are encoded (`%2F`),
    // or the route is another one.
    let [projects, project, merge_requests] = segments.as_slice() else {
        return route_not_found();
    };
    if projects != "projects" || merge_requests != "merge_requests" || request.method != "POST" {
        return route_not_found();
    }
    let token = request
        .header("private-token")
        .or_else(|| authorization(request, &["Bearer"]));
    if token != Some(setup.token.as_str()) {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"}),
        );
    }
    if project != REPOSITORY && project != NESTED_REPOSITORY {
        return answer(
            StatusCode::NOT_FOUND,
            json!({"message": "404 Project Not Found"}),
        );
    }
    // Grape reads a JSON body only when it is declared as JSON; otherwise
    // every parameter is missing.
    let is_json = request
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json"));
    let body = if is_json {
        match serde_json::from_str::<Value>(&request.body) {
            Ok(body) if body.is_object() => body,
            _ => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    json!({"message": "400 Bad request - There was a problem with the JSON you submitted"}),
                )
            }
        }
    } else {
        json!({})
    };
    let fields = check_fields(
        &body,
        &["source_branch", "target_branch", "title"],
        &["description"],
        &["remove_source_branch", "squash"],
    );
    let mut problems: Vec<String> = fields
        .missing
        .iter()
        .map(|name| format!("{name} is missing"))
        .collect();
    problems.extend(
        fields
            .wrong_type
            .iter()
            .map(|(name, _)| format!("{name} is invalid")),
    );
    if !problems.is_empty() {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": problems.join(", ")}),
        );
    }
    let (title, source, target) = (
        text(&body, "title"),
        text(&body, "source_branch"),
        text(&body, "target_branch"),
    );
    if let Some(iid) = existing(setup, |mr| mr.repository == *project && mr.head == source) {
        return answer(
            StatusCode::CONFLICT,
            json!({"message": [format!("Another open merge request already exists for this source branch: !{iid}")]}),
        );
    }
    let iid = open(setup, project, source, target);
    answer(
        StatusCode::CREATED,
        json!({
            "id": 5_000 + iid,
            "iid": iid,
            "project_id": 42,
            "title": title,
            "description": body.get("description").cloned().unwrap_or(Value::Null),
            "state": "opened",
            "draft": (["Draft:", "[Draft]", "(Draft)"].iter().any(|p| title.starts_with(p))),
            "source_branch": source,
            "target_branch": target,
            "web_url": format!("{}/{project}/-/merge_requests/{iid}", setup.web_base),
        }),
    )
}

/// Gitea and Forgejo: `POST /repos/{owner}/{repo}/pulls`.
fn gitea(request: &RecordedRequest, setup: &Setup) -> Response {
    let swagger = format!("{}/api/swagger", setup.web_base);
    let not_found = || {
        answer(
            StatusCode::NOT_FOUND,
            json!({"errors": [], "message": "The target couldn't be found.", "url": swagger}),
        )
    };
    let Some(segments) = segments(request, Forge::Gitea) else {
        return not_found();
    };
    let [repos, owner, repo, pulls] = segments.as_slice() else {
        return not_found();
    };
    if repos != "repos" || pulls != "pulls" || request.method != "POST" {
        return not_found();
    }
    // An unknown token leaves the request anonymous, and creating a pull
    // request requires a token.
    if authorization(request, &["token", "Bearer"]) != Some(setup.token.as_str()) {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"message": "token is required", "url": swagger}),
        );
    }
    let repository = format!("{owner}/{repo}");
    if repository != REPOSITORY {
        return not_found();
    }
    // Gitea's binding answers a list of field errors.
    let body = serde_json::from_str::<Value>(&request.body).unwrap_or(Value::Null);
    let fields = check_fields(&body, &["head", "base", "title"], &["body"], &[]);
    if !body.is_object() || !fields.missing.is_empty() || !fields.wrong_type.is_empty() {
        let mut errors: Vec<Value> = fields
            .missing
            .iter()
            .map(|name| {
                json!({"fieldNames": [capitalised(name)], "classification": "RequiredError", "message": "Required"})
            })
            .collect();
        errors.extend(fields.wrong_type.iter().map(|(name, _)| {
            json!({"fieldNames": [capitalised(name)], "classification": "DeserializationError", "message": "Deserialization error"})
        }));
        if errors.is_empty() {
            errors.push(json!({"fieldNames": [], "classification": "DeserializationError", "message": "Deserialization error"}));
        }
        return answer(StatusCode::UNPROCESSABLE_ENTITY, Value::Array(errors));
    }
    let (title, head, base) = (
        text(&body, "title"),
        text(&body, "head"),
        text(&body, "base"),
    );
    if let Some(number) = existing(setup, |pr| {
        pr.repository == repository && pr.head == head && pr.base == base
    }) {
        return answer(
            StatusCode::CONFLICT,
            json!({
                "message": format!(
                    "pull request already exists for these targets [id: {number}, issue_id: {number}, head_repo_id: 1, base_repo_id: 1, head_branch: {head}, base_branch: {base}]"
                ),
                "url": swagger,
            }),
        );
    }
    let number = open(setup, &repository, head, base);
    answer(
        StatusCode::CREATED,
        json!({
            "id": 700 + number,
            "number": number,
            "title": title,
            "body": text(&body, "body"),
            "state": "open",
            "draft": (["WIP:", "[WIP]"].iter().any(|p| title.starts_with(p))),
            "url": format!("{}/{repository}/pulls/{number}", setup.web_base),
            "html_url": format!("{}/{repository}/pulls/{number}", setup.web_base),
            "head": {"ref": head, "label": head},
            "base": {"ref": base, "label": base},
        }),
    )
}

/// Gitea's binding names fields by their Go names.
fn capitalised(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    #[tokio::test]
    async fn github_refuses_what_github_refuses() {
        let forge = ForgeStandIn::start(Forge::GitHub, "t").await;
        let url = format!("{}/repos/acme/widgets/pulls", forge.api_base);
        let auth = ("authorization", "Bearer t");
        let agent = ("user-agent", "test");

        let (status, _) = post(&url, &[auth], r#"{"title":"t","head":"h","base":"main"}"#).await;
        assert_eq!(status, 403, "no User-Agent");
        let (status, body) =
            post(&url, &[agent], r#"{"title":"t","head":"h","base":"main"}"#).await;
        assert_eq!(
            (status, &body["message"]),
            (401, &json!("Requires authentication"))
        );
        let (status, body) = post(&url, &[agent, auth], r#"{"title":"t","base":"main"}"#).await;
        assert_eq!(
            (status, &body["message"]),
            (422, &json!("Invalid request.\n\n\"head\" wasn't supplied."))
        );
        let (status, _) = post(
            &url,
            &[agent, auth],
            r#"{"title":"t","head":"h","base":"main","draft":"yes"}"#,
        )
        .await;
        assert_eq!(status, 422, "draft is a boolean");
        let (status, body) = post(
            &url,
            &[agent, auth],
            r#"{"title":"t","head":"h","base":"main"}"#,
        )
        .await;
        assert_eq!((status, &body["number"]), (201, &json!(1)));
    }

    #[tokio::test]
    async fn gitlab_needs_its_token_header_and_a_json_body() {
        let forge = ForgeStandIn::start(Forge::GitLab, "t").await;
        let url = format!("{}/projects/acme%2Fwidgets/merge_requests", forge.api_base);
        let body = r#"{"title":"t","source_branch":"h","target_branch":"main"}"#;

        let (status, _) = post(&url, &[("authorization", "token t")], body).await;
        assert_eq!(status, 401);
        let (status, answer) = post(&url, &[("private-token", "t")], r#"{"title":"t"}"#).await;
        assert_eq!(
            (status, answer),
            (
                400,
                json!({"error": "source_branch is missing, target_branch is missing"})
            )
        );
        // The path unencoded is another route.
        let unencoded = format!("{}/projects/acme/widgets/merge_requests", forge.api_base);
        let (status, _) = post(&unencoded, &[("private-token", "t")], body).await;
        assert_eq!(status, 404);
        let (status, answer) = post(&url, &[("private-token", "t")], body).await;
        assert_eq!((status, &answer["iid"]), (201, &json!(1)));
    }

    #[tokio::test]
    async fn gitea_answers_binding_errors_as_a_list() {
        let forge = ForgeStandIn::start(Forge::Gitea, "t").await;
        let url = format!("{}/repos/acme/widgets/pulls", forge.api_base);

        let (status, answer) = post(
            &url,
            &[("authorization", "token t")],
            r#"{"head":"h","base":"main"}"#,
        )
        .await;
        assert_eq!(
            (status, answer),
            (
                422,
                json!([{"fieldNames": ["Title"], "classification": "RequiredError", "message": "Required"}])
            )
        );
        assert_eq!(forge.requests().len(), 1);
    }
}
