//! The CLI's process: spawned in its own process group, and ended with all
//! of its descendants when the run is cancelled or dropped.
//!
//! Cancellation is a small state machine: requested → `SIGTERM` to the group
//! → up to [`TERM_GRACE`] for the CLI to exit → `SIGKILL` to the group and to
//! every descendant seen before the signal (an agent's command may have left
//! the group) → the child reaped. Only then does the stream end.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Child;

/// How long the CLI gets to exit after `SIGTERM` before it is killed.
pub const TERM_GRACE: Duration = Duration::from_millis(1000);

/// Kills the process group on drop unless the child was reaped and cleaned
/// up by [`ProcessGroup::terminate`] or [`ProcessGroup::reap_leftovers`].
pub(crate) struct ProcessGroup {
    pid: Option<Pid>,
}

impl ProcessGroup {
    pub(crate) fn new(child: &Child) -> Self {
        Self {
            pid: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        }
    }

    /// Ends the CLI and everything it started, and waits until it is gone.
    pub(crate) async fn terminate(&mut self, child: &mut Child) {
        let Some(pid) = self.pid else {
            let _ = child.wait().await;
            return;
        };
        let descendants = descendants_of(pid);
        let _ = killpg(pid, Signal::SIGTERM);
        if tokio::time::timeout(TERM_GRACE, child.wait())
            .await
            .is_err()
        {
            tracing::debug!(pid = pid.as_raw(), "codex ignored SIGTERM; killing");
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = child.kill().await;
        }
        kill_all(pid, &descendants);
        self.pid = None;
    }

    /// After a normal exit: nothing the run started may outlive it.
    pub(crate) fn reap_leftovers(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let descendants = descendants_of(pid);
            kill_all(pid, &descendants);
        }
    }
}

fn kill_all(group: Pid, descendants: &[Pid]) {
    let _ = killpg(group, Signal::SIGKILL);
    let _ = kill(group, Signal::SIGKILL);
    for pid in descendants {
        let _ = kill(*pid, Signal::SIGKILL);
    }
}

/// Every live descendant of `root`, read from `/proc` (empty elsewhere).
fn descendants_of(root: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent_pid(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut seen = HashSet::new();
    let mut stack = vec![root.as_raw()];
    let mut out = Vec::new();
    while let Some(pid) = stack.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if seen.insert(*child) {
                out.push(Pid::from_raw(*child));
                stack.push(*child);
            }
        }
    }
    out
}

fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or
    // parentheses, so the fields are read after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}
