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
//! caller's death takes the namespace down with it. A caller without root
//! or `CAP_SYS_ADMIN` gets the same namespaces inside a user namespace of
//! their own ([`MappedUser`]). A marker variable in the
//! environment of the CLI and of its agent's commands ([`OWNER_MARKER`])
//! lets a later caller find and kill what a dead one left ([`kill_marked`]). Without a namespace, each run's CLI also carries a
//! variable of its own ([`RUN_MARKER`]), and when the run ends every process
//! still carrying it is killed: that catches a `setsid` process too, unless
//! the agent cleared its environment.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Child;

mod output;

pub(crate) use output::{truncate, StderrTail};
pub use output::{MAX_LINE_BYTES, STDERR_TAIL_BYTES};

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

/// The markers of one run's processes, as `(variable, value)`: the owner's
/// and the run's `token`, when [`Containment::owner`] is set (none else).
pub(crate) fn markers(containment: &Containment, token: Option<&str>) -> Vec<(String, String)> {
    match (&containment.owner, token) {
        (Some(owner), Some(token)) => vec![
            (OWNER_MARKER.to_owned(), owner.clone()),
            (RUN_MARKER.to_owned(), token.to_owned()),
        ],
        _ => Vec::new(),
    }
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
    /// Folders a run sees empty: in the PID namespace's own mount namespace
    /// each is covered by a fresh tmpfs before the CLI starts, and only the
    /// thread's [`ThreadOptions::exposed`](crate::ThreadOptions::exposed)
    /// folders inside them are bound back. The agent's sandbox lets it read
    /// the whole file system; this is what keeps one session's workspace
    /// and Codex home out of another session's reach. Needs
    /// [`Containment::pid_namespace`]; ignored without it.
    pub hidden: Vec<PathBuf>,
}

/// The util-linux programs that put the CLI in its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceTools {
    pub setpriv: PathBuf,
    pub unshare: PathBuf,
    /// A POSIX shell, `mount` and `mkdir`: what covers the hidden folders
    /// inside the namespace ([`Containment::hidden`]).
    pub sh: PathBuf,
    pub mount: PathBuf,
    pub mkdir: PathBuf,
    /// `Some` when the namespaces are made inside a user namespace, for a
    /// caller without root or `CAP_SYS_ADMIN`; `None`: made directly.
    pub user_namespace: Option<MappedUser>,
}

/// The ids a caller without privileges keeps in its runs' user namespaces.
///
/// The PID and mount namespaces are made in a user namespace where the
/// caller is root (`unshare --user --map-root-user`), which is what lets it
/// mount the covers of [`Containment::hidden`]. The CLI must not keep that
/// root: a process with `CAP_SYS_ADMIN` over the mount namespace could
/// unmount the covers. So the CLI is started in a second user namespace,
/// nested in the first, where it is `uid`/`gid` again (the caller's own ids,
/// mapped to the first namespace's root, which is the caller outside) and
/// holds no capability over the mount namespace. The covers then cannot be
/// removed: mounts a namespace inherits from a more privileged one are
/// locked together, so not even a further user namespace of the agent's own
/// lifts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedUser {
    pub uid: u32,
    pub gid: u32,
}

impl MappedUser {
    /// This process's effective ids, which own the files it creates.
    pub fn current() -> Self {
        Self {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }
}

impl NamespaceTools {
    /// Finds `setpriv` and `unshare` on this process's `PATH` and checks
    /// that they can make a PID namespace here, hiding a folder: directly
    /// (root, or the capability), else inside a user namespace.
    pub async fn probe() -> Result<Self, ProbeError> {
        let direct = Self {
            setpriv: on_path("setpriv").ok_or(ProbeError::Missing("setpriv"))?,
            unshare: on_path("unshare").ok_or(ProbeError::Missing("unshare"))?,
            sh: on_path("sh").ok_or(ProbeError::Missing("sh"))?,
            mount: on_path("mount").ok_or(ProbeError::Missing("mount"))?,
            mkdir: on_path("mkdir").ok_or(ProbeError::Missing("mkdir"))?,
            user_namespace: None,
        };
        let true_bin = on_path("true").ok_or(ProbeError::Missing("true"))?;
        let direct_refusal = match direct.check(&true_bin).await? {
            None => return Ok(direct),
            Some(refusal) => refusal,
        };
        let in_user_namespace = Self {
            user_namespace: Some(MappedUser::current()),
            ..direct
        };
        match in_user_namespace.check(&true_bin).await? {
            None => Ok(in_user_namespace),
            Some(refusal) => Err(ProbeError::Refused {
                direct: direct_refusal,
                user_namespace: refusal,
            }),
        }
    }

