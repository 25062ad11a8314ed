//! The measured processes: a Postgres cluster (or a fresh database on a
//! given server), the runner and the backend as their real binaries with
//! the fake CLI as `CODEX_BIN`, and a git repository for the sessions.
//! Each server binds port 0 and is awaited on its "listening" log line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::procstat::Watched;

/// Log lines of a child kept for the error when it fails.
const LOG_TAIL_LINES: usize = 40;

/// Where the binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub runner: PathBuf,
    pub backend: PathBuf,
    pub fake_codex: PathBuf,
}

impl Binaries {
    /// The binaries next to this executable (the same cargo profile), or
    /// next to its `deps/` folder for a test; `BENCH_RUNNER_BIN`,
    /// `BENCH_BACKEND_BIN`, `BENCH_CODEX_BIN` override each.
    pub fn beside_current_exe() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let mut dir = exe
            .parent()
            .context("this executable has no folder")?
            .to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let find = |var: &str, name: &str| -> anyhow::Result<PathBuf> {
            let path = std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join(name));
            if !path.is_file() {
                bail!(
                    "{} not found; build it first (cargo build --release -p runner -p backend -p bench), \
                     or set {var}",
                    path.display()
                );
            }
            Ok(path)
        };
        Ok(Self {
            runner: find("BENCH_RUNNER_BIN", "runner")?,
            backend: find("BENCH_BACKEND_BIN", "backend")?,
            fake_codex: find("BENCH_CODEX_BIN", "bench-codex")?,
        })
    }
}

/// The database the backend uses.
enum Database {
    /// A cluster of the benchmark's own, stopped with the stack.
    Own(local_postgres::LocalPostgres),
    /// A database created on a given server, dropped with the stack.
    Shared { admin_url: String, name: String },
}

/// A child server and the tail of its log.
struct Server {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Spawns `program` with exactly `env` (and `PATH`, `HOME`), reads its
    /// stderr until `marker addr=...` and keeps draining it afterwards.
    async fn start(
        name: &str,
        program: &Path,
        env: &[(&str, String)],
        marker: &str,
    ) -> anyhow::Result<(Self, String)> {
        let mut command = Command::new(program);
        command.env_clear();
        for inherited in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(inherited) {
                command.env(inherited, value);
            }
        }
        let mut child = command
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "warn,runner=info,backend=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = |log: &Arc<Mutex<Vec<String>>>, line: String| {
            if let Ok(mut log) = log.lock() {
                if log.len() == LOG_TAIL_LINES {
                    log.remove(0);
                }
                log.push(line);
            }
        };
        let addr = loop {
            let Some(line) = lines.next_line().await? else {
                let tail = log.lock().map(|l| l.join("\n")).unwrap_or_default();
                bail!("{name} exited before listening:\n{tail}");
            };
            if line.contains(marker) {
                if let Some(addr) = line
                    .split("addr=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                {
                    break addr.to_owned();
                }
            }
            keep(&log, line);
        };
        // Drained to the end: a full pipe would stop the server.
        let drained = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep(&drained, line);
            }
        });
        Ok((Self { child, log }, addr))
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// SIGTERM, then waits for the exit.
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        }
        self.child.wait().await?;
        Ok(())
    }

    fn log_tail(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

/// How to start the stack.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// A server to create the database on (e.g. CI's `DATABASE_URL`);
    /// `None` starts a private cluster.
    pub database_url: Option<String>,
    /// Events a run may have, in the runner and the backend.
    pub max_events_per_run: usize,
}

