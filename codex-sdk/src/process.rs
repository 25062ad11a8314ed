//! The CLI's process: spawned in its own process group, and ended with all
//! of its descendants when the run is cancelled or dropped.
//!
//! Cancellation is a small state machine: requested → `SIGTERM` to the group
//! → up to [`TERM_GRACE`] for the CLI to exit → `SIGKILL` to the group and to
//! every descendant seen before the signal (an agent's command may have left
//! the group) → the child reaped. Only then does the stream end.
//!
//! A process group does not hold a process that calls `setsid`, and nothing
//! of it dies with the caller. [`Containment`] adds what Linux offers for
//! that: each run's CLI as the first process of its own PID namespace
//! (`unshare --pid --fork --kill-child`), so that when the CLI ends the
//! kernel kills everything in the namespace, `setsid` or not; and the
//! launcher holds `PR_SET_PDEATHSIG` (`setpriv --pdeathsig KILL`), so the
//! caller's death takes the namespace down with it. A marker variable in the
//! environment of the CLI and of its agent's commands ([`OWNER_MARKER`])
//! lets a later caller find and kill what a dead one left ([`kill_marked`]). Without a namespace, each run's CLI also carries a
//! variable of its own ([`RUN_MARKER`]), and when the run ends every process
//! still carrying it is killed: that catches a `setsid` process too, unless
//! the agent cleared its environment.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Child;

/// How long the CLI gets to exit after `SIGTERM` before it is killed.
pub const TERM_GRACE: Duration = Duration::from_millis(1000);

/// The variable that marks one run's CLI (and its agent's commands) with a
/// token of its own, when [`Containment::owner`] is set.
pub const RUN_MARKER: &str = "CODEX_SDK_RUN";

/// The variable that marks every CLI (and agent's command) with
/// [`Containment::owner`].
pub const OWNER_MARKER: &str = "CODEX_SDK_OWNER";

/// A token no other run of any process of this machine uses.
pub(crate) fn run_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// How a run's processes are held, beyond their own process group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Containment {
    /// Run the CLI in a PID namespace of its own, launched by these tools;
    /// `None` keeps the plain process group.
    pub pid_namespace: Option<NamespaceTools>,
    /// The value of [`OWNER_MARKER`] in the CLI's environment and its
    /// agent's commands (who started them: the runner puts its workspaces
    /// root here), so that a later owner can find what a dead one left.
    pub owner: Option<String>,
}

/// The util-linux programs that put the CLI in its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceTools {
    pub setpriv: PathBuf,
    pub unshare: PathBuf,
}

impl NamespaceTools {
    /// Finds `setpriv` and `unshare` on this process's `PATH` and checks
    /// that they can make a PID namespace here (root, or the capability).
    pub async fn probe() -> Result<Self, ProbeError> {
        let tools = Self {
            setpriv: on_path("setpriv").ok_or(ProbeError::Missing("setpriv"))?,
            unshare: on_path("unshare").ok_or(ProbeError::Missing("unshare"))?,
        };
        let true_bin = on_path("true").ok_or(ProbeError::Missing("true"))?;
        let output = tokio::process::Command::new(&tools.setpriv)
            .args(tools.launcher_args(&true_bin))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(ProbeError::Spawn)?;
        if output.status.success() {
            Ok(tools)
        } else {
            Err(ProbeError::Refused(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ))
        }
    }

    /// The arguments of `setpriv` that run `program` as the first process
    /// of a new PID namespace, killed when its launcher dies.
    pub(crate) fn launcher_args(&self, program: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["--pdeathsig", "KILL", "--"]
            .iter()
            .map(OsString::from)
            .collect();
        args.push(self.unshare.clone().into_os_string());
        // `--kill-child` makes unshare give its child `PR_SET_PDEATHSIG`
        // too, so the chain runner → unshare → CLI dies link by link.
        // `--mount-proc` gives the namespace a /proc of its own: the CLI's
        // bubblewrap sandbox reads its own pid there, and the agent sees
        // only its run's processes.
        args.extend(
            ["--pid", "--mount-proc", "--fork", "--kill-child", "--"]
                .iter()
                .map(OsString::from),
        );
        args.push(program.as_os_str().to_owned());
        args
    }
}

/// Why a PID namespace cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("`{0}` (util-linux) is not on PATH")]
    Missing(&'static str),
    #[error("cannot run setpriv")]
    Spawn(#[source] std::io::Error),
    #[error("unshare cannot create a PID namespace here (it needs root or CAP_SYS_ADMIN): {0}")]
    Refused(String),
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Sends `SIGKILL` to every process (but this one) whose environment holds
/// exactly `name=value`; returns how many. For a caller starting up: what
/// it finds was left by an earlier one that died.
pub fn kill_marked(name: &str, value: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let wanted = format!("{name}={value}").into_bytes();
    let me = std::process::id();
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Unreadable (another user's process, or gone): not ours to kill.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ
            .split(|b| *b == 0)
            .any(|var| var == wanted.as_slice())
        {
            continue;
        }
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        if kill(Pid::from_raw(raw), Signal::SIGKILL).is_ok() {
            tracing::debug!(pid, name, "killed a marked process");
            killed += 1;
        }
    }
    killed
}

/// Kills the process group on drop unless the child was reaped and cleaned
/// up by [`ProcessGroup::terminate`] or [`ProcessGroup::reap_leftovers`].
pub(crate) struct ProcessGroup {
    pid: Option<Pid>,
    /// The run's token: whatever still carries it when the run ends is
    /// killed. `None` in a PID namespace, where the kernel does that.
    run_token: Option<String>,
}

impl ProcessGroup {
    pub(crate) fn new(child: &Child, run_token: Option<String>) -> Self {
        Self {
            pid: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
            run_token,
        }
    }

    /// Kills what carries the run's token (it left the group).
    fn kill_run_marked(&self) {
        if let Some(token) = &self.run_token {
            let killed = kill_marked(RUN_MARKER, token);
            if killed > 0 {
                tracing::info!(killed, "killed processes that left the run's group");
            }
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
        self.kill_run_marked();
        self.pid = None;
    }

    /// After a normal exit: nothing the run started may outlive it.
    pub(crate) fn reap_leftovers(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = killpg(pid, Signal::SIGKILL);
            self.kill_run_marked();
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let descendants = descendants_of(pid);
            kill_all(pid, &descendants);
            self.kill_run_marked();
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
