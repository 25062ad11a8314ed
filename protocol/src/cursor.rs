//! Where an event stream resumes: after the event a client names in
//! `Last-Event-ID` (what `EventSource` sends on reconnect) or `?after=`
//! (for clients that cannot set headers). Both services' event routes read
//! it with the same rule.

/// The rule for reading a stream's cursor: the number of the last event the
/// client has, so the stream goes on with the next one.
///
/// An uninhabited type: the cursor itself is a plain `u64`, event numbers
/// being the stream's only order.
#[derive(Debug)]
pub enum Cursor {}

/// A cursor that is not an event number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Last-Event-ID/after must be an event number, got {raw:?}")]
pub struct CursorError {
    /// What the client sent.
    pub raw: String,
}

impl Cursor {
    /// The header wins over the query, even when blank; no value or a blank
    /// one means from the start (0); surrounding spaces are ignored; anything
    /// else that is not an unsigned number is refused.
    pub fn parse(last_event_id: Option<&str>, after: Option<&str>) -> Result<u64, CursorError> {
        match last_event_id.or(after) {
            None => Ok(0),
            Some(raw) if raw.trim().is_empty() => Ok(0),
            Some(raw) => raw.trim().parse::<u64>().map_err(|_| CursorError {
                raw: raw.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_or_blank_starts_from_the_beginning() {
        assert_eq!(Cursor::parse(None, None), Ok(0));
        assert_eq!(Cursor::parse(Some(""), None), Ok(0));
        assert_eq!(Cursor::parse(None, Some("  ")), Ok(0));
    }

    #[test]
    fn a_number_is_read_from_either_place() {
        assert_eq!(Cursor::parse(Some("7"), None), Ok(7));
        assert_eq!(Cursor::parse(None, Some(" 12 ")), Ok(12));
        assert_eq!(
            Cursor::parse(Some("18446744073709551615"), None),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn the_header_wins_over_the_query_even_when_blank() {
        assert_eq!(Cursor::parse(Some("3"), Some("9")), Ok(3));
        assert_eq!(Cursor::parse(Some(""), Some("9")), Ok(0));
        assert_eq!(Cursor::parse(Some("3"), Some("nope")), Ok(3));
    }

    #[test]
    fn anything_else_is_refused_with_what_was_sent() {
        for raw in ["-1", "1.5", "abc", "0x10", "18446744073709551616", "+ 1"] {
            let error = Cursor::parse(None, Some(raw)).unwrap_err();
            assert_eq!(error.raw, raw);
            assert_eq!(
                error.to_string(),
                format!("Last-Event-ID/after must be an event number, got {raw:?}")
            );
        }
        assert_eq!(
            Cursor::parse(Some("x"), Some("1")),
            Err(CursorError { raw: "x".into() })
        );
    }
}
