//! Previews: the grant the dashboard's Preview tab reads one session's
//! files with (`POST /api/sessions/{id}/preview`), and the only routes a
//! grant reaches (the session's tree and files). What a grant is and how it
//! is checked: `auth/preview_grant.rs`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::web::{Data, Path as RoutePath};
use poem::{handler, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::{parse_id, ApiTags};
use crate::auth::preview_grant::{self, PreviewGrants, PreviewScope};
use crate::auth::{Caller, Principal};
use crate::engine::Engine;
use crate::http_error::{ApiError, ApiResult};
use crate::store::NewPreviewGrant;

pub struct PreviewApi {
    pub engine: Arc<Engine>,
}

/// A preview grant: read access to one session's files through the
/// preview listener, until it expires.
#[derive(Debug, Object)]
pub struct PreviewGrant {
    /// The grant (`rrp_…`), shown this once. It reads this session's file
    /// tree and files and nothing else; the preview listener sends it to
    /// the API as `Authorization: Preview <grant>`.
    pub grant: String,
    /// When the grant stops working; the dashboard then asks for a new one.
    /// It stops sooner when the session is deleted, the token it was asked
    /// with is revoked, or the browser that asked signs out.
    pub expires_at: DateTime<Utc>,
    /// The session's root folder on the preview listener (`PREVIEW_ADDR`),
    /// `/{session_id}/{grant}/`: a workspace path appended to it (each
    /// segment percent-encoded) is that file's preview.
    pub url_path: String,
}

#[derive(ApiResponse)]
enum GrantCreated {
    /// The grant, bound to the session.
    #[oai(status = 201)]
    Created(Json<PreviewGrant>),
}

#[OpenApi(prefix_path = "/api/sessions", tag = "ApiTags::Files")]
impl PreviewApi {
    /// Grant the preview a session's files
    ///
    /// A short-lived, read-only credential for the preview listener: the
    /// session's file tree and files, nothing else, until `expires_at`
    /// (`BACKEND_PREVIEW_GRANT_TTL_SECS`). Only the session's owner or an
    /// admin gets one; for anyone else the session does not exist.
    #[oai(
        path = "/:session_id/preview",
        method = "post",
        operation_id = "create_preview_grant"
    )]
    async fn create(
        &self,
        Caller(caller): Caller,
        session_id: Path<String>,
    ) -> ApiResult<GrantCreated> {
        let session = super::access::session(self.engine.reads(), &session_id, &caller).await?;
        let minted = preview_grant::mint().map_err(|e| ApiError::internal(&e))?;
        let ttl = chrono::Duration::from_std(self.engine.config().preview_grant_ttl)
            .map_err(|e| ApiError::internal(&e))?;
        let expires_at = Utc::now() + ttl;
        self.engine
            .accounts()
            .add_preview_grant(NewPreviewGrant {
                sha256: &minted.sha256,
                session_id: session.id,
                token_id: caller.token_id,
                browser_session_id: caller.browser_session_id,
                expires_at,
            })
            .await?;
        tracing::info!(session_id = %session.id, %expires_at, "preview grant issued");
        Ok(GrantCreated::Created(Json(PreviewGrant {
            url_path: format!("/{}/{}/", session.id, minted.secret),
            grant: minted.secret,
            expires_at,
        })))
    }
}

/// The routes a request with a grant reaches, and no other: the session's
/// tree and its files (the path's slashes as is or encoded).
pub(crate) fn granted_routes(engine: Arc<Engine>) -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/api/sessions/:session_id/files", poem::get(granted_tree))
        .at(
            "/api/sessions/:session_id/files/*path",
            poem::get(granted_file),
        )
        .data(engine)
        .map_to_response()
}

/// A request that presents a grant goes to `granted` if the grant allows
/// it, and is refused if not; any other request goes on to `ep` (the
/// authenticator and the API).
pub(crate) async fn dispatch<E: Endpoint, G: Endpoint<Output = Response>>(
    ep: Arc<E>,
    mut req: Request,
    grants: Arc<PreviewGrants>,
    granted: Arc<G>,
) -> poem::Result<Response> {
    let Some(grant) = preview_grant::presented(req.headers()).map(str::to_owned) else {
        return ep.call(req).await.map(IntoResponse::into_response);
    };
    match grants
        .authorize(req.method(), req.uri().path(), &grant)
        .await
    {
        Ok((principal, scope)) => {
            req.extensions_mut().insert(principal);
            req.extensions_mut().insert(scope);
            granted.call(req).await
        }
        Err(refusal) => Ok(refusal.into_response()),
    }
}

/// The caller of a granted request, once its route's session is the one
/// the grant is bound to.
fn granted(req: &Request, session_id: &str) -> ApiResult<Principal> {
    let scope = req.extensions().get::<PreviewScope>().copied();
    let principal = req.extensions().get::<Principal>().cloned();
    let id = parse_id(session_id, "session")?;
    match (scope, principal) {
        (Some(scope), Some(principal)) if scope.session_id == id => Ok(principal),
        (Some(_), Some(_)) => Err(ApiError::not_found(format!("session {id} does not exist"))),
        // Only a route mounted outside `dispatch` gets here.
        _ => {
            tracing::error!("a granted route ran without a grant");
            Err(ApiError::unauthorized("this route needs a preview grant"))
        }
    }
}

/// `GET /api/sessions/{id}/files` with a grant.
#[handler]
async fn granted_tree(
    req: &Request,
    RoutePath(session_id): RoutePath<String>,
    Data(engine): Data<&Arc<Engine>>,
) -> Response {
    let listed = match granted(req, &session_id) {
        Ok(caller) => super::files::list(engine, &session_id, &caller).await,
        Err(refusal) => Err(refusal),
    };
    match listed {
        Ok(tree) => tree.into_response(),
        Err(error) => error.into_response(),
    }
}

/// `GET /api/sessions/{id}/files/{path...}` with a grant.
#[handler]
async fn granted_file(
    req: &Request,
    RoutePath((session_id, path)): RoutePath<(String, String)>,
    Data(engine): Data<&Arc<Engine>>,
) -> Response {
    let read = match granted(req, &session_id) {
        Ok(caller) => super::files::read(engine, &session_id, &path, &caller).await,
        Err(refusal) => Err(refusal),
    };
    match read {
        Ok(file) => file.into_response(),
        Err(error) => error.into_response(),
    }
}
