//! A private PostgreSQL cluster in a folder: created with `initdb` on first
//! use, started and stopped with `pg_ctl`. As root, the server programs run
//! as the `postgres` system user, because `initdb` and `postgres` refuse to
//! run as root.
//!
//! Who gets in: the server listens on 127.0.0.1 only, and every TCP
//! connection needs the `postgres` role's password (scram-sha-256). The
//! password is generated at `initdb` and kept in the data folder
//! ([`PASSWORD_FILE`], mode 600, owned by whoever starts the cluster), so a
//! second start reads it back; [`LocalPostgres::url`] carries it. The unix
//! socket is in the data folder too, which `initdb` makes private to the
//! server's user (mode 700): only that user and root reach it, and it trusts
//! them. A folder made before passwords (trust on TCP, no password file) is
//! given one at its next start, keeping its data.
//!
//! Used by the test harness, by `scripts/test.sh` and by the one-command run,
//! so they all start Postgres the same way.

use std::fmt;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::{chown, Uid, User};
use url::Url;

/// The file in the data folder that holds the `postgres` role's password.
pub const PASSWORD_FILE: &str = "local-postgres.password";

/// The whole `pg_hba.conf`: the socket (in the private data folder) trusts
/// the users who can reach it; every TCP address needs the password.
const PG_HBA: &str = "\
# Written by local-postgres; rewritten at each start.
# The unix socket lives in the data folder (mode 700): only the server's
# user and root reach it. Every TCP address needs the password.
# TYPE  DATABASE     USER  ADDRESS        METHOD
local   all          all                  trust
host    all          all   127.0.0.1/32   scram-sha-256
host    all          all   ::1/128        scram-sha-256
local   replication  all                  trust
host    replication  all   127.0.0.1/32   scram-sha-256
host    replication  all   ::1/128        scram-sha-256
";

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
    #[error("the operating system's random source failed: {0}")]
    NoRandomness(String),
    #[error("cannot build the server's URL")]
    Url,
    #[error(
        "{path} is empty: remove it, and the next start gives the `postgres` role a new password"
    )]
    EmptyPassword { path: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// A running cluster. Stopped on [`LocalPostgres::stop`] or on drop.
#[derive(Debug)]
pub struct LocalPostgres {
    data_dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    url: ServerUrl,
    stopped: bool,
}

/// `postgres://postgres:PASSWORD@127.0.0.1:PORT`; `Debug` hides the password.
struct ServerUrl(Url);

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = self.0.port().unwrap_or_default();
        write!(f, "postgres://postgres:***@127.0.0.1:{port}")
    }
}

impl ServerUrl {
    /// Built by the URL parser, which percent-encodes the password.
    fn new(port: u16, password: &Password) -> Result<Self> {
        let mut url = Url::parse("postgres://127.0.0.1/").map_err(|_| Error::Url)?;
        url.set_port(Some(port)).map_err(|()| Error::Url)?;
        url.set_username("postgres").map_err(|()| Error::Url)?;
        url.set_password(Some(&password.0))
            .map_err(|()| Error::Url)?;
        Ok(Self(url))
    }
}

