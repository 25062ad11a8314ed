//! Keeps each event of a run within `RUNNER_MAX_EVENT_BYTES`.
//!
//! An event that fits is relayed as the CLI printed it, byte for byte. Only
//! an event that does not is parsed again and re-serialised here.
//!
//! An event too large to relay (a command's whole output, a huge diff or
//! message) has its longest strings cut, each ending in a marker that says
//! how many bytes went, so it stays valid JSON of the same shape and a
//! reader still sees which item it was. Only an event whose bulk is not in
//! strings (a huge array of small values) is replaced by a stub: its `type`,
//! its item's `id` and `type`, and a `truncated` note.

use serde_json::{json, Map, Value};

/// Room kept for the marker appended to a cut string.
const MARKER_RESERVE: usize = 64;
/// Cuts tried before falling back to the stub.
const MAX_CUTS: usize = 32;
/// The limit the markers name.
const LIMIT_NAME: &str = "RUNNER_MAX_EVENT_BYTES";

/// The CLI's JSON line as it goes into the log: verbatim when it fits in
/// `max_bytes`, else cut by [`fit`]. A line with a carriage return (JSON
/// allows one between tokens) is re-serialised too, since an SSE reader
/// would take it for the end of the `data:` line.
pub(crate) fn fit_line(line: String, max_bytes: usize) -> String {
    if line.len() <= max_bytes && !line.contains('\r') {
        return line;
    }
    match serde_json::from_str::<Value>(&line) {
        Ok(value) => fit(value, max_bytes),
        // The SDK hands out only lines that parse as JSON objects; were one
        // not to, the stub still says an event was there.
        Err(_) => stub(&Value::Null),
    }
}

/// Serialises `value` in at most `max_bytes` (or as a stub when even that
/// cannot be reached by cutting strings).
pub(crate) fn fit(mut value: Value, max_bytes: usize) -> String {
    let mut text = value.to_string();
    for _ in 0..MAX_CUTS {
        if text.len() <= max_bytes {
            return text;
        }
        let excess = text.len() - max_bytes;
        let Some(pointer) = longest_string(&value) else {
            break;
        };
        let Some(Value::String(longest)) = value.pointer_mut(&pointer) else {
            break;
        };
        if longest.len() <= MARKER_RESERVE {
            break;
        }
        // Each raw byte removed removes at least one serialised byte (escapes
        // only make it more), so this one cut is enough when the string is
        // long enough; else the next longest is cut too.
        let keep = floor_char_boundary(
            longest,
            longest.len().saturating_sub(excess + MARKER_RESERVE),
        );
        let cut = longest.len() - keep;
        longest.truncate(keep);
        longest.push_str(&format!("…[{cut} bytes cut: {LIMIT_NAME}]"));
        text = value.to_string();
    }
    if text.len() <= max_bytes {
        return text;
    }
    stub(&value)
}

/// `text` cut to at most about `max_bytes`, with the same marker.
pub(crate) fn clip(mut text: String, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text;
    }
    let keep = floor_char_boundary(&text, max_bytes.saturating_sub(MARKER_RESERVE));
    let cut = text.len() - keep;
    text.truncate(keep);
    text.push_str(&format!("…[{cut} bytes cut: {LIMIT_NAME}]"));
    text
}

