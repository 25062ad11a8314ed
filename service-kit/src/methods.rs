//! Which methods each path of a service answers, so that a 405 says so in
//! its `Allow` header (RFC 9110 asks for it) and in the JSON error body.
//!
//! A service gets its table from where its routes are declared: the runner
//! builds its routes with [`Routes`], which fills the table as it goes; the
//! backend reads the paths of its OpenAPI document
//! ([`AllowedMethods::from_openapi`]) and adds the few routes outside it.
//! [`AllowedMethods::check`] then wraps the service and rewrites every 405,
//! whoever raised it, to the JSON schema with `Allow`.

use std::sync::Arc;

use poem::http::{header, HeaderValue, Method};
use poem::{Endpoint, IntoEndpoint, IntoResponse, Request, Response, Route, RouteMethod};

use crate::{error_response, ErrorCode};

/// One segment of a route's path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `:name` (poem) or `{name}` (OpenAPI): one non-empty segment.
    Param,
    /// `*name`: the rest of the path, at least one segment.
    Rest,
}

fn template(path: &str) -> Vec<Segment> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.starts_with('*') {
                Segment::Rest
            } else if s.starts_with(':') || (s.starts_with('{') && s.ends_with('}')) {
                Segment::Param
            } else {
                Segment::Literal(s.to_owned())
            }
        })
        .collect()
}

fn matches(template: &[Segment], path: &[&str]) -> bool {
    match (template.split_first(), path.split_first()) {
        (None, None) => true,
        (Some((Segment::Rest, _)), Some(_)) => true,
        (Some((Segment::Param, rest)), Some((_, path))) => matches(rest, path),
        (Some((Segment::Literal(want), rest)), Some((got, path))) => {
            want == got && matches(rest, path)
        }
        _ => false,
    }
}

/// The order of methods in `Allow`: reads first, then writes, whatever
/// order the table was written in.
fn rank(method: &Method) -> usize {
    const ORDER: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    ORDER
        .iter()
        .position(|m| m == method)
        .unwrap_or(ORDER.len())
}

/// The methods each path template of a service answers.
#[derive(Debug, Clone, Default)]
pub struct AllowedMethods {
    routes: Vec<(Vec<Segment>, Vec<Method>)>,
}

impl AllowedMethods {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `methods` for `path`, a template in poem's spelling
    /// (`/runs/:id`, `/files/*path`) or OpenAPI's (`/runs/{id}`).
    pub fn route(mut self, path: &str, methods: impl IntoIterator<Item = Method>) -> Self {
        self.add(path, methods);
        self
    }

    /// This table and `other`'s routes together.
    pub fn merge(mut self, other: AllowedMethods) -> Self {
        for (template, methods) in other.routes {
            self.add_template(template, methods);
        }
        self
    }

    fn add(&mut self, path: &str, methods: impl IntoIterator<Item = Method>) {
        self.add_template(template(path), methods);
    }

    fn add_template(&mut self, template: Vec<Segment>, methods: impl IntoIterator<Item = Method>) {
        let methods: Vec<Method> = methods.into_iter().collect();
        match self.routes.iter_mut().find(|(t, _)| *t == template) {
            Some((_, known)) => {
                for method in methods {
                    if !known.contains(&method) {
                        known.push(method);
                    }
                }
            }
            None => self.routes.push((template, methods)),
        }
    }

    /// Every operation of an OpenAPI 3 document: its `paths`, and under
    /// each the keys that are HTTP methods.
    pub fn from_openapi(spec: &serde_json::Value) -> Self {
        const METHODS: [&str; 8] = [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ];
        let mut table = Self::new();
        let Some(paths) = spec.get("paths").and_then(|p| p.as_object()) else {
            return table;
        };
        for (path, item) in paths {
            let methods = item
                .as_object()
                .into_iter()
                .flat_map(|item| item.keys())
                .filter(|key| METHODS.contains(&key.as_str()))
                .filter_map(|key| Method::from_bytes(key.to_ascii_uppercase().as_bytes()).ok());
            table.add(path, methods);
        }
        table
    }