/// The `postgres` role's password; `Debug` does not print it.
struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// 32 random bytes as hex: safe in a URL, a file and an SQL literal.
    fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| Error::NoRandomness(e.to_string()))?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The password kept in `data_dir`; `None` when the folder has none (it
    /// was made before passwords, or `initdb` ended before it was written).
    fn read(data_dir: &Path) -> Result<Option<Self>> {
        let path = data_dir.join(PASSWORD_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().is_empty() => Err(Error::EmptyPassword {
                path: path.display().to_string(),
            }),
            Ok(text) => Ok(Some(Self(text.trim().to_owned()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Keeps the password in `data_dir`, readable by this process's user
    /// only. Written aside and renamed, so a crash leaves the old file or
    /// none, never half of one.
    fn write(&self, data_dir: &Path) -> Result<()> {
        let path = data_dir.join(PASSWORD_FILE);
        let partial = data_dir.join(format!("{PASSWORD_FILE}.partial"));
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::remove_file(&partial) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(io)?;
        file.write_all(format!("{}\n", self.0).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        std::fs::rename(&partial, &path).map_err(io)
    }
}

/// A file `initdb --pwfile` reads the first password from, outside the
/// data folder (which `initdb` wants empty); removed on drop.
struct InitdbPasswordFile(PathBuf);

impl InitdbPasswordFile {
    fn create(password: &Password, owner: &Option<User>) -> Result<Self> {
        let mut name = [0u8; 8];
        getrandom::fill(&mut name).map_err(|e| Error::NoRandomness(e.to_string()))?;
        let name: String = name.iter().map(|b| format!("{b:02x}")).collect();
        let path = std::env::temp_dir().join(format!("local-postgres-pwfile-{name}"));
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        // A fresh name, created exclusively and private: nobody else can
        // have placed a file or a link there.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let this = Self(path.clone());
        file.write_all(format!("{}\n", password.0).as_bytes())
            .map_err(io)?;
        if let Some(user) = owner {
            chown(&path, Some(user.uid), Some(user.gid)).map_err(|e| io(e.into()))?;
        }
        Ok(this)
    }
}

impl Drop for InitdbPasswordFile {
    fn drop(&mut self) {
        // Nothing to do if it is gone already; a leftover is private.
        let _ = std::fs::remove_file(&self.0);
    }
}

impl LocalPostgres {
    /// Creates the cluster in `data_dir` if it has none, and starts it on
    /// `port` (a free one when `None`). A second start reuses the data and
    /// the password.
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
        let mut password = Password::read(&data_dir)?;
        if !data_dir.join("PG_VERSION").exists() {
            let fresh = Password::generate()?;
            let pwfile = InitdbPasswordFile::create(&fresh, &owner)?;
            run(
                &owner,
                bin_dir.join("initdb"),
                &[
                    "-D",
                    &data_dir.display().to_string(),
                    "-U",
                    "postgres",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    &format!("--pwfile={}", pwfile.0.display()),
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                "initdb",
            )?;
            drop(pwfile);
            fresh.write(&data_dir)?;
            password = Some(fresh);
        }
        // Before the server reads it: a folder from before passwords
        // trusted every TCP connection.
        let hba_changed = write_pg_hba(&data_dir, &owner)?;
        let (port, started) = match running_port(&data_dir) {
            Some(running) => {
                tracing::info!(
                    port = running,
                    "local PostgreSQL already running; reusing it"
                );
                if hba_changed {
                    reload(&owner, &bin_dir, &data_dir)?;
                }
                (running, false)
            }
            None => {
                let port = match port {
                    Some(port) => port,
                    None => free_port().map_err(io)?,
                };
                start_server(&owner, &bin_dir, &data_dir, port)?;
                tracing::info!(port, data = %data_dir.display(), "local PostgreSQL started");
                (port, true)
            }
        };
        let url = match password {
            Some(password) => Ok(password),
            None => give_password(&bin_dir, &data_dir, port),
        }
        .and_then(|password| ServerUrl::new(port, &password));
        let url = match url {
            Ok(url) => url,
            Err(e) => {
                if started {
                    // Not worth a second error: the first says why.
                    let _ = stop(&bin_dir, &data_dir, "immediate");
                }
                return Err(e);
            }
        };
        Ok(Self {
            data_dir,
            bin_dir,
            port,
            url,
            // Someone else started it; leave it running for them.
            stopped: !started,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the `postgres` superuser, with
    /// its password: hand it over, never log it.
    pub fn url(&self, database: &str) -> String {
        let mut url = self.url.0.clone();
        url.set_path(database);
        url.into()
    }

    /// Creates `name` unless it exists (through the socket: no password).
    pub fn ensure_database(&self, name: &str) -> Result<()> {
        let output = Command::new(tool(&self.bin_dir, "createdb"))
            .args(["-h"])
            .arg(&self.data_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", name])
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

/// Starts the server of `data_dir` on `port` and waits until it answers.
fn start_server(owner: &Option<User>, bin_dir: &Path, data_dir: &Path, port: u16) -> Result<()> {
    let options = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' -c password_encryption=scram-sha-256 -c max_connections=200 -c fsync=off",
        data_dir.display()
    );
    let log = data_dir.join("server.log");
    run(
        owner,
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
    })
}

/// Makes `pg_hba.conf` [`PG_HBA`]; true when it was something else.
fn write_pg_hba(data_dir: &Path, owner: &Option<User>) -> Result<bool> {
    let path = data_dir.join("pg_hba.conf");
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    if std::fs::read_to_string(&path).is_ok_and(|current| current == PG_HBA) {
        return Ok(false);
    }
    // Rewritten in place, so it keeps the owner and mode `initdb` gave it.
    std::fs::write(&path, PG_HBA).map_err(io)?;
    if let Some(user) = owner {
        chown(&path, Some(user.uid), Some(user.gid)).map_err(|e| io(e.into()))?;
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(true)
}

/// Makes the running server of `data_dir` read its configuration again.
fn reload(owner: &Option<User>, bin_dir: &Path, data_dir: &Path) -> Result<()> {
    run(
        owner,
        bin_dir.join("pg_ctl"),
        &["reload", "-D", &data_dir.display().to_string()],
        "pg_ctl reload",
    )
}

/// Gives the `postgres` role of a folder made before passwords a new one,
/// through the socket, and keeps it in the folder. Until then the role has
/// none, and a TCP connection (scram-sha-256) cannot log in as it.
fn give_password(bin_dir: &Path, data_dir: &Path, port: u16) -> Result<Password> {
    tracing::warn!(
        data = %data_dir.display(),
        "local PostgreSQL: this folder has no password (made by an earlier version, which let every local connection in); setting one"
    );
    let password = Password::generate()?;
    // On stdin, never on a command line, which every local user can read.
    let sql = format!(
        "SET password_encryption = 'scram-sha-256';\nALTER ROLE postgres PASSWORD '{}';\n",
        password.0
    );
    let mut child = Command::new(tool(bin_dir, "psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(data_dir)
        .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Command {
            step: "psql",
            detail: e.to_string(),
        })?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(sql.as_bytes()));
    let output = child.wait_with_output().map_err(|e| Error::Command {
        step: "psql",
        detail: e.to_string(),
    })?;
    if !output.status.success() || !matches!(written, Some(Ok(()))) {
        return Err(Error::Command {
            step: "setting the postgres role's password",
            // psql may quote the statement: keep the password out.
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
                    .trim()
                    .replace(&password.0, "***")
            ),
        });
    }
    password.write(data_dir)?;
    Ok(password)
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
