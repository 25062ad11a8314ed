//! Patches that `git apply` takes: the workspace against the session's base
//! commit, and what one run changed (its two snapshots), in the format of
//! `git diff --binary --full-index` with renames found, written piece by
//! piece to a sink so that a large patch never sits in memory.

use std::path::Path;

use git2::{Diff, DiffFindOptions, DiffFormat, DiffOptions, Oid, Repository, Tree};

use super::snapshot::{open_indexed, Indexed, SnapshotCache};
use super::workspace::open_repo;

/// Why a patch could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// A snapshot or the base commit is no longer in the workspace's object
    /// store (the agent can rewrite `.git`).
    #[error("{0} is no longer in the workspace's repository")]
    Missing(&'static str),
    #[error(transparent)]
    Git(#[from] git2::Error),
}

/// Takes each piece of the patch; returning false stops the patch.
pub type Sink<'a> = &'a mut dyn FnMut(&[u8]) -> bool;

/// The workspace (everything not ignored) against `base_commit`: the base
/// tree against the work tree seen through our index, which nothing here
/// writes. Only files whose stat data changed since the last snapshot are
/// read, as `git diff` does.
pub(crate) fn workspace_patch(
    workspace: &Path,
    cache: &SnapshotCache,
    base_commit: &str,
    sink: Sink<'_>,
) -> Result<(), PatchError> {
    let indexed = open_indexed(workspace, cache)?;
    let repo = &indexed.repo;
    let base = commit_tree(repo, base_commit, "the base commit")?;
    let mut options = patch_options();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .show_untracked_content(true);
    if !narrow(&indexed, workspace, &base, &mut options)? {
        // Nothing differs from the base.
        return Ok(());
    }
    let mut diff = repo.diff_tree_to_workdir_with_index(Some(&base), Some(&mut options))?;
    // New files are untracked here: they count for renames too.
    diff.find_similar(Some(
        DiffFindOptions::new().renames(true).for_untracked(true),
    ))?;
    // The diff is made: a slow client does not hold up the next run's
    // snapshot (which waits for the lock at most `LOCK_WAIT`).
    indexed.release();
    print(&diff, sink)
}

/// What happened between two snapshot commits of the workspace.
pub(crate) fn snapshots_patch(
    workspace: &Path,
    before: &str,
    after: &str,
    sink: Sink<'_>,
) -> Result<(), PatchError> {
    let repo = open_repo(workspace)?;
    let old = commit_tree(&repo, before, "the snapshot before the run")?;
    let new = commit_tree(&repo, after, "the snapshot after the run")?;
    let diff = tree_diff(&repo, &old, &new)?;
    print(&diff, sink)
}

fn commit_tree<'r>(
    repo: &'r Repository,
    id: &str,
    what: &'static str,
) -> Result<Tree<'r>, PatchError> {
    let oid = Oid::from_str(id).map_err(|_| PatchError::Missing(what))?;
    repo.find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(|_| PatchError::Missing(what))
}

/// Narrows a diff of `base` against the work tree (through our index) to
/// the paths that can differ: those where our index differs from `base`,
/// and those whose files may differ from our index. `false` when there is
/// none (an empty pathspec would mean every path). Without candidates the
/// diff walks everything.
pub(super) fn narrow(
    indexed: &Indexed,
    workspace: &Path,
    base: &Tree<'_>,
    options: &mut DiffOptions,
) -> Result<bool, git2::Error> {
    let Some((mut paths, _)) = indexed.candidates(workspace)? else {
        return Ok(true);
    };
    let staged = indexed
        .repo
        .diff_tree_to_index(Some(base), Some(&indexed.index), None)?;
    for delta in staged.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if let Some(path) = file.path_bytes() {
                paths.push(path.to_vec());
            }
        }
    }
    paths.sort();
    paths.dedup();
    if paths.is_empty() {
        return Ok(false);
    }
    options.disable_pathspec_match(true);
    for path in paths {
        options.pathspec(path);
    }
    Ok(true)
}

/// A file larger than this is not put in a patch: it shows as "Binary
/// files … differ", which `git apply` refuses. libgit2 builds a file's
/// binary patch whole in memory (about five times the file), so this bounds
/// what one patch request holds.
pub const MAX_PATCH_FILE_BYTES: i64 = 16 * 1024 * 1024;

/// What every patch is printed with: `git diff --binary --full-index`.
fn patch_options() -> DiffOptions {
    let mut options = DiffOptions::new();
    options
        .max_size(MAX_PATCH_FILE_BYTES)
        .show_binary(true)
        .id_abbrev(40)
        .include_typechange(true)
        // Pinned: the repository's `diff.noprefix` is the agent's to set.
        .old_prefix("a/")
        .new_prefix("b/");
    options
}

