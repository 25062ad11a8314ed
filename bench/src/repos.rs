//! Git repositories for S5 and S7: `git` as a child with a known
//! environment, the small repository CI clones, and S7's large one of
//! generated text files. S5's are served over smart HTTP by
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
    let stdout = git_bytes(dir, args).await?;
    Ok(String::from_utf8_lossy(&stdout).trim().to_owned())
}

/// Runs `git args` in `dir`; returns its stdout as it is (all of it read,
/// as a client reads a download).
pub async fn git_bytes(dir: &Path, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    git_bytes_with_index(dir, args, None).await
}

/// [`git_bytes`] with `GIT_INDEX_FILE` set to `index` when given.
pub async fn git_bytes_with_index(
    dir: &Path,
    args: &[&str],
    index: Option<&Path>,
) -> anyhow::Result<Vec<u8>> {
    let mut command = git_command(dir, args);
    if let Some(index) = index {
        command.env("GIT_INDEX_FILE", index);
    }
    let output = command
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
    Ok(output.stdout)
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

/// A small deterministic generator (splitmix64): S7's files and changes are
/// the same at every run, and on both sides of a comparison.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Words for generated text: a small vocabulary compresses as source code
/// does.
const WORDS: [&str; 16] = [
    "input", "value", "state", "count", "index", "buffer", "result", "config", "session", "event",
    "handle", "limit", "offset", "record", "stream", "token",
];

/// Extensions of generated files.
const EXTENSIONS: [&str; 6] = ["rs", "ts", "py", "md", "json", "txt"];

/// Smallest and largest generated file: log-uniform in between, so most
/// are a few hundred bytes to a KB or two (mean about 1.3 KB).
const MIN_FILE_BYTES: f64 = 200.0;
const MAX_FILE_BYTES: f64 = 4096.0;

/// A line of code-like text.
pub fn text_line(rng: &mut Rng) -> String {
    let word = |rng: &mut Rng| WORDS[rng.below(WORDS.len())];
    match rng.below(5) {
        0 => format!(
            "fn {}_{}({}: u32) -> u32 {{ {} * {} }}\n",
            word(rng),
            rng.below(1000),
            word(rng),
            word(rng),
            rng.below(100)
        ),
        1 => format!(
            "    let {}_{} = {}(&{}, {});\n",
            word(rng),
            rng.below(100),
            word(rng),
            word(rng),
            rng.below(10_000)
        ),
        2 => format!(
            "// The {} keeps its {} until the {} ends.\n",
            word(rng),
            word(rng),
            word(rng)
        ),
        3 => format!("    {}.{}({});\n", word(rng), word(rng), rng.below(64)),
        _ => "\n".to_owned(),
    }
}

/// A text file of a few hundred bytes to a few KB.
pub fn text_file(rng: &mut Rng) -> Vec<u8> {
    let size = (MIN_FILE_BYTES * (MAX_FILE_BYTES / MIN_FILE_BYTES).powf(rng.unit())) as usize;
    let mut text = String::with_capacity(size + 80);
    while text.len() < size {
        text.push_str(&text_line(rng));
    }
    text.into_bytes()
}

/// Files per folder, and folders per parent, of the generated tree.
const FILES_PER_FOLDER: usize = 25;
const FOLDERS_PER_PARENT: usize = 12;

/// The path of generated file `n`: three levels of folders of
/// [`FOLDERS_PER_PARENT`], [`FILES_PER_FOLDER`] files in each folder of the
/// last level (50,000 files: 14 × 12 × 12 folders).
fn generated_path(n: usize, rng: &mut Rng) -> String {
    let folder = n / FILES_PER_FOLDER;
    let per = FOLDERS_PER_PARENT;
    format!(
        "pkg{:02}/mod{:02}/part{:02}/{}_{n}.{}",
        folder / (per * per),
        (folder / per) % per,
        folder % per,
        WORDS[rng.below(WORDS.len())],
        EXTENSIONS[rng.below(EXTENSIONS.len())]
    )
}

/// A repository at `dir` on `main` with one commit of `files` generated
/// text files in nested folders (see [`generated_path`], [`text_file`]);
/// returns their paths, relative to `dir`.
pub async fn large_repo(dir: &Path, files: usize) -> anyhow::Result<Vec<String>> {
    let root = dir.to_path_buf();
    let paths = tokio::task::spawn_blocking(move || {
        let mut rng = Rng::new(7);
        let mut paths = Vec::with_capacity(files);
        for n in 0..files {
            let path = generated_path(n, &mut rng);
            let full = root.join(&path);
            if n % FILES_PER_FOLDER == 0 {
                if let Some(parent) = full.parent() {
                    std::fs::create_dir_all(parent)?;
                }
            }
            std::fs::write(&full, text_file(&mut rng))?;
            paths.push(path);
        }
        anyhow::Ok(paths)
    })
    .await??;
    git(dir, &["init", "-q", "-b", "main"]).await?;
    git(dir, &["add", "-A"]).await?;
    git(dir, &["commit", "-q", "-m", "generated files"]).await?;
    Ok(paths)
}
