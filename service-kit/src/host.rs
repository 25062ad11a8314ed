//! The `Host` check against DNS rebinding: a page on an attacker's name
//! that resolves to 127.0.0.1 reaches the services with that name in
//! `Host`, so a request is served only when `Host` names the address the
//! service is bound to (`127.0.0.1:P`, `localhost:P`, `[::1]:P`), or an
//! entry of `ALLOWED_HOSTS`. Bound to `0.0.0.0` or `::`, only the loopback
//! forms and `ALLOWED_HOSTS` pass: the machine's other names are not known.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use poem::{Endpoint, IntoResponse, Request, Response};

/// The `Host` values a service answers to.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    any: bool,
    /// Lower-case `host:port` forms.
    exact: HashSet<String>,
    /// Lower-case `ALLOWED_HOSTS` entries without a port: any port passes.
    any_port: HashSet<String>,
}

impl AllowedHosts {
    /// The forms of `bound`, plus `ALLOWED_HOSTS` (comma-separated
    /// `host` or `host:port`; `*` turns the check off).
    pub fn new(bound: SocketAddr, allowed_hosts: &str) -> Self {
        let port = bound.port();
        let mut exact = HashSet::new();
        let mut any_port = HashSet::new();
        let loopback = |exact: &mut HashSet<String>| {
            exact.insert(format!("127.0.0.1:{port}"));
            exact.insert(format!("localhost:{port}"));
            exact.insert(format!("[::1]:{port}"));
        };
        match bound.ip() {
            ip if ip.is_unspecified() || ip.is_loopback() => loopback(&mut exact),
            IpAddr::V4(ip) => {
                exact.insert(format!("{ip}:{port}"));
            }
            IpAddr::V6(ip) => {
                exact.insert(format!("[{ip}]:{port}"));
            }
        }
        let mut any = false;
        for entry in allowed_hosts
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let entry = entry.to_ascii_lowercase();
            if entry == "*" {
                any = true;
            } else if has_port(&entry) {
                exact.insert(entry);
            } else {
                any_port.insert(entry);
            }
        }
        Self {
            any,
            exact,
            any_port,
        }
    }

    /// Whether a request with this `Host` is served. Port 80 may be left
    /// out, as a browser does for `http://name/`.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let host = host.trim().to_ascii_lowercase();
        if self.exact.contains(&host) {
            return true;
        }
        if !has_port(&host) && self.exact.contains(&format!("{host}:80")) {
            return true;
        }
        let name = if has_port(&host) {
            host.rsplit_once(':')
                .map_or(host.as_str(), |(name, _)| name)
        } else {
            host.as_str()
        };
        self.any_port.contains(name)
    }

    /// Serves `ep` only to requests whose `Host` (or, in HTTP/2, the
    /// authority) is allowed; others get 421 with the JSON error body.
    pub async fn check<E: Endpoint>(
        self: Arc<Self>,
        ep: Arc<E>,
        req: Request,
    ) -> poem::Result<Response> {
        let host = req
            .headers()
            .get(poem::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
        match host {
            Some(host) if self.allows(&host) => ep.call(req).await.map(IntoResponse::into_response),
            _ => {
                tracing::warn!(host = ?host, "refused a request for a host this service is not");
                Ok(crate::error_response(
                    crate::ErrorCode::HostNotAllowed,
                    "this service does not answer to that Host; see ALLOWED_HOSTS",
                ))
            }
        }
    }
}

/// `name:port` or `[v6]:port`; a bare `[v6]` or `name` has none.
fn has_port(host: &str) -> bool {
    match host.rfind(':') {
        Some(i) => !host.ends_with(']') && host[..i].rfind(']').is_some() == host.starts_with('['),
        None => false,
    }
}

/// `ALLOWED_HOSTS` from the environment (empty when unset).
pub fn allowed_hosts_from_env() -> String {
    std::env::var("ALLOWED_HOSTS").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_a_loopback_bind_and_listed_names_pass_others_do_not() {
        let hosts = AllowedHosts::new(
            "127.0.0.1:9100".parse().unwrap(),
            "backend, app.example:443",
        );
        for ok in [
            "127.0.0.1:9100",
            "LOCALHOST:9100",
            "[::1]:9100",
            "backend:9101",
            "backend",
            "app.example:443",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for refused in [
            "evil.attacker.example",
            "evil.attacker.example:9100",
            "127.0.0.1:9101",
            "localhost",
            "app.example",
            "10.0.0.1:9100",
            "",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
        assert!(
            AllowedHosts::new("0.0.0.0:9100".parse().unwrap(), "*").allows("evil.attacker.example")
        );
    }
}
