//! The HTTP side: `POST /v1/responses` answered as a Responses API event
//! stream, and `GET /v1/_requests` listing what the model was sent.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::sse::{Event, SSE};
use poem::web::{Data, Json};
use poem::{get, handler, post, EndpointExt, IntoResponse, Response, Route, Server};
use serde_json::{json, Value};

use crate::script::{prompt_and_step, Output, Script};

/// How many request bodies are kept for inspection.
pub const MAX_LOGGED_REQUESTS: usize = 1000;

#[derive(Clone)]
struct State {
    script: Arc<Script>,
    requests: Arc<Mutex<VecDeque<Value>>>,
}

/// A running scripted model.
pub struct ScriptedModel {
    addr: SocketAddr,
    requests: Arc<Mutex<VecDeque<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedModel {
    /// Binds `addr` (port 0 picks a free port) and serves in the background.
    pub async fn start(script: Script, addr: &str) -> std::io::Result<Self> {
        let requests = Arc::new(Mutex::new(VecDeque::new()));
        let state = State {
            script: Arc::new(script),
            requests: requests.clone(),
        };
        let acceptor = TcpListener::bind(addr.to_owned()).into_acceptor().await?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .ok_or_else(|| std::io::Error::other("no local address"))?;
        let app = Route::new()
            .at("/v1/responses", post(responses))
            .at("/v1/_requests", get(logged_requests))
            .data(state);
        let task = tokio::spawn(async move {
            if let Err(error) = Server::new_with_acceptor(acceptor).run(app).await {
                tracing::error!(%error, "scripted model server stopped");
            }
        });
        Ok(Self {
            addr,
            requests,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give the CLI's model provider.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request body received so far (the most recent
    /// [`MAX_LOGGED_REQUESTS`]).
    pub fn requests(&self) -> Vec<Value> {
        self.requests
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A Codex `config.toml` that sends the CLI's model requests here.
    pub fn codex_config(&self) -> String {
        codex_config(&self.base_url())
    }

    /// Waits until the server stops (it runs until the process ends).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Codex `config.toml` for a scripted model at `base_url`. The model slug is
/// one the CLI knows, so that it offers its full tool set (`apply_patch`
/// included); retries are off so that a scripted failure fails at once.
pub fn codex_config(base_url: &str) -> String {
    format!(
        r#"model = "gpt-5.5"
model_provider = "scripted"

[model_providers.scripted]
name = "scripted model"
base_url = "{base_url}"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"#
    )
}

#[handler]
async fn logged_requests(Data(state): Data<&State>) -> Json<Value> {
    let requests: Vec<Value> = state
        .requests
        .lock()
        .map(|r| r.iter().cloned().collect())
        .unwrap_or_default();
    Json(Value::Array(requests))
}

#[handler]
async fn responses(Data(state): Data<&State>, body: String) -> Response {
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "the body is not JSON", "type": "invalid_request_error"}})),
        )
            .into_response();
    };
    let input = request
        .get("input")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (prompt, step) = prompt_and_step(&input);
    let outputs = state.script.outputs(&prompt, step);
    tracing::info!(%prompt, step, outputs = outputs.len(), "scripted response");
    if let Ok(mut log) = state.requests.lock() {
        if log.len() == MAX_LOGGED_REQUESTS {
            log.pop_front();
        }
        log.push_back(request);
    }
    let input_tokens = i64::try_from(body.len() / 4).unwrap_or(i64::MAX);
    SSE::new(response_events(
        outputs,
        step,
        input_tokens,
        state.script.stream_ms,
    ))
    .into_response()
}

fn response_events(
    outputs: Vec<Output>,
    step: usize,
    input_tokens: i64,
    stream_ms: Option<u64>,
) -> impl futures_util::Stream<Item = Event> + Send {
    async_stream::stream! {
        let response_id = format!("resp_{step}_{}", unique());
        yield event(json!({"type": "response.created", "response": {"id": response_id}}));
        let mut output_tokens = 0i64;
        for (index, output) in outputs.into_iter().enumerate() {
            let id = format!("{response_id}_{index}");
            let item = match output {
                Output::WaitMs(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    continue;
                }
                Output::Fail(message) => {
                    yield event(json!({"type": "response.failed", "response": {
                        "id": response_id,
                        "error": {"code": "server_error", "message": message}}}));
                    return;
                }
                Output::Message(text) => {
                    output_tokens += tokens(&text);
                    if let Some(ms) = stream_ms {
                        yield event(json!({"type": "response.output_item.added", "output_index": index,
                            "item": {"type": "message", "role": "assistant", "id": id, "content": []}}));
                        for piece in words(&text) {
                            if ms > 0 {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            yield event(json!({"type": "response.output_text.delta", "item_id": id,
                                "output_index": index, "content_index": 0, "delta": piece}));
                        }
                    }
                    json!({"type": "message", "role": "assistant", "id": id,
                           "content": [{"type": "output_text", "text": text}]})
                }
                Output::Reasoning(text) => {
                    output_tokens += tokens(&text);
                    if let Some(ms) = stream_ms {
                        yield event(json!({"type": "response.output_item.added", "output_index": index,
                            "item": {"type": "reasoning", "id": id, "summary": []}}));
                        yield event(json!({"type": "response.reasoning_summary_part.added", "item_id": id,
                            "output_index": index, "summary_index": 0,
                            "part": {"type": "summary_text", "text": ""}}));
                        for piece in words(&text) {
                            if ms > 0 {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            yield event(json!({"type": "response.reasoning_summary_text.delta", "item_id": id,
                                "output_index": index, "summary_index": 0, "delta": piece}));
                        }
                    }
                    json!({"type": "reasoning", "id": id,
                           "summary": [{"type": "summary_text", "text": text}]})
                }
                Output::Exec(exec) => json!({"type": "function_call", "id": id,
                    "call_id": format!("call_{id}"), "name": "exec_command",
                    "arguments": exec.arguments().to_string()}),
                Output::ApplyPatch(patch) => {
                    output_tokens += tokens(&patch);
                    json!({"type": "custom_tool_call", "id": id,
                           "call_id": format!("call_{id}"), "name": "apply_patch", "input": patch})
                }
                Output::FunctionCall { name, arguments } => json!({"type": "function_call",
                    "id": id, "call_id": format!("call_{id}"), "name": name,
                    "arguments": arguments.to_string()}),
            };
            yield event(json!({"type": "response.output_item.done", "item": item}));
        }
        yield event(json!({"type": "response.completed", "response": {"id": response_id, "usage": {
            "input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens}}}));
    }
}

fn event(data: Value) -> Event {
    let kind = data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message")
        .to_owned();
    Event::message(data.to_string()).event_type(kind)
}

/// `text` in pieces of one word and the spaces after it, whose
/// concatenation is `text`.
fn words(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            pieces.push(&text[start..i]);
            start = i;
            in_space = false;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

fn tokens(text: &str) -> i64 {
    i64::try_from(text.len() / 4 + 1).unwrap_or(i64::MAX)
}

/// Response ids only need to differ between responses of one process.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
