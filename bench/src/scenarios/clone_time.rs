//! S5: a session's clone, from `POST /api/sessions` to the session's
//! `ready` on the sessions' feed, for repositories served over smart HTTP on
//! loopback, full and shallow (depth 1), next to `git clone` of the same
//! URL (`--depth 1 --single-branch` for the shallow one). Each clone is
//! repeated and the median reported; every clone's checked-out commit must
//! be the one git checked out.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde_json::json;

use super::{Measurement, Sizes};
use crate::client::{create_session, delete_session};
use crate::procstat::{Sampler, Usage};
use test_support::git_http::GitServer;

use crate::repos::{bytes_under, git, label, small_repo};
use crate::stack::Stack;

/// Runs S5 for each repository of `sizes`: two measurements (the whole
/// stack, `git clone`) per repository and kind of clone.
pub(super) async fn s5(
    stack: &Stack,
    http: &reqwest::Client,
    sizes: &Sizes,
) -> anyhow::Result<Vec<Measurement>> {
    let dir = stack.scratch.join("s5");
    let served = dir.join("served");
    let clones = dir.join("clones");
    for folder in [&served, &clones] {
        std::fs::create_dir_all(folder)?;
    }
    let sources = sources(&dir, sizes).await?;
    let server = GitServer::start(&served).await?;
    let mut out = Vec::new();
    for (n, source) in sources.iter().enumerate() {
        let name = label(source);
        // The served copy has every ref of the source, as on a forge.
        let mirror = served.join(format!("r{n}.git"));
        git(
            &dir,
            &[
                "clone",
                "--mirror",
                "--quiet",
                &source.display().to_string(),
                &mirror.display().to_string(),
            ],
        )
        .await
        .with_context(|| format!("cannot mirror {} for S5", source.display()))?;
        let commits = git(&mirror, &["rev-list", "--count", "HEAD"]).await?;
        let url = format!("{}/r{n}.git", server.base);
        // Untimed: the served files are in the page cache for every timed
        // clone, whichever comes first.
        let warm = clones.join("warm-up");
        git(&clones, &["clone", "--quiet", &url, &path_arg(&warm)]).await?;
        std::fs::remove_dir_all(&warm)?;
        for shallow in [false, true] {
            let scenario = if shallow {
                format!("S5 {name} ({commits} commits): shallow clone, depth 1")
            } else {
                format!("S5 {name} ({commits} commits): full clone")
            };
            tracing::info!(%scenario, "S5");
            let clone = Clone {
                url: &url,
                shallow,
                clones: &clones,
            };
            out.extend(compare(stack, http, &clone, &scenario, sizes.s5_repeats).await?);
        }
    }
    Ok(out)
}

/// The repositories named, else CI's small one, else the repository the
/// bench is run from.
async fn sources(dir: &Path, sizes: &Sizes) -> anyhow::Result<Vec<PathBuf>> {
    if !sizes.s5_repos.is_empty() {
        return Ok(sizes.s5_repos.clone());
    }
    if sizes.s5_small_repo {
        let small = dir.join("small");
        small_repo(&small).await?;
        return Ok(vec![small]);
    }
    let here = std::env::current_dir()?;
    let top = git(&here, &["rev-parse", "--show-toplevel"])
        .await
        .context("S5 clones the git repository the bench is run from, and this is none; name one with --s5-repo")?;
    Ok(vec![PathBuf::from(top)])
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// One kind of clone of one served repository.
struct Clone<'a> {
    url: &'a str,
    shallow: bool,
    /// Where `git clone` writes.
    clones: &'a Path,
}

/// What one side's repeated clones gave.
#[derive(Default)]
struct Side {
    /// Seconds of each clone.
    times: Vec<f64>,
    /// Bytes of pack each clone received.
    pack: Vec<u64>,
    errors: Vec<String>,
    /// Clones whose checkout is git's commit.
    matching: usize,
}

