//! A session's workspace: the file tree, one file, the diff.

use std::sync::Arc;

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;
use tokio::sync::Semaphore;

use super::models::{Diff, FileContent, FileTree, TreeEntry};
use super::ApiTags;
use crate::auth::{Caller, Principal};
use crate::domain::WorkspacePath;
use crate::engine::Engine;
use crate::git::{self, FileError};
use crate::http_error::{ApiError, ApiResult};

pub struct FilesApi {
    pub engine: Arc<Engine>,
    /// Bounds blocking git work in progress (`BACKEND_MAX_CONCURRENT_DIFFS`):
    /// each holds a blocking thread and up to two files' worth of memory.
    /// One gate, shared with `ShippingApi`.
    pub diffs: Arc<Semaphore>,
}

/// One file of a session's workspace; shared by the OpenAPI operation, the
/// route that takes a path with slashes as is, and the preview's route.
pub(super) async fn read(
    engine: &Engine,
    session_id: &str,
    raw_path: &str,
    caller: &Principal,
) -> ApiResult<Json<FileContent>> {
    let path = WorkspacePath::parse(raw_path).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (_, dir) = super::access::ready_workspace(engine.reads(), session_id, caller).await?;
    let limit = engine.config().limits.max_file_bytes;
    let read = tokio::task::spawn_blocking(move || git::read_file(&dir, &path, limit))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    match read {
        Ok(file) => Ok(Json(FileContent {
            path: file.path,
            size: file.size,
            binary: file.binary,
            encoding: file.encoding.into(),
            content: file.content,
        })),
        Err(FileError::NotFound) => Err(ApiError::not_found(format!("{raw_path}: no such file"))),
        Err(FileError::Path(error)) => Err(ApiError::bad_request(error.to_string())),
        Err(error @ (FileError::IsDirectory(_) | FileError::NotRegular(_))) => {
            Err(ApiError::bad_request(error.to_string()))
        }
        Err(error @ FileError::TooLarge { .. }) => Err(ApiError::too_large(error.to_string())),
        Err(FileError::Io(error)) => Err(ApiError::internal(&error)),
    }
}

/// A session's file tree; shared by the OpenAPI operation and the
/// preview's route.
pub(super) async fn list(
    engine: &Engine,
    session_id: &str,
    caller: &Principal,
) -> ApiResult<Json<FileTree>> {
    let (_, dir) = super::access::ready_workspace(engine.reads(), session_id, caller).await?;
    let limit = engine.config().limits.max_tree_entries;
    let tree = tokio::task::spawn_blocking(move || git::tree(&dir, limit))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(FileTree {
        entries: tree
            .entries
            .into_iter()
            .map(|e| TreeEntry {
                path: e.path,
                kind: e.kind.into(),
                size: e.size,
            })
            .collect(),
        truncated: tree.truncated,
    }))
}

#[OpenApi(prefix_path = "/api/sessions", tag = "ApiTags::Files")]
impl FilesApi {
    /// The workspace's file tree
    ///
    /// Every file and folder, `.git` left out, sorted by path; symlinks are
    /// listed, not followed.
    #[oai(
        path = "/:session_id/files",
        method = "get",
        operation_id = "list_files"
    )]
    async fn tree(
        &self,
        Caller(caller): Caller,
        session_id: Path<String>,
    ) -> ApiResult<Json<FileTree>> {
        list(&self.engine, &session_id, &caller).await
    }

    /// A file of the workspace
    ///
    /// Text comes as UTF-8; any other file is flagged `binary` and comes as
    /// base64. `path` is relative to the workspace; slashes may be sent as
    /// is (`files/src/main.rs`) or encoded (`files/src%2Fmain.rs`).
    #[oai(
        path = "/:session_id/files/:path",
        method = "get",
        operation_id = "read_file"
    )]
    async fn file(
        &self,
        Caller(caller): Caller,
        session_id: Path<String>,
        path: Path<String>,
    ) -> ApiResult<Json<FileContent>> {
        read(&self.engine, &session_id, &path, &caller).await
    }

    /// The workspace's diff
    ///
    /// A unified diff of the workspace (index, working tree and untracked
    /// files) against the commit the session cloned. The patch is cut at
    /// `BACKEND_MAX_DIFF_BYTES` (`truncated`); files over
    /// `BACKEND_MAX_FILE_BYTES` are named in `too_large`, their content left
    /// out.
    #[oai(path = "/:session_id/diff", method = "get", operation_id = "get_diff")]
    async fn diff(
        &self,
        Caller(caller): Caller,
        session_id: Path<String>,
    ) -> ApiResult<Json<Diff>> {
        let (session, dir) =
            super::access::ready_workspace(self.engine.reads(), &session_id, &caller).await?;
        let base = session
            .base_commit
            .ok_or_else(|| ApiError::conflict("the session has no base commit"))?;
        let limits = &self.engine.config().limits;
        let (max_bytes, max_file_bytes) = (limits.max_diff_bytes, limits.max_file_bytes);
        // Waiting here costs a parked task, not a blocking thread; a client
        // that gives up drops its place in the queue.
        let _permit = self
            .diffs
            .acquire()
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let diff =
            tokio::task::spawn_blocking(move || git::diff(&dir, &base, max_bytes, max_file_bytes))
                .await
                .map_err(|e| ApiError::internal(&e))?
                .map_err(|e| match git::refusal(&e) {
                    Some(why) => ApiError::conflict(why.to_owned()),
                    None => ApiError::internal(&e),
                })?;
        Ok(Json(Diff {
            base_commit: diff.base_commit,
            patch: diff.patch,
            files_changed: diff.files_changed as u64,
            insertions: diff.insertions as u64,
            deletions: diff.deletions as u64,
            truncated: diff.truncated,
            too_large: diff.too_large,
        }))
    }
}
