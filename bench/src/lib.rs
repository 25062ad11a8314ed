//! The benchmark suite of repo-runner (docs/BENCHMARKS.md): a fake Codex
//! CLI (`bench-codex`, [`fake`]), the processes under test ([`stack`]), a
//! load client ([`client`]) that reads every event of every subscriber, the
//! scenarios ([`scenarios`]), CPU and memory from `/proc` ([`procstat`]),
//! and the Markdown report ([`report`]).
//!
//! Every scenario runs against the runner alone and against the whole stack
//! (Postgres, runner, backend) in the same invocation, so each figure can
//! be read as a ratio. Nothing here changes the servers: they run as their
//! release (or test) binaries with the fake CLI as `CODEX_BIN`.

pub mod client;
pub mod fake;
pub mod procstat;
pub mod report;
pub mod scenarios;
pub mod stack;

use std::path::PathBuf;

use anyhow::bail;

const USAGE: &str = "usage: bench all [--small] [--only S1,S2,...] [--out FILE]";

/// `bench all [--small] [--only S1,...] [--out FILE]`: runs every scenario (or those named) and prints (or
/// writes) the Markdown tables.
pub async fn run_main(args: Vec<String>) -> anyhow::Result<()> {
    let mut small = false;
    let mut out: Option<PathBuf> = None;
    let mut command = None;
    let mut only: Option<Vec<String>> = None;
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
            "{} measurement(s) lost, repeated or did not finish events",
            wrong.len()
        );
    }
    Ok(())
}
