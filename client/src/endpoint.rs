//! Base addresses of frontends and nodes.
//!
//! Users type `127.0.0.1:8080`, nodes advertise `leader_addr` as `host:port`,
//! and scripts pass full URLs; all of them become one canonical base URL
//! (`http://host:port[/prefix]` or `https://...`, no trailing slash) to
//! which a route such as `/books/1` is appended.

use reqwest::Url;

use crate::error::{ClientError, Result};

/// Turns `host:port`, `http://host:port`, `https://host:port` or
/// `http://host:port/prefix/` into a base URL without a trailing slash. A
/// bare `host:port` is plain HTTP. An `https://` server's certificate must
/// be signed by a CA the client trusts (see [`crate::ClientBuilder::ca_file`]).
pub fn normalize_base_url(input: &str) -> Result<String> {
    let input = input.trim();
    if input.is_empty() {
        return Err(ClientError::Invalid("empty server address".into()));
    }
    let with_scheme = if input.contains("://") { input.to_string() } else { format!("http://{input}") };
    let url =
        Url::parse(&with_scheme).map_err(|e| ClientError::Invalid(format!("invalid server address {input:?}: {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ClientError::Invalid(format!(
            "unsupported scheme {:?} in {input:?}: only http:// and https:// are",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ClientError::Invalid(format!("no host in server address {input:?}")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::Invalid(format!("server address {input:?} must not have a query or fragment")));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_gets_http_scheme() {
        assert_eq!(normalize_base_url("127.0.0.1:7102").unwrap(), "http://127.0.0.1:7102");
        assert_eq!(normalize_base_url(" localhost:8080 ").unwrap(), "http://localhost:8080");
    }

    #[test]
    fn full_urls_keep_their_prefix_and_lose_trailing_slashes() {
        assert_eq!(normalize_base_url("http://127.0.0.1:8080/").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(normalize_base_url("http://h:1/bazar/").unwrap(), "http://h:1/bazar");
        assert_eq!(normalize_base_url("HTTP://Example.COM").unwrap(), "http://example.com");
    }

    #[test]
    fn https_empty_and_garbage_addresses_are_refused() {
        assert_eq!(normalize_base_url("https://h:1/").unwrap(), "https://h:1");
        for bad in ["", "http://", "h:1?x=1", "h:notaport", "ftp://h"] {
            let err = normalize_base_url(bad).unwrap_err();
            assert!(matches!(err, ClientError::Invalid(_)), "{bad:?} gave {err:?}");
        }
    }
}
