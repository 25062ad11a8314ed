//! Everything done with git2. All of it blocks: callers run it in
//! `spawn_blocking`.

mod changed;
mod clone;
mod clone_error;
pub mod egress;
mod history;
mod http_transport;
mod local_source;
mod patch;
mod push;
mod snapshot;
mod workspace;

pub(crate) use history::{
    commit, head_branch, state, CommitError, CommitRequest, Committed, GitState,
};
pub(crate) use http_transport::register as register_http_transport;
pub(crate) use http_transport::CheckedResolver;
pub(crate) use local_source::{ForbiddenPaths, LocalSource, LocalSourceError};

pub(crate) use clone::{
    clone, CloneCounts, CloneProgress, CloneRequest, Credentials, DiskLimits, KeptToken,
};
pub(crate) use clone_error::CloneError;
pub(crate) use patch::{snapshots_patch, workspace_patch, PatchError, Sink};
pub(crate) use push::{push, PushError, PushRequest, Pushed};
pub(crate) use snapshot::{run_ref, snapshot_commit, SnapshotCache};
pub(crate) use workspace::{
    changes, diff, read_file, refusal, snapshot, tree, Changes, FileError, Snapshot,
};

/// Makes libgit2 ignore the global, XDG and system git configuration (and
/// the ignore and attribute files found beside them): the agent can write
/// `~/.gitconfig`, and an `include.path` or `core.excludesFile` there would
/// make every later repository read a file of its choosing. Call once at
/// start-up, before any other git2 work.
pub(crate) fn isolate_from_user_config() -> Result<(), git2::Error> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        for level in [
            git2::ConfigLevel::Global,
            git2::ConfigLevel::XDG,
            git2::ConfigLevel::System,
            git2::ConfigLevel::ProgramData,
        ] {
            // An empty list of directories: no file is ever found there.
            #[allow(unsafe_code)]
            // SAFETY: libgit2's search path is global state; this runs once
            // (OnceLock), at start-up before the backend starts any clone,
            // diff or status, so no other thread reads it meanwhile.
            let set = unsafe { git2::opts::set_search_path(level, "") };
            set.map_err(|e| e.message().to_owned())?;
        }
        Ok(())
    })
    .clone()
    .map_err(|message| git2::Error::from_str(&message))
}

/// Bounds libgit2's own network I/O for every clone: a connection attempt
/// fails after `connect`, and a connected server that sends or takes
/// nothing for `io` fails the clone, so a server that never answers cannot
/// pin a clone's thread. libgit2 keeps these process-wide.
pub(crate) fn set_network_timeouts(
    connect: std::time::Duration,
    io: std::time::Duration,
) -> Result<(), git2::Error> {
    let millis = |d: std::time::Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    #[allow(unsafe_code)]
    // SAFETY: libgit2's timeouts are plain global integers; this runs at
    // start-up, before the backend starts any clone.
    unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(millis(connect))?;
        git2::opts::set_server_timeout_in_milliseconds(millis(io))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Set in the child process that runs the check (see below).
    const CHILD: &str = "REPO_RUNNER_GIT_ISOLATION_CHILD";
    const NAME: &str = "git::tests::the_users_git_config_is_not_read_once_isolated";

    #[test]
    fn the_users_git_config_is_not_read_once_isolated() {
        if std::env::var_os(CHILD).is_some() {
            check_isolation();
            return;
        }
        // libgit2 finds the user's config through HOME and XDG_CONFIG_HOME,
        // and isolating changes libgit2's global state: the check runs in a
        // child process (this test binary, this test alone) started with a
        // home of its own, so no thread of this process sees either change.
        let home = tempfile::tempdir().unwrap();
        std::fs::write(
            home.path().join(".gitconfig"),
            "[user]\n\tname = from-home\n",
        )
        .unwrap();
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--test-threads=1"])
            .env(CHILD, "1")
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "the check failed or did not run:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn check_isolation() {
        let before = git2::Config::open_default().unwrap();
        assert_eq!(before.get_string("user.name").unwrap(), "from-home");

        super::isolate_from_user_config().unwrap();

        let after = git2::Config::open_default().unwrap();
        assert!(after.get_string("user.name").is_err());
    }
}
