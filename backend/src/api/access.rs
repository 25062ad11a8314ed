//! Who may see what: the one place where a route turns an id from its URL
//! into a session or a run the caller may see. Someone else's session or
//! run is a 404, like one that does not exist, so ids cannot be probed.

use uuid::Uuid;

use super::parse_id;
use crate::auth::Principal;
use crate::engine::Reads;
use crate::http_error::{ApiError, ApiResult};
use crate::store::{RunOwner, RunRow, SessionRow};

/// The session `raw` names, if it exists and the caller may see it.
pub(super) async fn session(reads: &Reads, raw: &str, caller: &Principal) -> ApiResult<SessionRow> {
    let id = parse_id(raw, "session")?;
    reads
        .session(id)
        .await?
        .filter(|row| caller.sees(row.owner_id))
        .ok_or_else(|| ApiError::not_found(format!("session {id} does not exist")))
}

/// The run `raw` names, if it exists and the caller may see its session.
pub(super) async fn run(reads: &Reads, raw: &str, caller: &Principal) -> ApiResult<RunRow> {
    let id = parse_id(raw, "run")?;
    run_by_id(reads, id, caller).await
}

/// The run `id`, if it exists and the caller may see its session.
pub(super) async fn run_by_id(reads: &Reads, id: Uuid, caller: &Principal) -> ApiResult<RunRow> {
    check_run_owner(reads, id, caller).await?;
    reads
        .run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {id} does not exist")))
}

/// A 404 unless the caller may see run `id`'s session; free for those who
/// see everything (no query: thousands of browsers may attach at once).
pub(super) async fn check_run_owner(reads: &Reads, id: Uuid, caller: &Principal) -> ApiResult<()> {
    if caller.only_owner().is_none() {
        return Ok(());
    }
    match reads.run_owner(id).await? {
        RunOwner::User(owner) if caller.sees(Some(owner)) => Ok(()),
        RunOwner::Nobody if caller.sees(None) => Ok(()),
        RunOwner::User(_) | RunOwner::Nobody | RunOwner::NoSuchRun => {
            Err(ApiError::not_found(format!("run {id} does not exist")))
        }
    }
}

/// The session the caller may see, once its clone is done, with its
/// workspace's canonical path: what every route that reads or changes a
/// workspace starts from (`files` and `shipping`).
pub(super) async fn ready_workspace(
    reads: &Reads,
    session_id: &str,
    caller: &Principal,
) -> ApiResult<(SessionRow, std::path::PathBuf)> {
    let session = session(reads, session_id, caller).await?;
    if session.status != crate::domain::SessionStatus::Ready {
        return Err(ApiError::conflict(format!(
            "session {} is {}: its workspace is not ready",
            session.id, session.status
        )));
    }
    let dir = reads
        .workspace(session.id)
        .canonicalize()
        .map_err(|e| ApiError::internal(&e))?;
    Ok((session, dir))
}