/// The running stack.
pub struct Stack {
    pub runner_url: String,
    pub backend_url: String,
    /// `WORKSPACES_ROOT`.
    pub workspaces: PathBuf,
    /// A repository with one commit, for sessions to clone.
    pub repo: PathBuf,
    /// For the gates of the fake CLI, and S5's repositories.
    pub scratch: PathBuf,
    /// The backend's database, for S6's counts of rows and WAL.
    pub database_url: String,
    runner: Server,
    backend: Server,
    database: Option<Database>,
    postmaster: Option<u32>,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start(binaries: &Binaries, options: &StackOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("repo-runner-bench-")
            .tempdir()?;
        // The cluster runs as `postgres` when we are root: it must reach
        // its data folder.
        make_traversable(dir.path())?;
        let workspaces = dir.path().join("workspaces");
        let scratch = dir.path().join("scratch");
        let repo = dir.path().join("repos/bench");
        for folder in [&workspaces, &scratch, &repo] {
            std::fs::create_dir_all(folder)?;
        }
        init_repo(&repo)?;

        let (database, db_url, postmaster) = match &options.database_url {
            Some(admin_url) => {
                let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
                let url = create_database(admin_url, &name).await?;
                let shared = Database::Shared {
                    admin_url: admin_url.clone(),
                    name,
                };
                (shared, url, None)
            }
            None => {
                let data = dir.path().join("pg");
                let pg = tokio::task::spawn_blocking(move || {
                    let pg = local_postgres::LocalPostgres::start(&data, None)?;
                    pg.ensure_database("bench")?;
                    anyhow::Ok(pg)
                })
                .await??;
                let url = pg.url("bench");
                let postmaster = postmaster_pid(&dir.path().join("pg"));
                (Database::Own(pg), url, postmaster)
            }
        };

        let max_events = options.max_events_per_run.to_string();
        let (runner, runner_addr) = Server::start(
            "runner",
            &binaries.runner,
            &[
                ("RUNNER_ADDR", "127.0.0.1:0".into()),
                ("WORKSPACES_ROOT", workspaces.display().to_string()),
                (
                    "RUNNER_CODEX_HOMES",
                    dir.path().join("codex-homes").display().to_string(),
                ),
                ("CODEX_BIN", binaries.fake_codex.display().to_string()),
                // The suite's fake CLI speaks `codex exec`'s protocol.
                ("RUNNER_DRIVER", "exec".into()),
                ("RUNNER_MAX_EVENTS_PER_RUN", max_events.clone()),
                ("RUNNER_MAX_RUN_BYTES", (1usize << 30).to_string()),
            ],
            "runner listening",
        )
        .await?;
        let runner_url = format!("http://{runner_addr}");
        let backend = Server::start(
            "backend",
            &binaries.backend,
            &[
                ("BACKEND_ADDR", "127.0.0.1:0".into()),
                ("DATABASE_URL", db_url.clone()),
                ("RUNNER_URL", runner_url.clone()),
                ("WORKSPACES_ROOT", workspaces.display().to_string()),
                ("ALLOW_LOCAL_REPOS", "true".into()),
                // S5's git server listens on loopback, which the backend
                // refuses as a clone source by default (as its tests do).
                ("ALLOW_PRIVATE_CLONE_HOSTS", "true".into()),
                ("BACKEND_MAX_EVENTS_PER_RUN", max_events),
                // The suite measures the relay; one user on loopback. (With
                // tokens, a request costs one more indexed lookup.)
                ("AUTH_MODE", "none".into()),
                // That one user holds up to 2,000 streams at once (S3), past
                // the default cap of 64: the streams are still counted, as
                // in production, but none is refused.
                ("BACKEND_USER_MAX_STREAMS", "0".into()),
                // And it attaches them as fast as it can, from one address:
                // the per-address request rate would refuse most of them.
                ("BACKEND_IP_RATE_PER_SEC", "0".into()),
            ],
            "backend listening",
        )
        .await;
        let (backend, backend_addr) = match backend {
            Ok(started) => started,
            Err(e) => {
                // Stopped and awaited, not left to `kill_on_drop`.
                runner.stop().await?;
                return Err(e);
            }
        };
        Ok(Self {
            runner_url,
            backend_url: format!("http://{backend_addr}"),
            workspaces,
            repo,
            scratch,
            database_url: db_url,
            runner,
            backend,
            database: Some(database),
            postmaster,
            _dir: dir,
        })
    }

    /// The processes to measure when the runner alone is under load.
    pub fn runner_processes(&self) -> Vec<Watched> {
        vec![
            Watched {
                name: "runner",
                pid: self.runner.pid(),
                tree: false,
            },
            Watched {
                name: "client",
                pid: std::process::id(),
                tree: false,
            },
        ]
    }

    /// The processes to measure when the whole stack is under load.
    pub fn stack_processes(&self) -> Vec<Watched> {
        let mut watched = vec![Watched {
            name: "backend",
            pid: self.backend.pid(),
            tree: false,
        }];
        if let Some(pid) = self.postmaster {
            watched.push(Watched {
                name: "postgres",
                pid,
                tree: true,
            });
        }
        watched.extend(self.runner_processes());
        watched
    }

    /// The servers' recent log lines, for an error report.
    pub fn log_tails(&self) -> String {
        format!(
            "runner:\n{}\nbackend:\n{}",
            self.runner.log_tail(),
            self.backend.log_tail()
        )
    }

    /// Stops the backend, the runner and the database, in that order.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.backend.stop().await?;
        self.runner.stop().await?;
        match self.database.take() {
            Some(Database::Own(pg)) => tokio::task::spawn_blocking(move || pg.stop()).await??,
            Some(Database::Shared { admin_url, name }) => drop_database(&admin_url, &name).await?,
            None => {}
        }
        Ok(())
    }
}

fn make_traversable(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The first line of `postmaster.pid`.
fn postmaster_pid(data: &Path) -> Option<u32> {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

async fn admin(admin_url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "admin connection ended");
        }
    });
    Ok(client)
}

async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    admin(admin_url)
        .await?
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let mut url = reqwest::Url::parse(admin_url)?;
    url.set_path(name);
    Ok(url.to_string())
}

async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    admin(admin_url)
        .await?
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}

/// A repository on `main` with one commit.
fn init_repo(dir: &Path) -> anyhow::Result<()> {
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let output = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "Bench")
            .env("GIT_AUTHOR_EMAIL", "bench@example.com")
            .env("GIT_COMMITTER_NAME", "Bench")
            .env("GIT_COMMITTER_EMAIL", "bench@example.com")
            .output()?;
        if !output.status.success() {
            bail!(
                "git {args:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    };
    git(&["init", "-q", "-b", "main"])?;
    std::fs::write(dir.join("README.md"), "# bench\n")?;
    git(&["add", "."])?;
    git(&["commit", "-q", "-m", "initial"])
}
