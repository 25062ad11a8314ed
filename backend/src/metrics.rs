//! What an operator graphs: `/metrics`, in the Prometheus text format.
//!
//! Counters and histograms are kept in process (`prometheus-client`) and
//! start from zero at each start of the backend, as Prometheus expects;
//! the counts of queued and running runs are read from Postgres at each
//! scrape, so they are right whichever backend started the runs.
//!
//! `/metrics` answers only a request carrying `BACKEND_METRICS_TOKEN`
//! (`Authorization: Bearer`, compared in constant time), never a user's
//! token or cookie: the figures cover every tenant. Without the variable
//! the route is a 404.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::domain::{RunStatus, Usage};

/// Why a request was refused before (or instead of) doing its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No credential, or a wrong, revoked or expired one.
    Unauthorized,
    /// A state-changing request with the cookie from another origin.
    CrossOrigin,
    /// Over `BACKEND_IP_RATE_PER_SEC`.
    RateLimitedIp,
    /// Over `BACKEND_USER_RATE_PER_SEC`.
    RateLimitedUser,
    /// Over a per-user quota: sessions, active runs, workspace bytes or
    /// open event streams.
    Quota,
    /// A body over `BACKEND_MAX_BODY_BYTES`.
    BodyTooLarge,
}

impl Rejection {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rejection::Unauthorized => "unauthorized",
            Rejection::CrossOrigin => "cross_origin",
            Rejection::RateLimitedIp => "rate_limited_ip",
            Rejection::RateLimitedUser => "rate_limited_user",
            Rejection::Quota => "quota",
            Rejection::BodyTooLarge => "body_too_large",
        }
    }

    /// The message of a rate limit's 429.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Rejection::RateLimitedIp => {
                "too many requests from this address (BACKEND_IP_RATE_PER_SEC): retry after \
                 the seconds Retry-After says"
            }
            Rejection::RateLimitedUser => {
                "too many requests from this user (BACKEND_USER_RATE_PER_SEC): retry after \
                 the seconds Retry-After says"
            }
            _ => self.as_str(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// Which event stream a subscriber follows.
#[derive(Debug, Clone, Copy)]
pub enum StreamKind {
    /// `GET /api/runs/{id}/events`
    Run,
    /// `GET /api/sessions/events`
    Sessions,
}

pub struct Metrics {
    registry: Registry,
    runs_active: Family<StatusLabels, Gauge>,
    runs_finished: Family<StatusLabels, Counter>,
    run_duration: Histogram,
    subscribers: Family<StreamLabels, Gauge>,
    events_persisted: Counter,
    relay_lag: Histogram,
    clones: Family<OutcomeLabels, Counter>,
    clone_duration: Histogram,
    tokens: Family<KindLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    sessions_expired: Counter,
    /// One scrape at a time: the scrape sets the database gauges, then
    /// encodes them.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("repo_runner");
        let runs_active = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "runs_active",
            "Runs queued or running now, by status (read from Postgres at each scrape)",
            runs_active.clone(),
        );
        let runs_finished = Family::<StatusLabels, Counter>::default();
        registry.register(
            "runs_finished",
            "Runs this backend saw end, by status",
            runs_finished.clone(),
        );
        // 0.5 s to about 4.5 hours.
        let run_duration = Histogram::new(exponential_buckets(0.5, 2.0, 16));
        registry.register_with_unit(
            "run_duration",
            "From a run's start to its end",
            Unit::Seconds,
            run_duration.clone(),
        );
        let subscribers = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "sse_subscribers",
            "Open event streams, by stream",
            subscribers.clone(),
        );
        let events_persisted = Counter::default();
        registry.register(
            "events_persisted",
            "Run events written to Postgres",
            events_persisted.clone(),
        );
        // 1 ms to about 16 s.
        let relay_lag = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register_with_unit(
            "relay_lag",
            "From a batch of events leaving the live tail for Postgres to its commit \
             (includes BACKEND_EVENT_BATCH_WAIT_MS)",
            Unit::Seconds,
            relay_lag.clone(),
        );
        let clones = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "clones",
            "Clones that ended, by outcome (ready or failed)",
            clones.clone(),
        );
        // 50 ms to about 27 minutes.
        let clone_duration = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        registry.register_with_unit(
            "clone_duration",
            "From a clone's start to its end, ready or failed",
            Unit::Seconds,
            clone_duration.clone(),
        );
        let tokens = Family::<KindLabels, Counter>::default();
        registry.register(
            "tokens",
            "Model tokens of finished runs, by kind (input, cached_input, output, \
             reasoning_output)",
            tokens.clone(),
        );
        let rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "rejected_requests",
            "Requests refused, by reason",
            rejected.clone(),
        );
        let sessions_expired = Counter::default();
        registry.register(
            "sessions_expired",
            "Sessions whose workspace the sweeper removed (idle or over the total quota)",
            sessions_expired.clone(),
        );
        Self {
            registry,
            runs_active,
            runs_finished,
            run_duration,
            subscribers,
            events_persisted,
            relay_lag,
            clones,
            clone_duration,
            tokens,
            rejected,
            sessions_expired,
            scrape: Mutex::new(()),
        }
    }
}

