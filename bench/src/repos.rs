//! Git repositories for S5: `git` as a child with a known environment and
//! the small repository CI clones. They are served over smart HTTP by
//! `test_support::git_http::GitServer`.

use std::path::Path;
use std::process::Stdio;

use anyhow::{bail, Context};
use tokio::process::Command;

/// A `git` command in `dir`, with `PATH` and `HOME` only (as the servers
/// get) and a fixed identity for commits.
fn git_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("git");
    command.env_clear();
    for inherited in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(inherited) {
            command.env(inherited, value);
        }
    }
    command
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `git args` in `dir`; returns its stdout, trimmed.
pub async fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = git_command(dir, args)
        .output()
        .await
        .with_context(|| format!("cannot run git {args:?}"))?;
    if !output.status.success() {
        bail!(
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A repository at `dir` on `main` with a few commits (files added and
/// changed), a second branch and a tag: what CI's S5 clones.
pub async fn small_repo(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    git(dir, &["init", "-q", "-b", "main"]).await?;
    for n in 1..=5 {
        std::fs::write(dir.join("README.md"), format!("# small\n\nversion {n}\n"))?;
        std::fs::write(
            dir.join(format!("src/part{n}.txt")),
            format!("part {n}\n").repeat(50),
        )?;
        git(dir, &["add", "."]).await?;
        git(dir, &["commit", "-q", "-m", &format!("commit {n}")]).await?;
        if n == 3 {
            git(dir, &["tag", "v3"]).await?;
            git(dir, &["branch", "side"]).await?;
        }
    }
    Ok(())
}

/// A short name for the repository at `path`: its folder's name without
/// `.git`, or the folder above for `…/repo`.
pub fn label(path: &Path) -> String {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".git").to_owned())
            .unwrap_or_default()
    };
    let own = name(path);
    // `/work/.mirror/owner+name/repo`: the folder above says more.
    if own == "repo" || own.is_empty() {
        if let Some(parent) = path.parent() {
            let above = name(parent);
            if !above.is_empty() {
                return above;
            }
        }
    }
    own
}

/// Bytes of the files under `dir` whose name ends with `suffix`.
pub fn bytes_under(dir: &Path, suffix: &str) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += bytes_under(&entry.path(), suffix)?;
        } else if kind.is_file() && entry.file_name().to_string_lossy().ends_with(suffix) {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}
