//! A portal's incoming-webhook URL, `https://host/rest/{user_id}/{secret}/`. The secret
//! code in it grants the webhook's full access, so every rendering (`Debug`, `Display`,
//! parse errors) replaces it with `***`; only [`WebhookUrl::expose_base`] and
//! [`WebhookUrl::method_url`] reveal it, for building the request itself. Plain
//! `http://` is accepted only for loopback hosts (a local simulator or tunnel): over a
//! network it would hand the secret to anyone on the path.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WebhookUrl {
    /// `scheme://host[:port]/rest/{user_id}/{secret}/`, always with the trailing slash.
    base: String,
    /// `scheme://host[:port]`, the part that is safe to show.
    origin: String,
    domain: String,
    user_id: u64,
}

/// Why a webhook URL was refused. No variant carries the secret code, so it never
/// reaches a log line through an error; only the host name is repeated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    #[error("webhook URL must start with https:// or http://")]
    Scheme,
    #[error(
        "webhook URL has no valid host (expected letters, digits, '.', '-' and an optional :port)"
    )]
    Host,
    #[error("webhook URL must not carry a user name, password, query or fragment")]
    ExtraParts,
    #[error("webhook URL path must be /rest/{{user_id}}/{{secret}}/")]
    Path,
    #[error("webhook URL user id must be a positive integer")]
    UserId,
    #[error("webhook URL secret code must be letters, digits, '_' or '-'")]
    Secret,
    #[error(
        "webhook URL uses plain http:// for {host}, which would send the secret code unencrypted: use https:// (http:// is accepted only for loopback hosts: 127.0.0.0/8, ::1, localhost)"
    )]
    InsecureHost { host: String },
}

impl WebhookUrl {
    pub fn parse(input: &str) -> Result<WebhookUrl, WebhookUrlError> {
        let input = input.trim();
        let (scheme, rest) = if let Some(rest) = strip_prefix_ignore_case(input, "https://") {
            ("https", rest)
        } else if let Some(rest) = strip_prefix_ignore_case(input, "http://") {
            ("http", rest)
        } else {
            return Err(WebhookUrlError::Scheme);
        };
        if rest.contains(['?', '#']) {
            return Err(WebhookUrlError::ExtraParts);
        }
        let (authority, path) = rest.split_once('/').ok_or(WebhookUrlError::Path)?;
        if authority.contains('@') {
            return Err(WebhookUrlError::ExtraParts);
        }
        let (domain, port) = split_host_port(authority)?;
        if scheme == "http" && !is_loopback(&domain) {
            return Err(WebhookUrlError::InsecureHost { host: domain });
        }

        let path = path.strip_suffix('/').unwrap_or(path);
        let mut segments = path.split('/');
        let (Some("rest"), Some(user_id), Some(secret), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(WebhookUrlError::Path);
        };
        let user_id = match user_id.parse::<u64>() {
            Ok(id) if id > 0 && user_id.bytes().all(|b| b.is_ascii_digit()) => id,
            _ => return Err(WebhookUrlError::UserId),
        };
        if secret.is_empty()
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(WebhookUrlError::Secret);
        }

        let origin = match port {
            Some(port) => format!("{scheme}://{domain}:{port}"),
            None => format!("{scheme}://{domain}"),
        };
        Ok(WebhookUrl {
            base: format!("{origin}/rest/{user_id}/{secret}/"),
            origin,
            domain,
            user_id,
        })
    }

    /// The full URL of a REST method, e.g. `.../rest/1/secret/crm.deal.list`. Contains the
    /// secret: hand it to the HTTP client only.
    pub fn method_url(&self, method: &str) -> String {
        format!("{}{method}", self.base)
    }

    /// The portal's host name, lower-cased, without the port (what events carry as
    /// `auth[domain]`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn user_id(&self) -> u64 {
        self.user_id
    }

    /// The base URL including the secret code. The only way to see the secret.
    pub fn expose_base(&self) -> &str {
        &self.base
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `localhost`, `127.0.0.0/8`, `[::1]` (also as an IPv4-mapped address).
fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    let ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().map(IpAddr::V6),
        None => host.parse::<IpAddr>(),
    };
    match ip {
        Ok(IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), WebhookUrlError> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        // IPv6 literal: [::1]:8080
        let (addr, after) = bracketed.split_once(']').ok_or(WebhookUrlError::Host)?;
        if addr.is_empty()
            || !addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(WebhookUrlError::Host);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(WebhookUrlError::Host)?),
        };
        (format!("[{addr}]"), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let valid = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && !host.starts_with(['.', '-'])
            && !host.ends_with('-');
        if !valid {
            return Err(WebhookUrlError::Host);
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| WebhookUrlError::Host)?)
        }
        Some(_) => return Err(WebhookUrlError::Host),
    };
    Ok((host, port))
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/rest/{}/***/", self.origin, self.user_id)
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({self})")
    }
}

impl FromStr for WebhookUrl {
    type Err = WebhookUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WebhookUrl::parse(s)
    }
}