/// The JSON pointer of the longest string in `value`.
fn longest_string(value: &Value) -> Option<String> {
    fn walk(value: &Value, path: &mut String, best: &mut Option<(usize, String)>) {
        match value {
            Value::String(text) if best.as_ref().is_none_or(|(len, _)| text.len() > *len) => {
                *best = Some((text.len(), path.clone()));
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&index.to_string());
                    walk(item, path, best);
                    path.truncate(len);
                }
            }
            Value::Object(fields) => {
                for (key, field) in fields {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                    walk(field, path, best);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut best = None;
    walk(value, &mut String::new(), &mut best);
    best.map(|(_, pointer)| pointer)
}

/// What is left of an event that cannot be cut down to size.
fn stub(value: &Value) -> String {
    let short = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| s.len() <= 128)
            .map(|s| Value::String(s.to_owned()))
    };
    let mut out = Map::new();
    if let Some(kind) = short(value.get("type")) {
        out.insert("type".into(), kind);
    }
    if let Some(item) = value.get("item") {
        let mut stub_item = Map::new();
        for key in ["id", "type"] {
            if let Some(v) = short(item.get(key)) {
                stub_item.insert(key.into(), v);
            }
        }
        out.insert("item".into(), Value::Object(stub_item));
    }
    out.insert(
        "truncated".into(),
        json!(format!("the event was larger than {LIMIT_NAME}")),
    );
    Value::Object(out).to_string()
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_line_that_fits_is_relayed_byte_for_byte() {
        let line = r#"{"type":"item.completed", "item":{"text":"hi","id":"i"},"new":1.50}"#;
        assert_eq!(fit_line(line.to_owned(), 1000), line);
    }

    #[test]
    fn a_line_too_large_is_cut_and_keeps_its_fields() {
        let line = json!({"type": "item.completed", "zz_new": {"kept": true},
            "item": {"id": "item_1", "type": "agent_message", "text": "x".repeat(5000)}})
        .to_string();
        let value: Value = serde_json::from_str(&fit_line(line, 1024)).unwrap();
        assert_eq!(value["zz_new"], json!({"kept": true}));
        assert_eq!(value["item"]["id"], "item_1");
        assert!(value["item"]["text"]
            .as_str()
            .unwrap()
            .ends_with("bytes cut: RUNNER_MAX_EVENT_BYTES]"));
    }

    #[test]
    fn a_line_with_a_carriage_return_is_rewritten_on_one_line() {
        let line = "{\"type\":\"turn.started\",\r\"new\":1}";
        assert_eq!(
            fit_line(line.to_owned(), 1000),
            r#"{"new":1,"type":"turn.started"}"#
        );
    }

    #[test]
    fn a_small_event_is_untouched() {
        let event = json!({"type": "item.completed", "item": {"id": "i", "text": "hi"}});
        assert_eq!(fit(event.clone(), 1000), event.to_string());
    }

    #[test]
    fn the_longest_strings_are_cut_and_the_shape_stays() {
        let event = json!({"type": "item.completed", "item": {
            "id": "item_1", "type": "command_execution", "command": "c".repeat(5000),
            "aggregated_output": "\u{0}é".repeat(100_000), "exit_code": 0}});
        let text = fit(event, 4096);
        assert!(text.len() <= 4096, "{}", text.len());
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["item"]["id"], "item_1");
        assert_eq!(value["item"]["exit_code"], 0);
        let output = value["item"]["aggregated_output"].as_str().unwrap();
        assert!(
            output.ends_with("bytes cut: RUNNER_MAX_EVENT_BYTES]"),
            "{output}"
        );
    }

    #[test]
    fn an_event_of_many_small_values_becomes_a_stub() {
        let event = json!({"type": "item.completed",
            "item": {"id": "item_2", "type": "todo_list", "items": vec![1; 10_000]}});
        let value: Value = serde_json::from_str(&fit(event, 1024)).unwrap();
        assert_eq!(
            value,
            json!({"type": "item.completed", "item": {"id": "item_2", "type": "todo_list"},
                   "truncated": "the event was larger than RUNNER_MAX_EVENT_BYTES"})
        );
    }

    #[test]
    fn clip_keeps_a_prefix_and_says_so() {
        let text = clip("é".repeat(1000), 100);
        assert!(text.len() <= 100 + MARKER_RESERVE);
        assert!(text.starts_with("éé"));
        assert!(text.ends_with("bytes cut: RUNNER_MAX_EVENT_BYTES]"));
    }
}
