//! Request rate limits: one per client address, checked before the request
//! is authenticated (so guessing tokens is limited too), and one per user,
//! checked once the caller is known. Both are token buckets (GCRA, from
//! `governor`): a sustained rate per second and a burst. A request over
//! either is a 429 `too_many_requests` with `Retry-After`.
//!
//! The client address is the peer's, unless the peer is a trusted proxy
//! (`BACKEND_TRUSTED_PROXIES`, loopback by default: the frontend-proxy),
//! in which case it is the last `X-Forwarded-For` entry, the one that proxy
//! wrote. A client cannot pick its own address by sending the header.
//!
//! Memory: each bucket is a few bytes per key. Keys idle long enough to be
//! full again are dropped every minute ([`RateLimits::forget_idle`]), and
//! the table of addresses never holds more than [`MAX_TRACKED_KEYS`]: past
//! that it is emptied, which forgives every address at once rather than
//! growing without bound.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use ipnet::IpNet;
use poem::http::HeaderMap;
use poem::{Endpoint, IntoResponse, Request, Response};
use uuid::Uuid;

use crate::config::Rate;
use crate::http_error::ApiError;
use crate::metrics::{Metrics, Rejection};

/// Most addresses (or users) a limiter remembers at once.
pub const MAX_TRACKED_KEYS: usize = 100_000;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// The limiter's quota of a rate; `None` when the rate is off.
fn quota(rate: Rate) -> Option<Quota> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst.max(rate.per_second))?;
    Some(Quota::per_second(per_second).allow_burst(burst))
}

/// The backend's two limiters.
pub struct RateLimits {
    /// Behind a lock so that a table grown too large can be replaced by an
    /// empty one (`governor` has no `clear`); checks take it to read.
    per_ip: Option<RwLock<Keyed<IpAddr>>>,
    per_user: Option<Keyed<Uuid>>,
    ip_quota: Option<Quota>,
    trusted_proxies: Vec<IpNet>,
    clock: DefaultClock,
    metrics: Arc<Metrics>,
}

impl RateLimits {
    pub(crate) fn new(
        per_ip: Rate,
        per_user: Rate,
        trusted_proxies: Vec<IpNet>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            per_ip: quota(per_ip).map(|q| RwLock::new(RateLimiter::keyed(q))),
            ip_quota: quota(per_ip),
            per_user: quota(per_user).map(RateLimiter::keyed),
            trusted_proxies,
            clock: DefaultClock::default(),
            metrics,
        }
    }

    /// The client's address: the peer, or what a trusted proxy says.
    pub(crate) fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusted_proxies.iter().any(|net| net.contains(&peer)) {
            return Some(peer);
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|last| last.trim().parse::<IpAddr>().ok());
        Some(forwarded.unwrap_or(peer))
    }

    /// Middleware: the per-address limit.
    pub(crate) async fn check_ip<E: Endpoint>(
        self: Arc<Self>,
        ep: Arc<E>,
        req: Request,
    ) -> poem::Result<Response> {
        if let Some(limiter) = &self.per_ip {
            let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
            if let Some(ip) = self.client_ip(peer, req.headers()) {
                let admitted = {
                    let limiter = limiter.read().unwrap_or_else(|p| p.into_inner());
                    self.admit(&limiter, &ip, Rejection::RateLimitedIp)
                };
                if let Err(refusal) = admitted {
                    tracing::info!(%ip, path = req.uri().path(), "request rate limit of an address");
                    return Ok(refusal.into_response());
                }
            }
        }
        ep.call(req).await.map(IntoResponse::into_response)
    }

    /// The per-user limit, for a signed-in caller.
    pub(crate) fn check_user(&self, user: Uuid) -> Result<(), ApiError> {
        match &self.per_user {
            Some(limiter) => self.admit(limiter, &user, Rejection::RateLimitedUser),
            None => Ok(()),
        }
    }

    fn admit<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &Keyed<K>,
        key: &K,
        reason: Rejection,
    ) -> Result<(), ApiError> {
        limiter.check_key(key).map_err(|not_until| {
            self.metrics.rejected(reason);
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::rate_limited(retry_after_secs(wait), reason.describe())
        })
    }

    /// Drops the buckets of keys that have been idle long enough to be full
    /// again, and empties a table that grew past [`MAX_TRACKED_KEYS`].
    pub(crate) fn forget_idle(&self) {
        if let (Some(limiter), Some(quota)) = (&self.per_ip, self.ip_quota) {
            let mut limiter = limiter.write().unwrap_or_else(|p| p.into_inner());
            limiter.retain_recent();
            if limiter.len() > MAX_TRACKED_KEYS {
                tracing::warn!(
                    keys = limiter.len(),
                    "the per-address rate limiter forgets every address: too many to track"
                );
                *limiter = RateLimiter::keyed(quota);
            }
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_user {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Runs [`forget_idle`](Self::forget_idle) every minute while `self`
    /// lives.
    pub(crate) fn spawn_cleaner(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(limits) => limits.forget_idle(),
                    None => return,
                }
            }
        });
    }
}

/// Whole seconds, rounded up, at least 1: `Retry-After` has no fractions,
/// and 0 would invite an immediate retry that fails again.
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_networks;

    fn limits(trusted: &str) -> RateLimits {
        RateLimits::new(
            Rate {
                per_second: 1,
                burst: 2,
            },
            Rate {
                per_second: 0,
                burst: 0,
            },
            parse_networks(trusted).unwrap(),
            Arc::default(),
        )
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn an_untrusted_peer_is_its_own_address_whatever_it_forwards() {
        let limits = limits("127.0.0.1");
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            limits.client_ip(Some(peer), &forwarded(&["192.0.2.7"])),
            Some(peer)
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_in_the_last_forwarded_entry() {
        let limits = limits("127.0.0.0/8, ::1");
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        // The client sent its own header; the proxy appended the truth.
        let headers = forwarded(&["203.0.113.9, 198.51.100.1", "192.0.2.7"]);
        assert_eq!(
            limits.client_ip(Some(peer), &headers),
            Some("192.0.2.7".parse().unwrap())
        );
        assert_eq!(limits.client_ip(Some(peer), &forwarded(&[])), Some(peer));
        assert_eq!(
            limits.client_ip(Some(peer), &forwarded(&["not an address"])),
            Some(peer)
        );
    }

    #[test]
    fn the_burst_passes_and_the_next_request_waits_whole_seconds() {
        let limits = limits("");
        let limiter = limits.per_ip.as_ref().unwrap().read().unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limits
            .admit(&limiter, &ip, Rejection::RateLimitedIp)
            .is_ok());
        assert!(limits
            .admit(&limiter, &ip, Rejection::RateLimitedIp)
            .is_ok());
        let refused = limits
            .admit(&limiter, &ip, Rejection::RateLimitedIp)
            .unwrap_err();
        assert_eq!(refused.retry_after(), Some(1));
        assert!(limits
            .admit(&limiter, &other, Rejection::RateLimitedIp)
            .is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_a_whole_second() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_networks() {
        assert_eq!(parse_networks("").unwrap(), vec![]);
        assert_eq!(
            parse_networks("127.0.0.1, ::1, 10.0.0.0/8").unwrap().len(),
            3
        );
        assert!(parse_networks("localhost").is_err());
    }
}