/// Deserializes from the URL string; there is deliberately no `Serialize`, so the
/// secret cannot leak through a serialized document.
impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        WebhookUrl::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3tc0de7x9q2w";

    #[test]
    fn parses_the_documented_form_with_and_without_trailing_slash() {
        for input in [
            format!("https://Example.Bitrix24.com/rest/1/{SECRET}/"),
            format!("https://example.bitrix24.com/rest/1/{SECRET}"),
        ] {
            let url = WebhookUrl::parse(&input).unwrap();
            assert_eq!(url.domain(), "example.bitrix24.com");
            assert_eq!(url.user_id(), 1);
            assert_eq!(
                url.expose_base(),
                format!("https://example.bitrix24.com/rest/1/{SECRET}/")
            );
            assert_eq!(
                url.method_url("crm.deal.list"),
                format!("https://example.bitrix24.com/rest/1/{SECRET}/crm.deal.list")
            );
        }
    }

    #[test]
    fn keeps_the_port_in_urls_but_not_in_the_domain() {
        let url = WebhookUrl::parse(&format!("http://127.0.0.1:8080/rest/7/{SECRET}/")).unwrap();
        assert_eq!(url.domain(), "127.0.0.1");
        assert_eq!(url.user_id(), 7);
        assert_eq!(url.to_string(), "http://127.0.0.1:8080/rest/7/***/");
        let v6 = WebhookUrl::parse(&format!("http://[::1]:9/rest/2/{SECRET}")).unwrap();
        assert_eq!(v6.domain(), "[::1]");
        assert_eq!(
            v6.method_url("batch"),
            format!("http://[::1]:9/rest/2/{SECRET}/batch")
        );
    }

    #[test]
    fn plain_http_is_accepted_only_for_loopback_hosts() {
        for host in [
            "127.0.0.1:8080",
            "127.3.4.5",
            "localhost:3000",
            "LOCALHOST",
            "[::1]",
            "[::ffff:127.0.0.1]:81",
        ] {
            let url = WebhookUrl::parse(&format!("http://{host}/rest/1/{SECRET}/"));
            assert!(url.is_ok(), "{host}: {url:?}");
        }
        for (host, named) in [
            ("example.bitrix24.com", "example.bitrix24.com"),
            ("Portal.Example.COM:8080", "portal.example.com"),
            ("10.0.0.5", "10.0.0.5"),
            ("128.0.0.1", "128.0.0.1"),
            ("localhost.evil.com", "localhost.evil.com"),
            ("127.0.0.1.nip.io", "127.0.0.1.nip.io"),
            ("[::2]", "[::2]"),
            ("[::ffff:10.0.0.1]", "[::ffff:10.0.0.1]"),
        ] {
            let err = WebhookUrl::parse(&format!("http://{host}/rest/1/{SECRET}/")).unwrap_err();
            assert_eq!(
                err,
                WebhookUrlError::InsecureHost {
                    host: named.to_string()
                },
                "{host}"
            );
            let text = err.to_string();
            assert!(text.contains(named) && text.contains("https://"), "{text}");
            assert!(!text.contains(SECRET) && !format!("{err:?}").contains(SECRET));
            // The same host over https is fine.
            assert!(WebhookUrl::parse(&format!("https://{host}/rest/1/{SECRET}/")).is_ok());
        }
    }

    #[test]
    fn debug_and_display_redact_the_secret() {
        let url = WebhookUrl::parse(&format!("https://a.bitrix24.com/rest/1/{SECRET}/")).unwrap();
        assert_eq!(url.to_string(), "https://a.bitrix24.com/rest/1/***/");
        let debug = format!("{url:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(debug.contains("https://a.bitrix24.com/rest/1/***/"));
    }

    #[test]
    fn rejects_malformed_urls_without_echoing_the_secret() {
        let cases = [
            (
                format!("ftp://a.com/rest/1/{SECRET}/"),
                WebhookUrlError::Scheme,
            ),
            (
                format!("https://a.com/api/1/{SECRET}/"),
                WebhookUrlError::Path,
            ),
            (
                format!("https://a.com/rest/x/{SECRET}/"),
                WebhookUrlError::UserId,
            ),
            (
                format!("https://a.com/rest/0/{SECRET}/"),
                WebhookUrlError::UserId,
            ),
            (
                format!("https://a.com/rest/1/{SECRET}/crm.deal.list"),
                WebhookUrlError::Path,
            ),
            (
                format!("https://a.com/rest/1/{SECRET}/?x=1"),
                WebhookUrlError::ExtraParts,
            ),
            (
                format!("https://user:pw@a.com/rest/1/{SECRET}/"),
                WebhookUrlError::ExtraParts,
            ),
            (
                format!("https://a_b.com/rest/1/{SECRET}/"),
                WebhookUrlError::Host,
            ),
            (
                format!("https://a.com:99999/rest/1/{SECRET}/"),
                WebhookUrlError::Host,
            ),
            (format!("https:///rest/1/{SECRET}/"), WebhookUrlError::Host),
            (
                "https://a.com/rest/1/bad%20secret/".to_string(),
                WebhookUrlError::Secret,
            ),
            (
                "https://a.com/rest/1//".to_string(),
                WebhookUrlError::Secret,
            ),
        ];
        for (input, expected) in cases {
            let err = WebhookUrl::parse(&input).unwrap_err();
            assert_eq!(err, expected, "{input}");
            assert!(!err.to_string().contains(SECRET));
            assert!(!format!("{err:?}").contains(SECRET));
        }
    }

    #[test]
    fn deserializes_from_a_string_with_a_redacted_error() {
        let url: WebhookUrl =
            serde_json::from_str(&format!("\"https://a.com/rest/1/{SECRET}\"")).unwrap();
        assert_eq!(url.domain(), "a.com");
        let err =
            serde_json::from_str::<WebhookUrl>(&format!("\"https://a.com/rest/one/{SECRET}\""))
                .unwrap_err();
        assert!(err.to_string().contains("user id"));
        assert!(!err.to_string().contains(SECRET));
    }
}