/// The diff of two trees, as `git diff --binary --full-index -M` prints it.
fn tree_diff<'r>(
    repo: &'r Repository,
    old: &Tree<'_>,
    new: &Tree<'_>,
) -> Result<Diff<'r>, git2::Error> {
    let mut diff = repo.diff_tree_to_tree(Some(old), Some(new), Some(&mut patch_options()))?;
    diff.find_similar(Some(DiffFindOptions::new().renames(true)))?;
    Ok(diff)
}

fn print(diff: &Diff<'_>, sink: Sink<'_>) -> Result<(), PatchError> {
    let mut stopped = false;
    let printed = diff.print(DiffFormat::Patch, |_delta, _hunk, line| {
        // The origin of a content line is its first character in the
        // patch; headers and binary data carry their own text.
        let origin = line.origin();
        let prefix = matches!(origin, '+' | '-' | ' ');
        let keep_going = (!prefix || sink(&[origin as u8])) && sink(line.content());
        stopped = !keep_going;
        keep_going
    });
    match printed {
        Err(_) if stopped => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use test_support::{git, init_repo};

    use super::*;
    use crate::git::snapshot::{run_ref, snapshot_commit};

    /// An origin with the files every kind of change below needs, cloned
    /// into a session folder as the backend lays it out.
    struct Fixture {
        _dir: tempfile::TempDir,
        origin: PathBuf,
        session: PathBuf,
        workspace: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let origin = dir.path().join("origin");
        init_repo(&origin);
        let lines: String = (0..40)
            .map(|i| format!("line {i} of a file to rename\n"))
            .collect();
        std::fs::write(origin.join("rename-me.txt"), lines).unwrap();
        std::fs::write(origin.join("delete-me.txt"), "going\n").unwrap();
        std::fs::write(origin.join("script.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::write(origin.join("image.bin"), [0u8, 1, 2, 255, 0, 7, 0]).unwrap();
        git(&origin, &["add", "."]);
        git(&origin, &["commit", "-q", "-m", "files"]);
        let session = dir.path().join("session");
        std::fs::create_dir_all(&session).unwrap();
        let workspace = session.join("repo");
        git(
            dir.path(),
            &[
                "clone",
                "-q",
                origin.to_str().unwrap(),
                workspace.to_str().unwrap(),
            ],
        );
        Fixture {
            _dir: dir,
            origin,
            session,
            workspace,
        }
    }

    /// Every kind of change `git apply` must take from our patches.
    fn change_everything(workspace: &Path) {
        let lines = std::fs::read_to_string(workspace.join("rename-me.txt")).unwrap();
        std::fs::remove_file(workspace.join("rename-me.txt")).unwrap();
        std::fs::write(workspace.join("renamed.txt"), lines + "one more\n").unwrap();
        std::fs::remove_file(workspace.join("delete-me.txt")).unwrap();
        let script = workspace.join("script.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let binary: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
        std::fs::write(workspace.join("image.bin"), &binary).unwrap();
        std::fs::write(workspace.join("new.bin"), [0u8, 0, 159, 146, 150, 0]).unwrap();
        let spaced = workspace.join("a folder/ünïcödé name.txt");
        std::fs::create_dir_all(spaced.parent().unwrap()).unwrap();
        std::fs::write(spaced, "non-ASCII and spaces\n").unwrap();
        std::fs::write(workspace.join("empty"), "").unwrap();
        std::fs::write(workspace.join("README.md"), "# changed\n").unwrap();
    }

    /// The tree `git add -A` makes of a folder's files.
    fn tree_of(dir: &Path) -> String {
        git(dir, &["add", "-A"]);
        git(dir, &["write-tree"])
    }

    fn apply(dir: &Path, patch: &[u8]) {
        let file = dir.join("../change.patch");
        std::fs::write(&file, patch).unwrap();
        git(
            dir,
            &["apply", "--whitespace=nowarn", file.to_str().unwrap()],
        );
    }

    fn collect(make: impl FnOnce(Sink<'_>) -> Result<(), PatchError>) -> Vec<u8> {
        let mut patch = Vec::new();
        make(&mut |piece: &[u8]| {
            patch.extend_from_slice(piece);
            true
        })
        .unwrap();
        patch
    }

    #[test]
    fn both_patches_apply_to_a_fresh_clone() {
        let f = fixture();
        let cache = SnapshotCache::new(&f.session);
        cache.seed(&f.workspace).unwrap();
        let base = git(&f.workspace, &["rev-parse", "HEAD"]);
        // The agent commits part of its work, and leaves part uncommitted.
        std::fs::write(
            f.workspace.join("committed.txt"),
            "committed by the agent\n",
        )
        .unwrap();
        git(&f.workspace, &["add", "committed.txt"]);
        git(&f.workspace, &["commit", "-q", "-m", "agent commit"]);

        let run = uuid::Uuid::new_v4();
        let before = snapshot_commit(&f.workspace, &cache, &run_ref(run, "before")).unwrap();
        change_everything(&f.workspace);
        let after = snapshot_commit(&f.workspace, &cache, &run_ref(run, "after")).unwrap();
        let expected = tree_of(&f.workspace);

        let run_patch = collect(|sink| {
            snapshots_patch(&f.workspace, &before.to_string(), &after.to_string(), sink)
        });
        let text = String::from_utf8_lossy(&run_patch);
        assert!(text.contains("GIT binary patch"), "{text}");
        assert!(text.contains("rename from rename-me.txt"), "{text}");
        assert!(text.contains("new mode 100755"), "{text}");
        // Applies to the state before the run: the clone plus the commit.
        let fresh = f.session.join("fresh-run");
        git(
            &f.session,
            &[
                "clone",
                "-q",
                f.workspace.to_str().unwrap(),
                fresh.to_str().unwrap(),
            ],
        );
        git(&fresh, &["checkout", "-q", &before.to_string(), "--", "."]);
        apply(&fresh, &run_patch);
        assert_eq!(tree_of(&fresh), expected);

        let session_patch = collect(|sink| workspace_patch(&f.workspace, &cache, &base, sink));
        let fresh = f.session.join("fresh-session");
        git(
            &f.session,
            &[
                "clone",
                "-q",
                f.origin.to_str().unwrap(),
                fresh.to_str().unwrap(),
            ],
        );
        apply(&fresh, &session_patch);
        assert_eq!(tree_of(&fresh), expected);
    }

    #[test]
    fn a_snapshot_leaves_the_users_index_and_branches_alone() {
        let f = fixture();
        let cache = SnapshotCache::new(&f.session);
        cache.seed(&f.workspace).unwrap();
        change_everything(&f.workspace);
        git(&f.workspace, &["add", "README.md"]);
        let index_before = std::fs::read(f.workspace.join(".git/index")).unwrap();
        let status_before = git(&f.workspace, &["status", "--porcelain"]);
        let refs_before = git(
            &f.workspace,
            &["for-each-ref", "refs/heads", "refs/remotes"],
        );
        let head_before = git(&f.workspace, &["symbolic-ref", "HEAD"]);

        let run = uuid::Uuid::new_v4();
        let snapshot = snapshot_commit(&f.workspace, &cache, &run_ref(run, "after")).unwrap();

        assert_eq!(
            std::fs::read(f.workspace.join(".git/index")).unwrap(),
            index_before
        );
        assert_eq!(git(&f.workspace, &["status", "--porcelain"]), status_before);
        assert_eq!(
            git(
                &f.workspace,
                &["for-each-ref", "refs/heads", "refs/remotes"]
            ),
            refs_before
        );
        assert_eq!(git(&f.workspace, &["symbolic-ref", "HEAD"]), head_before);
        assert_eq!(
            git(&f.workspace, &["rev-parse", &run_ref(run, "after")]),
            snapshot.to_string()
        );
    }

    #[test]
    fn the_repositorys_own_config_cannot_hide_a_change() {
        let f = fixture();
        let cache = SnapshotCache::new(&f.session);
        cache.seed(&f.workspace).unwrap();
        let run = uuid::Uuid::new_v4();
        let before = snapshot_commit(&f.workspace, &cache, &run_ref(run, "before")).unwrap();
        // The agent turns off what would show a mode change.
        git(&f.workspace, &["config", "core.filemode", "false"]);
        git(&f.workspace, &["config", "diff.noprefix", "true"]);
        let script = f.workspace.join("script.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let after = snapshot_commit(&f.workspace, &cache, &run_ref(run, "after")).unwrap();
        let patch = collect(|sink| {
            snapshots_patch(&f.workspace, &before.to_string(), &after.to_string(), sink)
        });
        let text = String::from_utf8_lossy(&patch);
        assert!(
            text.contains("diff --git a/script.sh b/script.sh\nold mode 100644\nnew mode 100755"),
            "{text}"
        );
    }
}
