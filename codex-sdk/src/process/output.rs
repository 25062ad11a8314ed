//! What is read from a CLI process, by both drivers: its stdout as lines
//! of at most [`MAX_LINE_BYTES`], and the tail of its stderr, kept for the
//! error of a failed exit.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::ChildStderr;

/// The longest JSONL line accepted from the CLI (a command's whole output can
/// be in one line).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;
/// How much of the CLI's stderr is kept for the error of a failed exit.
pub const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// How long [`StderrTail::finish`] waits for stderr to end.
const STDERR_END_WAIT: Duration = Duration::from_millis(500);

/// The last [`STDERR_TAIL_BYTES`] of a process's stderr, read as it comes.
pub(crate) struct StderrTail {
    tail: Arc<Mutex<VecDeque<u8>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl StderrTail {
    /// Reads `stderr` to its end on a task of its own.
    pub(crate) fn follow(mut stderr: ChildStderr) -> Self {
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_BYTES)));
        let kept = tail.clone();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                let mut tail = kept.lock().unwrap_or_else(|p| p.into_inner());
                tail.extend(&buf[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
                tail.drain(..excess);
            }
        });
        Self { tail, reader }
    }

    /// The tail once stderr has ended (or after a short wait, if it is
    /// still open), trimmed.
    pub(crate) async fn finish(self) -> String {
        // A killed process's stderr ends with it; one that handed it to a
        // child may keep it open: do not wait for ever.
        let _ended = tokio::time::timeout(STDERR_END_WAIT, self.reader).await;
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(tail.make_contiguous())
            .trim()
            .to_owned()
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), with `…`.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_cuts_on_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééé", 3), "é…");
    }

    #[tokio::test]
    async fn the_tail_keeps_the_last_bytes_of_stderr() {
        let mut child = tokio::process::Command::new("sh")
            .args([
                "-c",
                "head -c 20000 /dev/zero | tr '\\0' a >&2; echo ' end' >&2",
            ])
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let tail = StderrTail::follow(child.stderr.take().unwrap());
        child.wait().await.unwrap();

        let tail = tail.finish().await;

        assert_eq!(tail.len(), STDERR_TAIL_BYTES - 1, "the newline is trimmed");
        assert!(tail.ends_with("aaa end"), "{tail}");
    }
}
