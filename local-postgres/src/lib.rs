//! A private PostgreSQL cluster in a folder: created with `initdb` on first
//! use (trust authentication, loopback only), started and stopped with
//! `pg_ctl`. As root, the server programs run as the `postgres` system user,
//! because `initdb` and `postgres` refuse to run as root.
//!
//! Used by the test harness, by `scripts/test.sh` and by the one-command run,
//! so they all start Postgres the same way.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::{chown, Uid, User};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install them (Debian: apt-get install postgresql) or set PG_BIN"
    )]
    BinariesNotFound,
    #[error("running as root needs the `postgres` system user to own the cluster; create it or run as another user")]
    NoPostgresUser,
    #[error("{step} failed: {detail}")]
    Command { step: &'static str, detail: String },
    #[error("cannot prepare {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// A running cluster. Stopped on [`LocalPostgres::stop`] or on drop.
#[derive(Debug)]
pub struct LocalPostgres {
    data_dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    stopped: bool,
}

impl LocalPostgres {
    /// Creates the cluster in `data_dir` if it has none, and starts it on
    /// `port` (a free one when `None`). A second start reuses the data.
    pub fn start(data_dir: &Path, port: Option<u16>) -> Result<Self> {
        let bin_dir = find_bin_dir().ok_or(Error::BinariesNotFound)?;
        let io = |source| Error::Io {
            path: data_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let data_dir = data_dir.canonicalize().map_err(io)?;
        let owner = server_user()?;
        if let Some(user) = &owner {
            // The server user must be able to reach and own its folder.
            make_traversable(&data_dir);
            chown(&data_dir, Some(user.uid), Some(user.gid)).map_err(|e| io(e.into()))?;
        }
        if !data_dir.join("PG_VERSION").exists() {
            run(
                &owner,
                bin_dir.join("initdb"),
                &[
                    "-D",
                    &data_dir.display().to_string(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                "initdb",
            )?;
        }
        if let Some(running) = running_port(&data_dir) {
            tracing::info!(
                port = running,
                "local PostgreSQL already running; reusing it"
            );
            return Ok(Self {
                data_dir,
                bin_dir,
                port: running,
                // Someone else started it; leave it running for them.
                stopped: true,
            });
        }
        let port = match port {
            Some(port) => port,
            None => free_port().map_err(io)?,
        };
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c max_connections=200 -c fsync=off",
            data_dir.display()
        );
        let log = data_dir.join("server.log");
        run(
            &owner,
            bin_dir.join("pg_ctl"),
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                &data_dir.display().to_string(),
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
            ],
            "pg_ctl start",
        )
        .map_err(|e| match e {
            Error::Command { step, detail } => Error::Command {
                step,
                detail: format!(
                    "{detail}; server log: {}",
                    std::fs::read_to_string(&log)
                        .unwrap_or_default()
                        .lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .join(" | ")
                ),
            },
            other => other,
        })?;
        tracing::info!(port, data = %data_dir.display(), "local PostgreSQL started");
        Ok(Self {
            data_dir,
            bin_dir,
            port,
            stopped: false,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the `postgres` superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `name` unless it exists.
    pub fn ensure_database(&self, name: &str) -> Result<()> {
        let output = Command::new(tool(&self.bin_dir, "createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Command {
                step: "createdb",
                detail: e.to_string(),
            })?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() || stderr.contains("already exists") {
            return Ok(());
        }
        Err(Error::Command {
            step: "createdb",
            detail: stderr.trim().to_owned(),
        })
    }

    /// Stops the server (fast shutdown) and waits for it.
    pub fn stop(mut self) -> Result<()> {
        self.stopped = true;
        stop(&self.bin_dir, &self.data_dir, "fast")
    }

    /// Leaves the server running after this value is dropped.
    pub fn detach(mut self) {
        self.stopped = true;
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = stop(&self.bin_dir, &self.data_dir, "immediate");
        }
    }
}

/// The port of the server running on `data_dir`, from its `postmaster.pid`
/// (line 4), when that server process is alive.
fn running_port(data_dir: &Path) -> Option<u16> {
    let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let mut lines = pid_file.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let port = lines.nth(2)?.trim().parse().ok()?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
        .is_ok()
        .then_some(port)
}

/// Stops the cluster of `data_dir` if one runs there.
pub fn stop_cluster(data_dir: &Path) -> Result<()> {
    let bin_dir = find_bin_dir().ok_or(Error::BinariesNotFound)?;
    stop(&bin_dir, data_dir, "fast")
}

fn stop(bin_dir: &Path, data_dir: &Path, mode: &str) -> Result<()> {
    if !data_dir.join("postmaster.pid").exists() {
        return Ok(());
    }
    run(
        &server_user()?,
        bin_dir.join("pg_ctl"),
        &[
            "stop",
            "-w",
            "-m",
            mode,
            "-D",
            &data_dir.display().to_string(),
        ],
        "pg_ctl stop",
    )
}

/// `PG_BIN`, else the folder of `initdb` on `PATH`, else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// `name` from the server's folder, else from `PATH`, else from the newest
/// Debian folder (a folder on `PATH` may hold wrappers of some tools only).
fn tool(bin_dir: &Path, name: &str) -> PathBuf {
    let local = bin_dir.join(name);
    if local.is_file() {
        return local;
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .max();
    debian.unwrap_or_else(|| PathBuf::from(name))
}

/// The user to run the server programs as: `postgres` when we are root.
fn server_user() -> Result<Option<User>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some(user)),
        _ => Err(Error::NoPostgresUser),
    }
}

fn run(owner: &Option<User>, program: PathBuf, args: &[&str], step: &'static str) -> Result<()> {
    let mut command = match owner {
        Some(user) => {
            let mut command = Command::new("runuser");
            command.args(["-u", &user.name, "--"]).arg(&program);
            command
        }
        None => Command::new(&program),
    };
    // pg_ctl's server inherits our stdout/stderr unless told otherwise; a
    // server that holds a caller's pipe open would keep it from ending.
    let output = command
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::Command {
            step,
            detail: format!("cannot run {}: {e}", program.display()),
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        step,
        detail: format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    })
}

/// Lets other users traverse every parent folder (a temporary folder is
/// created private to root).
fn make_traversable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for ancestor in dir.ancestors().skip(1) {
        if let Ok(meta) = std::fs::metadata(ancestor) {
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                let _ = std::fs::set_permissions(
                    ancestor,
                    std::fs::Permissions::from_mode(mode | 0o011),
                );
            }
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