impl Side {
    fn measurement(self, scenario: &str, path: &'static str, usage: Vec<Usage>) -> Measurement {
        let mut times = self.times;
        times.sort_by(f64::total_cmp);
        let at = |i: usize| times.get(i).copied().unwrap_or(0.0);
        let pack = self.pack.iter().sum::<u64>() as f64 / self.pack.len().max(1) as f64;
        Measurement {
            scenario: scenario.to_owned(),
            path,
            figures: vec![
                ("median", at(times.len() / 2), "s"),
                ("min", at(0), "s"),
                ("max", at(times.len().saturating_sub(1)), "s"),
                ("pack", pack / 1e6, "MB"),
            ],
            complete: self.matching,
            subscribers: times.len(),
            gaps: 0,
            duplicates: 0,
            errors: self.errors,
            usage,
        }
    }
}

/// Clones `repeats` times through the backend and with `git clone`,
/// alternating which goes first.
async fn compare(
    stack: &Stack,
    http: &reqwest::Client,
    clone: &Clone<'_>,
    scenario: &str,
    repeats: usize,
) -> anyhow::Result<[Measurement; 2]> {
    let mut backend = Side::default();
    let mut plain = Side::default();
    // CPU and memory over the repetitions (the backend is idle while git
    // clones).
    let sampler = Sampler::start(stack.stack_processes());
    for rep in 0..repeats {
        let dest = clone.clones.join(format!("git-{rep}"));
        let (session, head) = if rep % 2 == 0 {
            let session = backend_clone(stack, http, clone).await?;
            (session, git_clone(clone, &dest, &mut plain).await?)
        } else {
            let head = git_clone(clone, &dest, &mut plain).await?;
            (backend_clone(stack, http, clone).await?, head)
        };
        let ready = &session.session;
        backend.times.push(session.elapsed.as_secs_f64());
        backend.pack.push(
            ready["clone_progress"]["received_bytes"]
                .as_u64()
                .unwrap_or(0),
        );
        let base = ready["base_commit"].as_str().unwrap_or_default();
        let repo_path = ready["repo_path"].as_str().unwrap_or_default();
        let checkout = git(Path::new(repo_path), &["rev-parse", "HEAD"]).await?;
        if base == head && checkout == head {
            backend.matching += 1;
        } else {
            backend.errors.push(format!(
                "the session's base_commit is {base:?} and its checkout is at {checkout}, git's clone at {head}"
            ));
        }
        delete_session(http, &stack.backend_url, &session.id).await?;
        std::fs::remove_dir_all(&dest)?;
    }
    let usage = sampler.finish();
    Ok([
        backend.measurement(scenario, "whole stack", usage),
        plain.measurement(scenario, "git clone", Vec::new()),
    ])
}

/// The backend's clone, to `ready`.
async fn backend_clone(
    stack: &Stack,
    http: &reqwest::Client,
    clone: &Clone<'_>,
) -> anyhow::Result<crate::client::ReadySession> {
    let mut request = json!({"repo_url": clone.url});
    if clone.shallow {
        request["depth"] = json!(1);
    }
    create_session(http, &stack.backend_url, &request).await
}

/// `git clone` into `dest`, timed into `side`; returns the commit checked
/// out.
async fn git_clone(clone: &Clone<'_>, dest: &Path, side: &mut Side) -> anyhow::Result<String> {
    let dest_arg = path_arg(dest);
    let mut args = vec!["clone", "--quiet"];
    if clone.shallow {
        args.extend(["--depth", "1", "--single-branch"]);
    }
    args.extend([clone.url, dest_arg.as_str()]);
    let started = Instant::now();
    git(clone.clones, &args).await?;
    side.times.push(started.elapsed().as_secs_f64());
    side.pack
        .push(bytes_under(&dest.join(".git/objects/pack"), ".pack")?);
    side.matching += 1;
    git(dest, &["rev-parse", "HEAD"]).await
}
