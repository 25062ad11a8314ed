//! `ClonePolicy`: which hosts a clone may reach.
//!
//! A clone URL comes from a user, so without a policy the backend would
//! fetch from its own loopback (the runner, Postgres), the private network
//! and cloud metadata addresses, and its error messages would tell open
//! ports from closed ones. By default only public addresses are reachable;
//! `ALLOWED_CLONE_HOSTS` names exceptions and `ALLOW_PRIVATE_CLONE_HOSTS`
//! lifts the rule. IP literals are judged when the URL is parsed (whatever
//! their spelling: `127.1`, `2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]`);
//! names are judged again on every address they resolve to, just before the
//! clone connects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The operator's rule for clone destinations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClonePolicy {
    /// `ALLOW_PRIVATE_CLONE_HOSTS`: every address is allowed.
    pub allow_private: bool,
    /// `ALLOWED_CLONE_HOSTS`: host names or IP addresses (lower case) that
    /// are allowed whatever they resolve to.
    pub allowed_hosts: Vec<String>,
}

/// How a host written in a URL reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    /// An IP address, in canonical form.
    Ip(IpAddr),
    /// A DNS name, lower case.
    Name(String),
}

impl ClonePolicy {
    /// Reads `ALLOWED_CLONE_HOSTS`' comma-separated list.
    pub(crate) fn new(allow_private: bool, allowed_hosts: &str) -> Self {
        Self {
            allow_private,
            allowed_hosts: allowed_hosts
                .split(',')
                .map(|h| h.trim().trim_matches(['[', ']']).to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        }
    }

    /// Whether `host` (as written in the URL, normalised) is listed.
    pub(crate) fn lists(&self, host: &HostKind) -> bool {
        let text = match host {
            HostKind::Ip(ip) => ip.to_string(),
            HostKind::Name(name) => name.clone(),
        };
        self.allowed_hosts.contains(&text)
    }

    /// Whether a connection to `ip` is allowed for a host that is not listed.
    pub(crate) fn allows_ip(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip) || self.lists(&HostKind::Ip(ip))
    }

    /// Whether a clone of `host` may connect, given every address it
    /// resolved to: all of them must pass, since any may be the one used.
    pub(crate) fn allows_resolved(&self, host: &HostKind, addresses: &[IpAddr]) -> bool {
        if self.allow_private || self.lists(host) {
            return true;
        }
        let allowed = !addresses.is_empty() && addresses.iter().all(|ip| self.allows_ip(*ip));
        if !allowed {
            tracing::info!(
                ?host,
                "clone refused: the host resolves to an address the policy refuses"
            );
        }
        allowed
    }

    /// Whether `host` may be named in a URL at all: an IP literal must be
    /// allowed; `localhost` and `*.localhost` are loopback by definition.
    /// Other names are checked on their addresses at connect time.
    pub(crate) fn allows_host(&self, host: &HostKind) -> bool {
        if self.allow_private || self.lists(host) {
            return true;
        }
        match host {
            HostKind::Ip(ip) => is_public(*ip),
            HostKind::Name(name) => name != "localhost" && !name.ends_with(".localhost"),
        }
    }
}

/// Parses a host the way a resolver would, so that every spelling of an
/// address is seen as that address: WHATWG host parsing reads `127.1`,
/// `2130706433`, `0x7f.1` and `0177.0.0.1` as 127.0.0.1, as `inet_aton` does.
pub(crate) fn classify(host: &str) -> Option<HostKind> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(HostKind::Ip(canonical(ip)));
    }
    let url = url::Url::parse(&format!("http://{host}/")).ok()?;
    Some(match url.host()? {
        url::Host::Ipv4(ip) => HostKind::Ip(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => HostKind::Ip(canonical(IpAddr::V6(ip))),
        url::Host::Domain(name) => HostKind::Name(name.trim_end_matches('.').to_ascii_lowercase()),
    })
}

/// An IPv4-mapped or -compatible IPv6 address is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped().or_else(|| compatible(v6)) {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// `::a.b.c.d` (deprecated IPv4-compatible form), but not `::` or `::1`.
fn compatible(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    (s[..6] == [0; 6] && (s[6] != 0 || s[7] > 1)).then(|| {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    })
}

/// A globally routable unicast address: not loopback, private, link-local,
/// CGNAT, multicast, broadcast, unspecified, documentation or reserved.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_internal_address_is_refused() {
        let policy = ClonePolicy::default();
        for host in [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f.1",
            "0177.0.0.1",
            "0.0.0.0",
            "0",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "[::1]",
            "[::]",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[::127.0.0.1]",
            "[fe80::1]",
            "[fd00::1]",
            "localhost",
            "LOCALHOST",
            "db.localhost",
        ] {
            let kind = classify(host).unwrap_or_else(|| panic!("{host} does not parse"));
            assert!(!policy.allows_host(&kind), "{host} was allowed");
        }
    }

    #[test]
    fn public_addresses_and_names_are_allowed() {
        let policy = ClonePolicy::default();
        for host in [
            "github.com",
            "93.184.215.14",
            "[2606:4700::1111]",
            "8.8.8.8",
        ] {
            assert!(policy.allows_host(&classify(host).unwrap()), "{host}");
        }
    }

    #[test]
    fn the_operator_can_allow_hosts_or_every_address() {
        let listed = ClonePolicy::new(false, "git.internal, 127.0.0.1 ,[::1]");
        assert!(listed.allows_host(&classify("git.internal").unwrap()));
        assert!(listed.allows_host(&classify("127.1").unwrap()));
        assert!(listed.allows_host(&classify("[::1]").unwrap()));
        assert!(listed.allows_ip("127.0.0.1".parse().unwrap()));
        assert!(!listed.allows_ip("10.0.0.1".parse().unwrap()));
        let open = ClonePolicy::new(true, "");
        assert!(open.allows_host(&classify("localhost").unwrap()));
        assert!(open.allows_ip("10.0.0.1".parse().unwrap()));
    }
}
