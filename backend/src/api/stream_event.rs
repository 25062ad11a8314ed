//! The body of a run's event stream: SSE frames made once per event (when
//! it enters the live tail, or when a replay reads it from Postgres) and
//! sent as they are. For the spec it is an `EventStream` of
//! `RunStreamEvent`s, which is what a client parses.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::Type;

use super::models::RunStreamEvent;

pub struct EventFrames {
    frames: BoxStream<'static, Bytes>,
    keep_alive: Duration,
}

impl EventFrames {
    pub fn new(frames: BoxStream<'static, Bytes>, keep_alive: Duration) -> Self {
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
