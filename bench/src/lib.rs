//! The benchmark suite of repo-runner (docs/BENCHMARKS.md): a fake Codex
//! CLI (`bench-codex`, [`fake`]), the processes under test ([`stack`]), a
//! load client ([`client`]) that reads every event of every subscriber, the
//! scenarios ([`scenarios`]), CPU and memory from `/proc` ([`procstat`]),
//! the git repositories and smart-HTTP server of S5 ([`repos`]), and the
//! Markdown report ([`report`]).
//!
//! Every scenario runs against the runner alone and against the whole stack
//! (Postgres, runner, backend) in the same invocation, so each figure can
//! be read as a ratio. Nothing here changes the servers: they run as their
//! release (or test) binaries with the fake CLI as `CODEX_BIN`.

pub mod client;
pub mod fake;
pub mod procstat;
pub mod report;
pub mod repos;
pub mod scenarios;
pub mod stack;

use std::path::PathBuf;

use anyhow::{bail, Context};

const USAGE: &str = "usage: bench all [--small] [--only S1,S2,...] [--s5-repo PATH]... \
                     [--s7-files N] [--out FILE]";

/// `bench all [--small] [--only S1,...] [--s5-repo PATH]... [--s7-files N]
/// [--out FILE]`: runs every scenario (or those named) and prints (or
/// writes) the Markdown tables. Each `--s5-repo` is a git repository on disk
/// for S5 to serve and clone; without one, S5 clones the repository the
/// bench is run from (or, with `--small`, a small one of its own).
/// `--s7-files` is the size of S7's repository.
pub async fn run_main(args: Vec<String>) -> anyhow::Result<()> {
    let mut small = false;
    let mut out: Option<PathBuf> = None;
    let mut command = None;
    let mut only: Option<Vec<String>> = None;
    let mut s5_repos = Vec::new();
    let mut s7_files = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--small" => small = true,
            "--out" => match args.next() {
                Some(path) => out = Some(PathBuf::from(path)),
                None => bail!("--out needs a file"),
            },
            "--only" => match args.next() {
                Some(list) => {
                    only = Some(
                        list.split(',')
                            .map(|s| s.trim().to_ascii_uppercase())
                            .collect(),
                    )
                }
                None => bail!("--only needs a list of scenarios, e.g. S1,S2"),
            },
            "--s5-repo" => match args.next() {
                // S5 runs git elsewhere: a relative path would not resolve.
                Some(path) => s5_repos.push(
                    std::fs::canonicalize(&path)
                        .with_context(|| format!("--s5-repo {path}: no such repository"))?,
                ),
                None => bail!("--s5-repo needs the path of a git repository"),
            },
            "--s7-files" => match args.next().map(|n| n.parse::<usize>()) {
                Some(Ok(n)) if n >= 1000 => s7_files = Some(n),
                _ => bail!("--s7-files needs a number of files, at least 1000"),
            },
            "all" if command.is_none() => command = Some(arg),
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if command.is_none() {
        bail!("{USAGE}");
    }
    let mut sizes = if small {
        scenarios::Sizes::small()
    } else {
        scenarios::Sizes::full()
    };
    if let Some(only) = only {
        sizes.only = only;
    }
    if !s5_repos.is_empty() {
        sizes.s5_repos = s5_repos;
    }
    if let Some(files) = s7_files {
        sizes.s7_files = files;
    }
    let binaries = stack::Binaries::beside_current_exe()?;
    tracing::info!(?sizes, ?binaries, "starting");
    let measurements =
        scenarios::run_all(&binaries, stack::StackOptions::default(), &sizes).await?;
    let table = report::markdown(&measurements);
    match out {
        Some(path) => std::fs::write(&path, &table)?,
        None => std::io::Write::write_all(&mut std::io::stdout().lock(), table.as_bytes())?,
    }
    let wrong: Vec<&scenarios::Measurement> =
        measurements.iter().filter(|m| !m.correct()).collect();
    if !wrong.is_empty() {
        for m in &wrong {
            tracing::error!(scenario = %m.scenario, path = m.path, errors = ?m.errors, "incorrect delivery");
        }
        bail!(
            "{} measurement(s) lost, repeated or did not finish events, or went wrong otherwise (see the errors above)",
            wrong.len()
        );
    }
    Ok(())
}
