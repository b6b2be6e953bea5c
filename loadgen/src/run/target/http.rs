//! The blocking HTTP client the `--target` driver speaks to a server with.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::error::LoadgenError;

use super::{HTTP_TIMEOUT, MAX_RESPONSE};

/// A response: status, headers (names lowercased), body.
pub(crate) struct Response {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(super) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// The server's refusal as a sentence: its JSON `message` if any.
    pub(super) fn refusal(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) if v["message"].is_string() => format!(
                "HTTP {} {}: {}",
                self.status,
                v["error"].as_str().unwrap_or(""),
                v["message"].as_str().unwrap_or("")
            ),
            _ => format!("HTTP {}: {}", self.status, text.trim()),
        }
    }
}

/// The HTTP client for one `http://host:port[/path]` base: a `ureq` agent
/// (a maintained, blocking HTTP/1.1 client with connection reuse, which
/// fits the orchestrator's one-thread-per-run design: no async runtime to
/// start for a few hundred requests).
pub(crate) struct Http {
    agent: ureq::Agent,
    base: String,
}

/// Check a `--target` base URL: plain HTTP to a loopback address (the
/// load generator sends media only to loopback). Returns the base without
/// a trailing slash; the error is a usage error (exit code 2).
pub fn check_base(url: &str) -> Result<String, String> {
    let bad = |why: &str| format!("--target {url}: {why}");
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        bad("give the server's base URL as http://HOST:PORT (the load generator speaks plain HTTP; run it next to the server)")
    })?;
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    let with_port = match authority.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => authority.to_string(),
        Some((_, p)) if !authority.ends_with(']') => {
            return Err(bad(&format!("bad port `{p}`")));
        }
        _ => format!("{authority}:80"),
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve {authority}: {e}")))?
        .collect();
    if !addrs.iter().any(|a| a.ip().is_loopback()) {
        return Err(bad(
            "the server must run on this machine (a loopback address such as 127.0.0.1): the load generator sends only to loopback",
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

impl Http {
    pub(crate) fn new(url: &str) -> Result<Http, LoadgenError> {
        let base = check_base(url).map_err(LoadgenError::InvalidScenario)?;
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(HTTP_TIMEOUT))
            // Refusals are answers to report, not transport errors.
            .http_status_as_error(false)
            // Loopback only: never through a proxy from the environment.
            .proxy(None)
            .build();
        Ok(Http {
            agent: config.into(),
            base,
        })
    }

    pub(super) fn get_text(&self, path: &str) -> Result<String, LoadgenError> {
        let res = self.request("GET", path, &[], b"")?;
        if res.status != 200 {
            return Err(LoadgenError::Target(format!(
                "GET {path}: {}",
                res.refusal()
            )));
        }
        String::from_utf8(res.body)
            .map_err(|_| LoadgenError::Target(format!("GET {path}: not UTF-8")))
    }

    pub(super) fn get_json(&self, path: &str) -> Result<serde_json::Value, LoadgenError> {
        let text = self.get_text(path)?;
        serde_json::from_str(&text).map_err(|e| LoadgenError::Target(format!("GET {path}: {e}")))
    }

    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Response, LoadgenError> {
        let url = format!("{}{path}", self.base);
        let fail = |e: ureq::Error| LoadgenError::Target(format!("{method} {url}: {e}"));
        let mut res = match method {
            "GET" | "DELETE" => {
                let mut req = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                for (k, v) in headers {
                    req = req.header(*k, v.as_str());
                }
                req.call().map_err(fail)?
            }
            _ => {
                let mut req = self.agent.post(&url);
                for (k, v) in headers {
                    req = req.header(*k, v.as_str());
                }
                req.send(body).map_err(fail)?
            }
        };
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = res
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE as u64)
            .read_to_vec()
            .map_err(fail)?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_to_this_machine() {
        assert!(check_base("https://127.0.0.1:8080").is_err());
        assert!(check_base("http://192.0.2.1:8080").is_err());
        assert!(check_base("http://127.0.0.1:notaport").is_err());
        assert!(check_base("http://").is_err());
        assert_eq!(
            check_base("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            check_base("http://localhost:8088/janus").unwrap(),
            "http://localhost:8088/janus"
        );
    }
}
