//! Server-Sent Events responses made of ready frames.
//!
//! poem's `SSE` formats each event into a new string and feeds the body
//! through an `AsyncRead` adapter that copies it again. Run events are
//! framed once, when they enter a run's log, and shared by every
//! subscriber; this body sends those bytes as they are, several frames in
//! one chunk when a subscriber is behind, and a keep-alive comment when
//! nothing was sent for a while.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use poem::{Body, Response};

/// Most bytes of frames to put in one chunk of the body when a subscriber
/// is behind. hyper queues up to 16 chunks per connection before it stops
/// polling the body, so this bounds what a subscriber that does not read
/// holds: thousands of them may be attached at once.
pub const CHUNK_BYTES: usize = 4 * 1024;

/// The comment sent to keep an idle stream open.
const KEEP_ALIVE: &[u8] = b":\n\n";

/// The `retry:` field alone: how long a client waits before reconnecting.
pub fn retry_frame(milliseconds: u64) -> Bytes {
    Bytes::from(format!("retry: {milliseconds}\n\n"))
}

/// A `text/event-stream` response of `frames`, with a keep-alive comment
/// after `keep_alive` without any frame.
pub fn response<S>(frames: S, keep_alive: Duration) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    Response::builder()
        .content_type("text/event-stream")
        .header("X-Accel-Buffering", "no")
        .header("Cache-Control", "no-cache")
        .body(body(frames, keep_alive))
}

/// The body of such a response.
pub fn body<S>(frames: S, keep_alive: Duration) -> Body
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    Body::from_bytes_stream(KeptAlive::new(frames.boxed(), keep_alive))
}

struct KeptAlive {
    frames: futures_util::stream::BoxStream<'static, Bytes>,
    idle: Pin<Box<tokio::time::Sleep>>,
    period: Duration,
}

impl KeptAlive {
    fn new(frames: futures_util::stream::BoxStream<'static, Bytes>, period: Duration) -> Self {
        Self {
            frames,
            idle: Box::pin(tokio::time::sleep(period)),
            period,
        }
    }
}

impl Stream for KeptAlive {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = this.frames.poll_next_unpin(cx) {
            // The timer is reset lazily: only its deadline moves.
            let deadline = tokio::time::Instant::now() + this.period;
            this.idle.as_mut().reset(deadline);
            return Poll::Ready(frame.map(Ok));
        }
        if this.idle.as_mut().poll(cx).is_ready() {
            let deadline = tokio::time::Instant::now() + this.period;
            this.idle.as_mut().reset(deadline);
            return Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE))));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn frames_pass_as_they_are_and_idle_time_sends_a_comment() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let frames = tokio_stream_from(rx);
        let mut body = KeptAlive::new(frames.boxed(), Duration::from_secs(15));
        tx.send(Bytes::from_static(b"id: 1\ndata: x\n\n"))
            .await
            .unwrap();
        assert_eq!(
            body.next().await.unwrap().unwrap(),
            Bytes::from_static(b"id: 1\ndata: x\n\n")
        );
        // Nothing for 15 s (the paused clock advances itself): a comment.
        assert_eq!(
            body.next().await.unwrap().unwrap(),
            Bytes::from_static(KEEP_ALIVE)
        );
        drop(tx);
        assert!(body.next().await.is_none(), "ends with its frames");
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> impl Stream<Item = Bytes> + Send {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