    /// The `Allow` value for `path`: the methods of the template the router
    /// sends it to, with `HEAD` wherever `GET` is (poem answers a `HEAD`
    /// with the `GET` endpoint). Of several templates that match, the
    /// router takes the most specific (a literal segment before a
    /// parameter, a parameter before the rest), and a method it lacks is a
    /// 405 there: `/sessions/events` does not answer `DELETE` because
    /// `/sessions/{id}` does. `None` when no template matches.
    pub fn allow(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let specificity = |template: &[Segment]| -> Vec<u8> {
            template
                .iter()
                .map(|segment| match segment {
                    Segment::Literal(_) => 0,
                    Segment::Param => 1,
                    Segment::Rest => 2,
                })
                .collect()
        };
        let best = self
            .routes
            .iter()
            .filter(|(template, _)| matches(template, &segments))
            .map(|(template, _)| specificity(template))
            .min();
        let mut allowed: Vec<Method> = Vec::new();
        let mut any = false;
        for (template, methods) in &self.routes {
            if !matches(template, &segments) || Some(specificity(template)) != best {
                continue;
            }
            any = true;
            for method in methods {
                if !allowed.contains(method) {
                    allowed.push(method.clone());
                }
                if *method == Method::GET && !allowed.contains(&Method::HEAD) {
                    allowed.push(Method::HEAD);
                }
            }
        }
        allowed.sort_by_key(rank);
        any.then(|| {
            allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    /// Serves `ep`, and answers any 405 it gives (an error poem raised or a
    /// response) with the JSON error schema and `Allow`.
    pub async fn check<E: Endpoint>(
        self: Arc<Self>,
        ep: Arc<E>,
        req: Request,
    ) -> poem::Result<Response> {
        let method = req.method().clone();
        // The whole path, also when this table is a nested route's.
        let path = req.original_uri().path().to_owned();
        match ep.call(req).await {
            Ok(response) => {
                let response = response.into_response();
                if response.status() != ErrorCode::MethodNotAllowed.status() {
                    return Ok(response);
                }
            }
            Err(error) if error.status() == ErrorCode::MethodNotAllowed.status() => {}
            Err(error) => return Err(error),
        }
        let allow = self.allow(&path).unwrap_or_else(|| {
            // Every route that can answer 405 belongs in the table; an empty
            // `Allow` is still a correct answer (no method is allowed).
            tracing::warn!(%path, "a 405 for a path missing from the allowed-methods table");
            String::new()
        });
        let message = if allow.is_empty() {
            format!("{method} is not allowed on {path}")
        } else {
            format!("{method} is not allowed on {path}; it answers {allow}")
        };
        let mut response = error_response(ErrorCode::MethodNotAllowed, message);
        // Method names are tokens, so the joined list is a valid header
        // value; should one not be, the body still says everything.
        if let Ok(value) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        Ok(response)
    }
}

/// The endpoints of one path, by method, remembering which methods they
/// are. Built with [`get`], [`post`], [`delete`] like poem's own.
pub struct Methods {
    route: RouteMethod,
    methods: Vec<Method>,
}

impl Methods {
    pub fn method<E>(mut self, method: Method, ep: E) -> Self
    where
        E: IntoEndpoint,
        E::Endpoint: 'static,
    {
        self.route = self.route.method(method.clone(), ep);
        self.methods.push(method);
        self
    }

    pub fn get<E>(self, ep: E) -> Self
    where
        E: IntoEndpoint,
        E::Endpoint: 'static,
    {
        self.method(Method::GET, ep)
    }

    pub fn post<E>(self, ep: E) -> Self
    where
        E: IntoEndpoint,
        E::Endpoint: 'static,
    {
        self.method(Method::POST, ep)
    }

    pub fn delete<E>(self, ep: E) -> Self
    where
        E: IntoEndpoint,
        E::Endpoint: 'static,
    {
        self.method(Method::DELETE, ep)
    }
}

fn methods() -> Methods {
    Methods {
        route: RouteMethod::new(),
        methods: Vec::new(),
    }
}

/// `GET` on a path.
pub fn get<E>(ep: E) -> Methods
where
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    methods().get(ep)
}

/// `POST` on a path.
pub fn post<E>(ep: E) -> Methods
where
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    methods().post(ep)
}

/// `DELETE` on a path.
pub fn delete<E>(ep: E) -> Methods
where
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    methods().delete(ep)
}

/// poem's `Route` and the [`AllowedMethods`] of its paths, built together
/// so that they cannot disagree.
#[derive(Default)]
pub struct Routes {
    route: Route,
    allowed: AllowedMethods,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn at(mut self, path: &str, methods: Methods) -> Self {
        self.allowed.add(path, methods.methods);
        self.route = self.route.at(path, methods.route);
        self
    }

    /// The route, and its table for [`AllowedMethods::check`].
    pub fn into_parts(self) -> (Route, AllowedMethods) {
        (self.route, self.allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_their_paths_and_allow_lists_their_methods() {
        let table = AllowedMethods::new()
            .route("/threads", [Method::POST])
            .route("/threads/:id", [Method::DELETE, Method::GET])
            .route("/api/sessions/{session_id}/files/{path}", [Method::GET])
            .route("/runs/:id/cancel", [Method::POST])
            .merge(
                AllowedMethods::new()
                    .route("/api/sessions/:session_id/files/*path", [Method::GET])
                    .route("/threads/{id}", [Method::DELETE]),
            );
        assert_eq!(table.allow("/threads").as_deref(), Some("POST"));
        assert_eq!(table.allow("/threads/").as_deref(), Some("POST"));
        assert_eq!(
            table.allow("/threads/42").as_deref(),
            Some("GET, HEAD, DELETE")
        );
        assert_eq!(
            table.allow("/api/sessions/s/files/a/b/c").as_deref(),
            Some("GET, HEAD")
        );
        assert_eq!(
            table.allow("/api/sessions/s/files/a").as_deref(),
            Some("GET, HEAD")
        );
        assert_eq!(table.allow("/runs/1/cancel").as_deref(), Some("POST"));
        assert_eq!(table.allow("/runs/1/cancel/x"), None);
        // A literal segment wins over a parameter, as in poem's router.
        let table = table
            .route("/api/sessions/events", [Method::GET])
            .route("/api/sessions/{session_id}", [Method::GET, Method::DELETE]);
        assert_eq!(
            table.allow("/api/sessions/events").as_deref(),
            Some("GET, HEAD")
        );
        assert_eq!(
            table.allow("/api/sessions/42").as_deref(),
            Some("GET, HEAD, DELETE")
        );
        assert_eq!(table.allow("/threads/1/2"), None);
        assert_eq!(table.allow("/api/sessions/s/files"), None);
    }

    #[test]
    fn an_openapi_document_gives_its_operations() {
        let spec = serde_json::json!({"paths": {
            "/api/sessions": {"get": {}, "post": {}},
            "/api/runs/{run_id}": {"get": {}, "parameters": []},
        }});
        let table = AllowedMethods::from_openapi(&spec);
        assert_eq!(
            table.allow("/api/sessions").as_deref(),
            Some("GET, HEAD, POST")
        );
        assert_eq!(table.allow("/api/runs/7").as_deref(), Some("GET, HEAD"));
    }
}
