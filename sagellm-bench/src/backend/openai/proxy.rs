//! Which proxy from the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, and their
//! lowercase forms, less what `NO_PROXY` exempts) requests to the server would go through, so
//! that it is said and recorded rather than hidden inside every latency. A server on loopback
//! bypasses it always: a benchmark of a server on this machine measures that server.

use reqwest::Url;

/// The proxy decision for one server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProxyUse {
    /// The variable and the proxy URL (without credentials) that apply, if any.
    proxy: Option<(String, String)>,
    /// The server is on loopback, so any proxy is bypassed.
    loopback: bool,
}

impl ProxyUse {
    /// True when the client must not use the environment's proxies.
    pub(crate) fn bypassed(&self) -> bool {
        self.loopback
    }

    /// What the provenance records: the proxy in use, or null.
    pub(crate) fn recorded(&self) -> serde_json::Value {
        match (&self.proxy, self.loopback) {
            (Some((var, url)), false) => serde_json::json!({"from": var, "url": url}),
            _ => serde_json::Value::Null,
        }
    }
}

fn env(names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|n| {
        let value = std::env::var(n).ok()?;
        let value = value.trim();
        (!value.is_empty()).then(|| (n.to_string(), value.to_string()))
    })
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `NO_PROXY` exempts `host`: `*`, the host itself, or a domain it ends in.
fn exempt(host: &str) -> bool {
    let Some((_, list)) = env(&["NO_PROXY", "no_proxy"]) else {
        return false;
    };
    list.split(',').map(str::trim).any(|entry| {
        let entry = entry.trim_start_matches('.');
        entry == "*"
            || entry.eq_ignore_ascii_case(host)
            || host
                .to_ascii_lowercase()
                .ends_with(&format!(".{}", entry.to_ascii_lowercase()))
    })
}

/// The proxy for requests to `server` (a URL), said once on the terminal when one applies.
pub(crate) fn for_server(server: &str) -> ProxyUse {
    let Ok(url) = Url::parse(server) else {
        return ProxyUse {
            proxy: None,
            loopback: false,
        };
    };
    let host = url.host_str().unwrap_or_default().to_string();
    let names: &[&str] = if url.scheme() == "https" {
        &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    };
    let loopback = is_loopback(&host);
    let proxy = env(names).filter(|_| !exempt(&host)).map(|(var, value)| {
        let shown = Url::parse(&value).map_or_else(
            |_| "(not a URL)".to_string(),
            |mut u| {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                crate::backend::secrets::shown(u.as_str())
            },
        );
        (var, shown)
    });
    match (&proxy, loopback) {
        (Some((var, shown)), true) => tracing::info!(
            "{var} is set ({shown}), but the server is on loopback: requests go to it directly"
        ),
        (Some((var, shown)), false) => tracing::warn!(
            "requests to {host} go through the proxy {shown} (from {var}): its latency is inside every measured time; set NO_PROXY={host} to measure the server directly"
        ),
        (None, _) => {}
    }
    ProxyUse { proxy, loopback }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in ["127.0.0.1", "127.3.2.1", "localhost", "[::1]", "::1"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.1", "example.com", "localhost.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