    /// Launches `true_bin` as a run's CLI would be; `Some` of what the
    /// tools printed when they failed. The launch hides a folder too, so
    /// that a host where the namespace works but tmpfs or bind mounts do
    /// not is found now, not at a run.
    async fn check(&self, true_bin: &Path) -> Result<Option<String>, ProbeError> {
        let probe_dir = std::env::temp_dir();
        let output = tokio::process::Command::new(&self.setpriv)
            .args(self.launcher_args(true_bin, &[probe_dir], &[]))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(ProbeError::Spawn)?;
        Ok((!output.status.success())
            .then(|| String::from_utf8_lossy(&output.stderr).trim().to_owned()))
    }

    /// The arguments of `setpriv` that run `program` as the first process
    /// of a new PID namespace, killed when its launcher dies, with `hidden`
    /// covered but for `exposed` (see [`Containment::hidden`]).
    pub(crate) fn launcher_args(
        &self,
        program: &Path,
        hidden: &[PathBuf],
        exposed: &[PathBuf],
    ) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["--pdeathsig", "KILL", "--"]
            .iter()
            .map(OsString::from)
            .collect();
        args.push(self.unshare.clone().into_os_string());
        if self.user_namespace.is_some() {
            args.extend(["--user", "--map-root-user"].iter().map(OsString::from));
        }
        // `--kill-child` makes unshare give its child `PR_SET_PDEATHSIG`
        // too, so the chain runner → unshare → CLI dies link by link.
        // `--mount-proc` gives the namespace a /proc of its own (and with
        // it a mount namespace): the CLI's bubblewrap sandbox reads its own
        // pid there, and the agent sees only its run's processes.
        args.extend(
            ["--pid", "--mount-proc", "--fork", "--kill-child", "--"]
                .iter()
                .map(OsString::from),
        );
        if let Some(script) = self.hiding_script(hidden, exposed) {
            args.push(self.sh.clone().into_os_string());
            args.push("-c".into());
            args.push(script);
            args.push("sh".into());
        }
        if let Some(user) = self.user_namespace {
            // The CLI as the caller's own user again, without the
            // namespace's root (see `MappedUser`).
            args.push(self.unshare.clone().into_os_string());
            args.push("--user".into());
            args.push(format!("--map-user={}", user.uid).into());
            args.push(format!("--map-group={}", user.gid).into());
            args.push("--".into());
        }
        args.push(program.as_os_str().to_owned());
        args
    }

    /// The shell script that covers `hidden` and binds `exposed` back, then
    /// runs its arguments; `None` when nothing is to be hidden. Each exposed
    /// folder is opened (as a file descriptor) before the covers go on, and
    /// bound back through `/proc/self/fd/N`: after the cover, its path
    /// leads into the empty tmpfs. `mount -c` keeps `mount` from resolving
    /// that link to the now-covered path. Any failure stops the script
    /// (`set -e`), and the run fails rather than run uncovered.
    fn hiding_script(&self, hidden: &[PathBuf], exposed: &[PathBuf]) -> Option<OsString> {
        let roots = outermost(hidden);
        if roots.is_empty() {
            return None;
        }
        // Only what a cover would hide needs binding back; file descriptors
        // 3 to 9 are what a POSIX shell's redirections can name.
        let mut shown: Vec<&PathBuf> = exposed
            .iter()
            .filter(|dir| {
                roots
                    .iter()
                    .any(|root| dir.starts_with(root) && *dir != root)
            })
            .collect();
        if shown.len() > 7 {
            tracing::warn!(count = shown.len(), "only 7 exposed folders are bound back");
            shown.truncate(7);
        }
        let mount = quote(self.mount.as_os_str());
        let mkdir = quote(self.mkdir.as_os_str());
        let mut script: Vec<u8> = b"set -eu\n".to_vec();
        if !shown.is_empty() {
            script.extend_from_slice(b"exec");
            for (i, dir) in shown.iter().enumerate() {
                script.extend_from_slice(format!(" {}<", i + 3).as_bytes());
                script.extend_from_slice(&quote(dir.as_os_str()));
            }
            script.push(b'\n');
        }
        for root in &roots {
            script.extend_from_slice(&mount);
            script.extend_from_slice(
                b" -t tmpfs -o mode=0755,size=1m,nosuid,nodev repo-runner-hidden ",
            );
            script.extend_from_slice(&quote(root.as_os_str()));
            script.push(b'\n');
        }
        for (i, dir) in shown.iter().enumerate() {
            let dir = quote(dir.as_os_str());
            script.extend_from_slice(&mkdir);
            script.extend_from_slice(b" -p ");
            script.extend_from_slice(&dir);
            script.push(b'\n');
            script.extend_from_slice(&mount);
            script.extend_from_slice(format!(" -c --bind /proc/self/fd/{} ", i + 3).as_bytes());
            script.extend_from_slice(&dir);
            script.push(b'\n');
        }
        if !shown.is_empty() {
            script.extend_from_slice(b"exec");
            for i in 0..shown.len() {
                script.extend_from_slice(format!(" {}<&-", i + 3).as_bytes());
            }
            script.push(b'\n');
        }
        // The launcher's working directory may be under a cover; the CLI
        // gets its own with `--cd`.
        script.extend_from_slice(b"cd /\nexec \"$@\"\n");
        Some(OsString::from_vec(script))
    }
}

