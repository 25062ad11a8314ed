//! The fake Codex CLI of the benchmarks (`bench-codex`): it reads its
//! prompt on stdin, as `codex exec --experimental-json` does, and prints the
//! JSONL stream of a turn, as fast as it can or at a given rate, in the
//! shapes of `codex-sdk/src/events.rs`.
//!
//! Its settings travel in the prompt ([`Settings::parse`]): the runner hands
//! the CLI only an allow-listed environment and a command line of its own
//! making, while the prompt reaches it untouched, and this way one runner
//! serves every scenario. Each agent message carries its sequence number and
//! its emission time (nanoseconds of the realtime clock), which the load
//! client subtracts from the time it reads the event.
//!
//! A `gate` makes the fake stop after `turn.started` until the gate (a
//! FIFO) is opened for writing and closed again: the load client attaches
//! its subscribers first, sees each of them receive `turn.started`, then
//! opens the gate, so that what it measures is live delivery, not the
//! catch-up of a late subscriber.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// What the fake prints, from the prompt `bench events=N rate=R bytes=B
/// gate=PATH` (every key optional, in any order).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Agent messages between `turn.started` and `turn.completed`.
    pub events: u64,
    /// Agent messages per second; 0 prints them as fast as possible.
    pub rate: u64,
    /// The length of each agent message's line, about.
    pub bytes: usize,
    /// A FIFO to read to its end before the first agent message.
    pub gate: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            events: 10,
            rate: 0,
            bytes: 250,
            gate: None,
        }
    }
}

/// A prompt the fake does not understand.
#[derive(Debug, thiserror::Error)]
#[error("bad bench prompt {0:?}: expected `bench events=N rate=R bytes=B gate=PATH`")]
pub struct BadPrompt(String);

impl Settings {
    /// Reads the settings from a prompt; a prompt that does not start with
    /// `bench` gets the defaults (so a human can try the fake by hand).
    pub fn parse(prompt: &str) -> Result<Self, BadPrompt> {
        let mut settings = Self::default();
        let mut words = prompt.split_whitespace();
        if words.next() != Some("bench") {
            return Ok(settings);
        }
        let bad = || BadPrompt(prompt.to_owned());
        for word in words {
            let (key, value) = word.split_once('=').ok_or_else(bad)?;
            match key {
                "events" => settings.events = value.parse().map_err(|_| bad())?,
                "rate" => settings.rate = value.parse().map_err(|_| bad())?,
                "bytes" => settings.bytes = value.parse().map_err(|_| bad())?,
                "gate" => settings.gate = Some(PathBuf::from(value)),
                _ => return Err(bad()),
            }
        }
        Ok(settings)
    }

    /// The prompt that asks for these settings.
    pub fn prompt(&self) -> String {
        let mut prompt = format!(
            "bench events={} rate={} bytes={}",
            self.events, self.rate, self.bytes
        );
        if let Some(gate) = &self.gate {
            prompt.push_str(&format!(" gate={}", gate.display()));
        }
        prompt
    }
}

/// Nanoseconds since the Unix epoch on the realtime clock, which the fake
/// and the load client (on the same machine) share.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// The text of agent message `seq`: `bench <seq> <emitted_ns> <padding>`.
pub fn message_text(seq: u64, emitted_ns: u64, line_bytes: usize) -> String {
    // The JSON around the text takes about 81 bytes of the line.
    let head = format!("bench {seq} {emitted_ns} ");
    let pad = line_bytes.saturating_sub(81 + head.len());
    let mut text = head;
    text.extend(std::iter::repeat_n('x', pad));
    text
}

/// Reads `bench <seq> <emitted_ns> ...` back out of an agent message.
pub fn parse_message_text(text: &str) -> Option<(u64, u64)> {
    let mut words = text.splitn(4, ' ');
    if words.next()? != "bench" {
        return None;
    }
    let seq = words.next()?.parse().ok()?;
    let emitted = words.next()?.parse().ok()?;
    Some((seq, emitted))
}

/// The fake CLI: reads the prompt from stdin, prints the stream on stdout.
pub fn main() -> anyhow::Result<()> {
    let mut prompt = String::new();
    std::io::stdin().read_to_string(&mut prompt)?;
    let settings = Settings::parse(&prompt)?;
    let mut out = std::io::stdout().lock();
    // A line per write, flushed, as the CLI prints: the emission time is
    // the time the line left the process.
    let mut emit = |line: &str| -> std::io::Result<()> {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()
    };
    // A thread id of the CLI's shape (letters, digits and dashes), unique
    // per process.
    let thread_id = format!(
        "{:08x}-0000-4000-8000-{:012x}",
        std::process::id(),
        now_ns() & 0xffff_ffff_ffff
    );
    emit(&serde_json::json!({"type": "thread.started", "thread_id": thread_id}).to_string())?;
    emit(r#"{"type":"turn.started"}"#)?;
    if let Some(gate) = &settings.gate {
        // Blocks until the load client opens the FIFO, returns at its close.
        let mut go = Vec::new();
        std::fs::File::open(gate)?.read_to_end(&mut go)?;
    }
    let start = Instant::now();
    for seq in 1..=settings.events {
        // A paced emission, not a wait for an event: this is the load.
        if let Some(gap) = 1_000_000_000u64.checked_div(settings.rate) {
            let due = start + Duration::from_nanos((seq - 1) * gap);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let text = message_text(seq, now_ns(), settings.bytes);
        emit(
            &serde_json::json!({
                "type": "item.completed",
                "item": {"id": format!("item_{seq}"), "type": "agent_message", "text": text}
            })
            .to_string(),
        )?;
    }
    emit(
        &serde_json::json!({
            "type": "turn.completed",
            "usage": {"input_tokens": 0, "cached_input_tokens": 0, "output_tokens": settings.events}
        })
        .to_string(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_the_prompt() {
        let settings = Settings {
            events: 7,
            rate: 2000,
            bytes: 300,
            gate: Some(PathBuf::from("/tmp/x/gate-1")),
        };

        let parsed = Settings::parse(&settings.prompt()).unwrap();

        assert_eq!(parsed, settings);
        assert_eq!(Settings::parse("hello").unwrap(), Settings::default());
        assert!(Settings::parse("bench events=lots").is_err());
    }

    #[test]
    fn a_message_carries_its_number_and_time_and_fills_its_line() {
        let text = message_text(42, 1_700_000_000_123_456_789, 250);
        let line = serde_json::json!({
            "type": "item.completed",
            "item": {"id": "item_42", "type": "agent_message", "text": text}
        })
        .to_string();

        assert_eq!(
            parse_message_text(&text),
            Some((42, 1_700_000_000_123_456_789))
        );
        assert!((240..=260).contains(&line.len()), "{}", line.len());
    }
}