impl Metrics {
    pub(crate) fn rejected(&self, reason: Rejection) {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }

    pub(crate) fn run_finished(
        &self,
        status: RunStatus,
        took: Option<Duration>,
        usage: Option<Usage>,
    ) {
        self.runs_finished
            .get_or_create(&StatusLabels {
                status: status.as_str().to_owned(),
            })
            .inc();
        if let Some(took) = took {
            self.run_duration.observe(took.as_secs_f64());
        }
        if let Some(usage) = usage {
            for (kind, count) in [
                ("input", usage.input_tokens),
                ("cached_input", usage.cached_input_tokens),
                ("output", usage.output_tokens),
                ("reasoning_output", usage.reasoning_output_tokens),
            ] {
                self.tokens
                    .get_or_create(&KindLabels {
                        kind: kind.to_owned(),
                    })
                    .inc_by(u64::try_from(count).unwrap_or(0));
            }
        }
    }

    /// Events written to Postgres: a relay's batch (with how long it took
    /// from the live tail to its commit), or a run's terminal event.
    pub(crate) fn events_persisted(&self, count: usize, lag: Option<Duration>) {
        self.events_persisted
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
        if let Some(lag) = lag {
            self.relay_lag.observe(lag.as_secs_f64());
        }
    }

    pub(crate) fn clone_ended(&self, ready: bool, took: Duration) {
        let outcome = if ready { "ready" } else { "failed" };
        self.clones
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.clone_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn session_expired(&self) {
        self.sessions_expired.inc();
    }

    /// Counts an open stream until the guard is dropped.
    pub(crate) fn subscriber(self: &Arc<Self>, stream: StreamKind) -> SubscriberGuard {
        let gauge = self
            .subscribers
            .get_or_create(&StreamLabels {
                stream: match stream {
                    StreamKind::Run => "run",
                    StreamKind::Sessions => "sessions",
                }
                .to_owned(),
            })
            .clone();
        gauge.inc();
        SubscriberGuard(gauge)
    }

    /// The text format, with the active runs' counts as given.
    pub(crate) fn encode(&self, active: &[(RunStatus, i64)]) -> Result<String, std::fmt::Error> {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        for status in [RunStatus::Queued, RunStatus::Running] {
            let count = active
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            self.runs_active
                .get_or_create(&StatusLabels {
                    status: status.as_str().to_owned(),
                })
                .set(count);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Metrics {
    /// `stream`, counted as a subscriber of `kind` until it is dropped.
    pub(crate) fn counted<S>(
        self: &Arc<Self>,
        kind: StreamKind,
        stream: S,
    ) -> futures_util::stream::BoxStream<'static, S::Item>
    where
        S: futures_util::Stream + Send + 'static,
    {
        let guard = self.subscriber(kind);
        // The closure owns the guard, so the stream does: dropping the
        // stream (the client went away) drops the count.
        futures_util::StreamExt::boxed(futures_util::StreamExt::inspect(stream, move |_| {
            let _held = &guard;
        }))
    }
}

/// Decrements its stream's subscriber gauge when dropped.
pub struct SubscriberGuard(Gauge);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_metric_with_its_prefix() {
        let metrics = Arc::new(Metrics::default());
        metrics.rejected(Rejection::RateLimitedIp);
        metrics.run_finished(
            RunStatus::Completed,
            Some(Duration::from_secs(3)),
            Some(Usage {
                input_tokens: 10,
                cached_input_tokens: 2,
                output_tokens: 5,
                reasoning_output_tokens: 1,
            }),
        );
        let guard = metrics.subscriber(StreamKind::Run);
        let text = metrics.encode(&[(RunStatus::Queued, 4)]).unwrap();
        drop(guard);
        for line in [
            "repo_runner_rejected_requests_total{reason=\"rate_limited_ip\"} 1",
            "repo_runner_runs_finished_total{status=\"completed\"} 1",
            "repo_runner_runs_active{status=\"queued\"} 4",
            "repo_runner_runs_active{status=\"running\"} 0",
            "repo_runner_tokens_total{kind=\"output\"} 5",
            "repo_runner_sse_subscribers{stream=\"run\"} 1",
            "repo_runner_run_duration_seconds_count 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        let after = metrics.encode(&[]).unwrap();
        assert!(after
            .lines()
            .any(|l| l == "repo_runner_sse_subscribers{stream=\"run\"} 0"));
    }
}
