//! The event envelope: one numbered event of a run, as it goes out on an
//! SSE stream (`id:`, `event:`, `data:`) and as the backend stores it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::EventName;

/// One event of a run. Cloning it shares its name and payload (reference
/// counts), so every subscriber, the live tail and the database writer hold
/// the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// 1-based, without gaps: the SSE `id:`.
    pub seq: u64,
    /// The SSE `event:`.
    pub kind: EventKind,
    /// The SSE `data:`: one line of JSON.
    pub data: Payload,
}

impl Event {
    pub fn new(seq: u64, kind: impl Into<EventKind>, data: impl Into<Payload>) -> Self {
        Self {
            seq,
            kind: kind.into(),
            data: data.into(),
        }
    }

    /// The event as a Server-Sent Events frame: `id:`, `event:` (unless the
    /// name is `message`, SSE's default), one `data:` line per line of the
    /// payload, and the blank line that ends it.
    pub fn sse_frame(&self) -> Bytes {
        self.clone().framed().0
    }

    /// The event with its payload moved into its SSE frame: the payload
    /// becomes a slice of the frame's bytes (when it is one line, as JSON
    /// from the CLI is), so holding both costs the frame alone.
    pub fn framed(self) -> (Bytes, Event) {
        let data = self.data.as_bytes();
        let kind = self.kind.as_str();
        let mut frame = Vec::with_capacity(data.len() + kind.len() + 40);
        frame.extend_from_slice(b"id: ");
        frame.extend_from_slice(self.seq.to_string().as_bytes());
        frame.push(b'\n');
        if kind != "message" {
            frame.extend_from_slice(b"event: ");
            frame.extend_from_slice(kind.as_bytes());
            frame.push(b'\n');
        }
        let one_line = !data.contains(&b'\n') && !data.contains(&b'\r');
        let data_start = frame.len() + b"data: ".len();
        if one_line {
            if !data.is_empty() {
                frame.extend_from_slice(b"data: ");
                frame.extend_from_slice(data);
                frame.push(b'\n');
            }
        } else {
            // As `str::lines`: `\n` or `\r\n` ends a line.
            for line in data.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                frame.extend_from_slice(b"data: ");
                frame.extend_from_slice(line);
                frame.push(b'\n');
            }
            if data.ends_with(b"\n") {
                // `lines` yields no empty last line.
                frame.truncate(frame.len() - b"data: \n".len());
            }
        }
        frame.push(b'\n');
        let data_end = data_start + data.len();
        let share = one_line && !data.is_empty();
        let frame = Bytes::from(frame);
        let event = if share {
            Event {
                data: Payload(frame.slice(data_start..data_end)),
                ..self
            }
        } else {
            self
        };
        (frame, event)
    }
}

/// An event's name: only `[a-z0-9._-]`, at most 64 bytes, so it cannot break
/// the SSE framing. Names come from the CLI; anything else becomes
/// `unknown`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventKind(Arc<str>);

impl EventKind {
    /// `kind` if it is a safe name, else `unknown`.
    pub fn new(kind: &str) -> Self {
        let safe = !kind.is_empty()
            && kind.len() <= 64
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        Self(Arc::from(if safe { kind } else { "unknown" }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for EventKind {
    fn from(kind: &str) -> Self {
        Self::new(kind)
    }
}

impl From<String> for EventKind {
    fn from(kind: String) -> Self {
        Self::new(&kind)
    }
}

impl From<EventName> for EventKind {
    /// A known name; the string is static, so only the `Arc` is allocated.
    fn from(name: EventName) -> Self {
        Self(Arc::from(name.as_str()))
    }
}

impl PartialEq<EventName> for EventKind {
    fn eq(&self, other: &EventName) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<str> for EventKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event's JSON, serialised once and shared: UTF-8 by construction (it is
/// only ever made from a `str` or by `serde_json`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Bytes);

impl Payload {
    /// `value` as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Self> {
        serde_json::to_vec(value).map(|bytes| Self(Bytes::from(bytes)))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text, borrowed: the bytes are UTF-8 by construction, so this
    /// never allocates or replaces anything.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Payload {
    /// Takes the string's buffer; nothing is copied.
    fn from(text: String) -> Self {
        Self(Bytes::from(text))
    }
}

impl From<&'static str> for Payload {
    fn from(text: &'static str) -> Self {
        Self(Bytes::from_static(text.as_bytes()))
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text(), f)
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_framed_as_server_sent_events() {
        let event = Event::new(7, "item.completed", r#"{"type":"item.completed"}"#);
        let (frame, event) = event.framed();
        assert_eq!(
            &frame[..],
            b"id: 7\nevent: item.completed\ndata: {\"type\":\"item.completed\"}\n\n"
        );
        assert_eq!(event.data.text(), r#"{"type":"item.completed"}"#);
        assert_eq!(event.seq, 7);
        assert_eq!(event.kind, "item.completed");
    }

    #[test]
    fn odd_payloads_frame_as_str_lines_would() {
        let frame = |data: &'static str| Event::new(1, "x", data).sse_frame();
        assert_eq!(&frame("a\nb")[..], b"id: 1\nevent: x\ndata: a\ndata: b\n\n");
        assert_eq!(
            &frame("a\r\nb\n")[..],
            b"id: 1\nevent: x\ndata: a\ndata: b\n\n"
        );
        assert_eq!(&frame("")[..], b"id: 1\nevent: x\n\n");
        assert_eq!(
            &Event::new(2, "message", "m").sse_frame()[..],
            b"id: 2\ndata: m\n\n"
        );
        let (_, event) = Event::new(3, "x", "a\nb").framed();
        assert_eq!(
            event.data.text(),
            "a\nb",
            "a payload of many lines is kept as it was"
        );
    }

    #[test]
    fn safe_names_are_kept_and_others_replaced() {
        for kind in ["item.completed", "codex.error", "run-2_x"] {
            assert_eq!(EventKind::new(kind).as_str(), kind);
        }
        let too_long = "a".repeat(65);
        for kind in ["", "evil\ndata: x", "Item", "a:b", too_long.as_str()] {
            assert_eq!(EventKind::new(kind).as_str(), "unknown", "{kind:?}");
        }
    }

    #[test]
    fn a_payload_keeps_its_text_byte_for_byte() {
        let line = r#"{"type":"item.completed","extra":"é","n":1}"#;
        let payload = Payload::from(line.to_owned());
        assert_eq!(payload.text(), line);
        assert!(matches!(payload.text(), Cow::Borrowed(_)));
        assert_eq!(payload.as_bytes(), line.as_bytes());
        assert_eq!(payload.to_string(), line);
    }

    #[test]
    fn a_cloned_event_shares_its_bytes() {
        let event = Event::new(
            3,
            "turn.started",
            String::from(r#"{"type":"turn.started"}"#),
        );
        let copy = event.clone();
        assert_eq!(copy, event);
        assert_eq!(
            copy.data.as_bytes().as_ptr(),
            event.data.as_bytes().as_ptr()
        );
        assert_eq!(copy.kind.as_str().as_ptr(), event.kind.as_str().as_ptr());
    }

    #[test]
    fn json_is_serialised_once_into_the_payload() {
        let payload = Payload::json(&serde_json::json!({"a": [1, 2]})).unwrap();
        assert_eq!(payload.text(), r#"{"a":[1,2]}"#);
        let back: serde_json::Value = serde_json::from_slice(payload.as_bytes()).unwrap();
        assert_eq!(back, serde_json::json!({"a": [1, 2]}));
    }
}
