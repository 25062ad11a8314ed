//! The body of a run's event stream: SSE frames made once per event (when
//! it enters the live tail, or when a replay reads it from Postgres) and
//! sent as they are. For the spec it is an `EventStream` of
//! `RunStreamEvent`s, which is what a client parses.
//!
//! Also how the served document describes one event of every stream
//! ([`describe_events`]): poem-openapi writes a stream as an array of its
//! payloads, which tools read as the schema of each event.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use serde_json::{json, Value};

use super::run_events::{RunEventType, RunStreamEvent};

pub struct EventFrames {
    frames: BoxStream<'static, Bytes>,
    keep_alive: Duration,
}

impl EventFrames {
    pub(crate) fn new(frames: BoxStream<'static, Bytes>, keep_alive: Duration) -> Self {
        Self { frames, keep_alive }
    }
}

impl Payload for EventFrames {
    const CONTENT_TYPE: &'static str = "text/event-stream";

    /// As poem-openapi's `EventStream<RunStreamEvent>`.
    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            items: Some(Box::new(RunStreamEvent::schema_ref())),
            ..MetaSchema::new_with_format("array", "event-stream")
        }))
    }

    fn register(registry: &mut Registry) {
        RunStreamEvent::register(registry);
    }
}

impl IntoResponse for EventFrames {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(service_kit::sse::body(self.frames, self.keep_alive))
    }
}

/// Rewrites each `text/event-stream` schema of `spec`, which poem-openapi
/// writes as `{type: array, format: event-stream, items: PAYLOAD}`, into
/// the schema of one event as an SSE client parses it: `event`, `data` (the
/// JSON of a `PAYLOAD`), and `id` and `retry` when sent. Without `itemSchema`
/// (OpenAPI 3.2), that is how tools read a stream's `schema`: as one event
/// (schemathesis checks every event of a response against it, and the
/// payload against `contentSchema`), and a client parses events, not arrays.
pub(super) fn describe_events(spec: &mut Value) {
    // `get_mut`, not `[]`: indexing a `Value` mutably adds the key it misses.
    let streams = spec
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|path| path.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("content")?.get_mut("text/event-stream"))
        .filter_map(|media_type| media_type.get_mut("schema"));
    let mut run_stream = false;
    for schema in streams {
        if schema["type"] == "array" && schema["format"] == "event-stream" {
            let payload = schema["items"].take();
            let is_run = payload["$ref"] == "#/components/schemas/RunStreamEvent";
            *schema = event_schema(payload);
            if is_run {
                // A run's events have known names.
                schema["properties"]["event"] =
                    json!({"$ref": "#/components/schemas/RunEventType"});
                run_stream = true;
            }
        }
    }
    if run_stream {
        if let Some(schemas) = spec
            .get_mut("components")
            .and_then(|c| c.get_mut("schemas"))
            .and_then(Value::as_object_mut)
        {
            schemas.insert("RunEventType".into(), RunEventType::schema());
        }
    }
}

/// One Server-Sent Event whose `data:` is the JSON of `payload`.
fn event_schema(payload: Value) -> Value {
    json!({
        "type": "object",
        "description": "One Server-Sent Event, as a client parses it (`EventSource`): \
                        its `data:` is one line of JSON",
        "required": ["event", "data"],
        "properties": {
            "event": {
                "type": "string",
                "description": "The SSE `event:`: the payload's `type`"
            },
            "data": {
                "type": "string",
                "description": "The SSE `data:`: the payload, as JSON",
                "contentMediaType": "application/json",
                "contentSchema": payload
            },
            "id": {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "The SSE `id:`, on streams whose events are numbered: \
                                `Last-Event-ID` resumes after it"
            },
            "retry": {
                "type": "integer",
                "description": "The SSE `retry:`: milliseconds a client waits before it reconnects"
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_described_as_one_event_and_nothing_else_changes() {
        let mut spec = json!({"paths": {"/events": {"get": {"responses": {
            "200": {"content": {"text/event-stream": {"schema": {
                "type": "array", "format": "event-stream",
                "items": {"$ref": "#/components/schemas/Change"}
            }}}},
            "204": {"description": "nothing"},
            "404": {"content": {"application/json": {"schema": {"type": "array"}}}}
        }}}}});

        describe_events(&mut spec);

        let change = json!({"$ref": "#/components/schemas/Change"});
        let expected = json!({"paths": {"/events": {"get": {"responses": {
            "200": {"content": {"text/event-stream": {"schema": event_schema(change.clone())}}},
            "204": {"description": "nothing"},
            "404": {"content": {"application/json": {"schema": {"type": "array"}}}}
        }}}}});
        assert_eq!(spec, expected);
        let event = &spec["paths"]["/events"]["get"]["responses"]["200"]["content"]
            ["text/event-stream"]["schema"];
        assert_eq!(event["properties"]["data"]["contentSchema"], change);
    }
}
