//! The item type of the event stream. Events are already serialised; this
//! type only lends them the schema of `RunStreamEvent` for the spec, so
//! nothing is parsed or serialised again per subscriber.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use runner_protocol::Event;
use serde_json::Value;

use super::models::RunStreamEvent;

pub enum StreamItem {
    /// The `retry:` hint sent first.
    Retry,
    Event(Event),
}

impl Type for StreamItem {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        RunStreamEvent::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        RunStreamEvent::schema_ref()
    }

    fn register(registry: &mut Registry) {
        RunStreamEvent::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ToJSON for StreamItem {
    fn to_json(&self) -> Option<Value> {
        match self {
            StreamItem::Retry => None,
            StreamItem::Event(event) => Some(serde_json::json!({
                "id": event.seq,
                "event": event.kind.as_str(),
                "data": serde_json::from_slice::<Value>(event.data.as_bytes()).unwrap_or(Value::Null),
            })),
        }
    }
}