/// `dirs` without duplicates and without any folder inside another one of
/// them (covering the outer one hides it already).
fn outermost(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut sorted: Vec<&PathBuf> = dirs.iter().collect();
    sorted.sort_by_key(|dir| dir.components().count());
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in sorted {
        if !out.iter().any(|outer| dir.starts_with(outer)) {
            out.push(dir.clone());
        }
    }
    out
}

/// `value` as one word of a POSIX shell: single-quoted, each `'` written
/// as `'\''`. Any bytes but NUL, which no path holds.
fn quote(value: &std::ffi::OsStr) -> Vec<u8> {
    let mut out = vec![b'\''];
    for &byte in value.as_bytes() {
        if byte == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(byte);
        }
    }
    out.push(b'\'');
    out
}

/// Why a PID namespace cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("`{0}` (util-linux) is not on PATH")]
    Missing(&'static str),
    #[error("cannot run setpriv")]
    Spawn(#[source] std::io::Error),
    #[error(
        "unshare cannot create a PID namespace here, neither directly (that needs root or \
         CAP_SYS_ADMIN: {direct}) nor in a user namespace (that needs the kernel, seccomp and any \
         AppArmor profile to allow user namespaces and mounts in them: {user_namespace})"
    )]
    Refused {
        /// What `unshare` said without a user namespace.
        direct: String,
        /// What `unshare` said with one.
        user_namespace: String,
    },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> NamespaceTools {
        NamespaceTools {
            setpriv: "/bin/setpriv".into(),
            unshare: "/bin/unshare".into(),
            sh: "/bin/sh".into(),
            mount: "/bin/mount".into(),
            mkdir: "/bin/mkdir".into(),
            user_namespace: None,
        }
    }

    #[test]
    fn nothing_hidden_runs_the_program_directly() {
        let args = tools().launcher_args(Path::new("/bin/codex"), &[], &["/w/s".into()]);
        assert_eq!(args.last().unwrap(), "/bin/codex");
        assert!(!args.iter().any(|a| a == "/bin/sh"));
    }

    #[test]
    fn in_a_user_namespace_the_program_runs_as_the_caller_again() {
        let tools = NamespaceTools {
            user_namespace: Some(MappedUser {
                uid: 1000,
                gid: 1001,
            }),
            ..tools()
        };

        let args = tools.launcher_args(Path::new("/bin/codex"), &[], &[]);

        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--pdeathsig",
                "KILL",
                "--",
                "/bin/unshare",
                "--user",
                "--map-root-user",
                "--pid",
                "--mount-proc",
                "--fork",
                "--kill-child",
                "--",
                "/bin/unshare",
                "--user",
                "--map-user=1000",
                "--map-group=1001",
                "--",
                "/bin/codex"
            ]
        );
    }

    #[test]
    fn the_script_covers_outermost_folders_and_binds_exposed_ones_back() {
        let hidden: Vec<PathBuf> = vec!["/d/workspaces".into(), "/d".into(), "/homes".into()];
        let exposed: Vec<PathBuf> = vec![
            "/d/workspaces/it's".into(),
            "/homes/k1".into(),
            "/elsewhere".into(),
            "/homes".into(),
        ];
        let script = tools().hiding_script(&hidden, &exposed).unwrap();
        assert_eq!(
            script.to_str().unwrap(),
            "set -eu\n\
             exec 3<'/d/workspaces/it'\\''s' 4<'/homes/k1'\n\
             '/bin/mount' -t tmpfs -o mode=0755,size=1m,nosuid,nodev repo-runner-hidden '/d'\n\
             '/bin/mount' -t tmpfs -o mode=0755,size=1m,nosuid,nodev repo-runner-hidden '/homes'\n\
             '/bin/mkdir' -p '/d/workspaces/it'\\''s'\n\
             '/bin/mount' -c --bind /proc/self/fd/3 '/d/workspaces/it'\\''s'\n\
             '/bin/mkdir' -p '/homes/k1'\n\
             '/bin/mount' -c --bind /proc/self/fd/4 '/homes/k1'\n\
             exec 3<&- 4<&-\n\
             cd /\n\
             exec \"$@\"\n"
        );
    }

    /// Needs root (or CAP_SYS_ADMIN), as the runner's containment tests do
    /// (CI runs as root).
    #[tokio::test]
    async fn a_hidden_folder_is_empty_but_for_what_is_exposed() {
        let tools = NamespaceTools::probe()
            .await
            .expect("namespaces need root or CAP_SYS_ADMIN");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("root");
        std::fs::create_dir_all(root.join("mine")).unwrap();
        std::fs::create_dir_all(root.join("theirs")).unwrap();
        std::fs::write(root.join("mine/file"), "mine").unwrap();
        std::fs::write(root.join("theirs/file"), "theirs").unwrap();
        let script = format!(
            "cat {r}/mine/file; echo; cat {r}/theirs/file 2>&1; ls {r}; echo written > {r}/mine/new",
            r = root.display()
        );
        let output = tokio::process::Command::new(&tools.setpriv)
            .args(tools.launcher_args(&tools.sh, std::slice::from_ref(&root), &[root.join("mine")]))
            .args(["-c", &script])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{output:?}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{stdout}");
        assert_eq!(lines[0], "mine");
        assert!(lines[1].ends_with("No such file or directory"), "{stdout}");
        assert_eq!(lines[2], "mine", "only `mine` is listed");
        // The exposed folder is the real one, and the cover is gone after.
        assert_eq!(
            std::fs::read_to_string(root.join("mine/new")).unwrap(),
            "written\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("theirs/file")).unwrap(),
            "theirs"
        );
    }

    /// The unprivileged form, launched as `nobody` with no capability at
    /// all (as in the runner's container): the cover holds, and the program
    /// can lift it neither with `umount` nor from a user namespace of its
    /// own. Needs root to become `nobody` (CI runs as root).
    #[tokio::test]
    async fn an_unprivileged_caller_hides_folders_the_program_cannot_uncover() {
        let probed = NamespaceTools::probe()
            .await
            .expect("namespaces need root or CAP_SYS_ADMIN");
        let nobody = MappedUser {
            uid: 65534,
            gid: 65534,
        };
        let tools = NamespaceTools {
            user_namespace: Some(nobody),
            ..probed
        };
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let root = base.join("root");
        std::fs::create_dir_all(root.join("mine")).unwrap();
        std::fs::create_dir_all(root.join("theirs")).unwrap();
        std::fs::write(root.join("mine/file"), "mine").unwrap();
        std::fs::write(root.join("theirs/file"), "theirs").unwrap();
        for path in [&base, &root, &root.join("mine"), &root.join("theirs")] {
            std::os::unix::fs::chown(path, Some(nobody.uid), Some(nobody.gid)).unwrap();
        }
        let script = format!(
            "id -u; cat {r}/mine/file; echo; \
             umount {r} 2>/dev/null || echo kept; \
             {unshare} --user --map-root-user --mount sh -c 'umount -l {r} 2>/dev/null || echo kept'; \
             cat {r}/theirs/file 2>&1; echo written > {r}/mine/new",
            r = root.display(),
            unshare = tools.unshare.display(),
        );
        let output = tokio::process::Command::new(&tools.setpriv)
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
            ])
            .arg(&tools.setpriv)
            .args(tools.launcher_args(&tools.sh, std::slice::from_ref(&root), &[root.join("mine")]))
            .args(["-c", &script])
            .current_dir("/")
            .output()
            .await
            .unwrap();

        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{output:?}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 5, "{stdout}");
        assert_eq!(lines[..4], ["65534", "mine", "kept", "kept"], "{stdout}");
        assert!(lines[4].ends_with("No such file or directory"), "{stdout}");
        assert_eq!(
            std::fs::read_to_string(root.join("mine/new")).unwrap(),
            "written\n"
        );
    }
}
