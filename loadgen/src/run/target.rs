//! `--target URL`: an external Piazza server (the reference server of
//! `engine/src/server`) through its HTTP API (`docs/api.md` section 4).
//!
//! The load generator creates its rooms with `POST /v1/rooms` (sending
//! `PIAZZA_API_KEY` from its environment as the bearer when set), joins each
//! simulated client with its SDP offer on `POST /v1/rooms/{room}/participants`
//! with the room's invite token, and applies the SDP answer: the server's
//! ICE host candidate in it is where the client sends its media. Churned
//! participants leave with `DELETE .../participants/{id}` and their own
//! participant token; the rooms are closed with the owner token at the end.
//! The engine's counters (forwarded packets, shard CPU seconds, drops,
//! panics, peak RSS) come from `GET /metrics`.
//!
//! Plain HTTP/1.1 over a `TcpStream`, one request per connection: a few
//! hundred requests per run do not need more. The server must be on this
//! machine: the clients send only to loopback addresses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::error::LoadgenError;
use crate::metrics::EngineSample;
use crate::run::driver::thread_cpu_time;
use crate::run::embedded::{self, Backend, Counters, MemberId};
use crate::run::{Progress, RunOutcome};
use crate::scenario::Scenario;

/// Longest wait for one HTTP exchange (a join waits at most 5 s for a free
/// join slot on the server, then is refused).
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response accepted (a `/metrics` page of a few shards is ~10 KiB).
const MAX_RESPONSE: usize = 4 << 20;

/// Run the scenario against the server at `url`.
pub fn run(s: &Scenario, url: &str, progress: &Progress) -> Result<RunOutcome, LoadgenError> {
    let main_cpu_start = thread_cpu_time();
    let http = Http::new(url)?;
    let health = http.get_json("/healthz")?;
    let shards = health["shards"].as_u64().ok_or_else(|| {
        LoadgenError::Target(format!(
            "{url}/healthz did not say how many shards the server runs: is this a Piazza server?"
        ))
    })? as usize;
    let mut backend = Server {
        http,
        shards,
        api_key: std::env::var("PIAZZA_API_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        rooms: Vec::new(),
    };
    let outcome = embedded::drive(s, progress, &mut backend, main_cpu_start);
    if outcome.is_err() {
        backend.close();
    }
    outcome
}

/// A room the load generator created on the server.
struct ServerRoom {
    id: String,
    invite: String,
    owner: String,
}

/// The external server as a [`Backend`].
struct Server {
    http: Http,
    shards: usize,
    api_key: Option<String>,
    rooms: Vec<ServerRoom>,
}

impl Backend for Server {
    fn shards(&self) -> usize {
        self.shards
    }

    fn create_room(&mut self, index: usize, participants: usize) -> Result<(), LoadgenError> {
        let body = serde_json::json!({
            "name": format!("loadgen-{index}"),
            "max_participants": participants,
        })
        .to_string();
        let mut headers = vec![("Content-Type", "application/json".to_string())];
        if let Some(k) = &self.api_key {
            headers.push(("Authorization", format!("Bearer {k}")));
        }
        let res = self
            .http
            .request("POST", "/v1/rooms", &headers, body.as_bytes())?;
        if res.status != 201 {
            return Err(LoadgenError::Target(format!(
                "creating a room: {}",
                res.refusal()
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(&res.body)
            .map_err(|e| LoadgenError::Target(format!("creating a room: {e}")))?;
        let field = |k: &str| {
            v[k].as_str().map(str::to_string).ok_or_else(|| {
                LoadgenError::Target(format!("creating a room: no `{k}` in the answer"))
            })
        };
        self.rooms.push(ServerRoom {
            id: field("room")?,
            invite: field("invite_token")?,
            owner: field("owner_token")?,
        });
        Ok(())
    }

    fn join(&mut self, room: usize, offer: &str, name: &str) -> Result<(String, MemberId), String> {
        let r = &self.rooms[room];
        let path = format!("/v1/rooms/{}/participants?name={name}", r.id);
        let headers = [
            ("Content-Type", "application/sdp".to_string()),
            ("Authorization", format!("Bearer {}", r.invite)),
        ];
        let res = self
            .http
            .request("POST", &path, &headers, offer.as_bytes())
            .map_err(|e| e.to_string())?;
        if res.status != 201 {
            return Err(format!("join: {}", res.refusal()));
        }
        let id = res
            .header("x-piazza-participant")
            .ok_or("join: no X-Piazza-Participant")?;
        let token = res
            .header("x-piazza-token")
            .ok_or("join: no X-Piazza-Token")?;
        let answer = String::from_utf8(res.body).map_err(|_| "join: the answer is not UTF-8")?;
        Ok((answer, MemberId::Server { id, token }))
    }

    fn leave(&mut self, room: usize, member: &MemberId) -> Result<(), String> {
        let MemberId::Server { id, token } = member else {
            return Err("not a participant of the server".into());
        };
        let path = format!("/v1/rooms/{}/participants/{id}", self.rooms[room].id);
        let res = self
            .http
            .request(
                "DELETE",
                &path,
                &[("Authorization", format!("Bearer {token}"))],
                b"",
            )
            .map_err(|e| e.to_string())?;
        match res.status {
            204 => Ok(()),
            _ => Err(format!("leave: {}", res.refusal())),
        }
    }

    fn counters(&mut self, _fresh: bool) -> Result<Counters, LoadgenError> {
        // The server's /metrics always reads its latest snapshot.
        let text = self.http.get_text("/metrics")?;
        let m = Metrics::parse(&text);
        let cpu = m.sum("piazza_shard_cpu_seconds_total").ok_or_else(|| {
            LoadgenError::Target(
                "the server's /metrics has no piazza_shard_cpu_seconds_total: the engine's CPU cannot be measured"
                    .into(),
            )
        })?;
        let count = |name: &str| m.sum(name).unwrap_or(0.0) as u64;
        Ok(Counters {
            sample: EngineSample {
                t: Duration::ZERO,
                forwarded: count("piazza_rtp_forwarded_total"),
                rtp_in: count("piazza_rtp_in_total"),
                bytes_out: count("piazza_bytes_out_total"),
                cpu: Duration::from_secs_f64(cpu.max(0.0)),
            },
            panics: count("piazza_panics_total"),
            events_dropped: count("piazza_events_dropped_total"),
            send_drops: m.sum_where("piazza_drops_total", "reason=\"send_error\"") as u64
                + m.sum_where("piazza_drops_total", "reason=\"send_would_block\"") as u64,
        })
    }

    fn disconnects(&mut self) -> Option<u64> {
        None
    }

    fn peak_rss_mb(&mut self) -> Option<f64> {
        let text = self.http.get_text("/metrics").ok()?;
        Metrics::parse(&text)
            .sum("piazza_process_peak_resident_bytes")
            .map(|b| b / (1024.0 * 1024.0))
    }

    fn close(&mut self) {
        // Best effort: the server also closes empty rooms after its grace.
        for r in std::mem::take(&mut self.rooms) {
            let _ = self.http.request(
                "DELETE",
                &format!("/v1/rooms/{}", r.id),
                &[("Authorization", format!("Bearer {}", r.owner))],
                b"",
            );
        }
    }
}

/// Samples of a Prometheus text page: (name with labels, value).
struct Metrics(Vec<(String, f64)>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (name, value) = l.rsplit_once(' ')?;
                    Some((name.to_string(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The sum over every series of `name` (any labels); `None` if absent.
    fn sum(&self, name: &str) -> Option<f64> {
        let mut found = None;
        for (series, v) in &self.0 {
            let base = series.split('{').next().unwrap_or(series);
            if base == name {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    /// The sum over the series of `name` whose labels contain `label`.
    fn sum_where(&self, name: &str, label: &str) -> f64 {
        self.0
            .iter()
            .filter(|(s, _)| s.starts_with(name) && s[name.len()..].starts_with('{'))
            .filter(|(s, _)| s.contains(label))
            .map(|(_, v)| v)
            .sum()
    }
}

/// A response: status, headers (names lowercased), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// The server's refusal as a sentence: its JSON `message` if any.
    fn refusal(&self) -> String {
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

/// A minimal HTTP/1.1 client for one `http://host:port` base.
struct Http {
    addr: SocketAddr,
    host: String,
    base_path: String,
}

impl Http {
    fn new(url: &str) -> Result<Http, LoadgenError> {
        let bad = |why: &str| LoadgenError::Target(format!("--target {url}: {why}"));
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            bad("give the server's base URL as http://HOST:PORT (the load generator speaks plain HTTP; run it next to the server)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .map_err(|e| bad(&format!("cannot resolve {authority}: {e}")))?
            .collect();
        let addr = addrs
            .iter()
            .copied()
            .find(|a| a.ip().is_loopback())
            .ok_or_else(|| {
                bad("the server must run on this machine (a loopback address such as 127.0.0.1): the load generator sends only to loopback")
            })?;
        Ok(Http {
            addr,
            host: authority.to_string(),
            base_path: path.trim_end_matches('/').to_string(),
        })
    }

    fn get_text(&self, path: &str) -> Result<String, LoadgenError> {
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

    fn get_json(&self, path: &str) -> Result<serde_json::Value, LoadgenError> {
        let text = self.get_text(path)?;
        serde_json::from_str(&text).map_err(|e| LoadgenError::Target(format!("GET {path}: {e}")))
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Response, LoadgenError> {
        let fail = |e: std::io::Error| {
            LoadgenError::Target(format!("{method} http://{}{path}: {e}", self.host))
        };
        let mut stream = TcpStream::connect_timeout(&self.addr, HTTP_TIMEOUT).map_err(fail)?;
        stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(fail)?;
        stream.set_write_timeout(Some(HTTP_TIMEOUT)).map_err(fail)?;
        let _ = stream.set_nodelay(true);
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.base_path,
            self.host,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).map_err(fail)?;
        stream.write_all(body).map_err(fail)?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(fail)?;
        if raw.len() > MAX_RESPONSE {
            return Err(LoadgenError::Target(format!(
                "{method} {path}: response larger than {MAX_RESPONSE} bytes"
            )));
        }
        parse_response(&raw).ok_or_else(|| {
            LoadgenError::Target(format!("{method} {path}: malformed HTTP response"))
        })
    }
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        match headers.iter().find(|(k, _)| k == "content-length") {
            Some((_, n)) => rest.get(..n.parse::<usize>().ok()?)?.to_vec(),
            None => rest.to_vec(),
        }
    };
    Some(Response {
        status,
        headers,
        body,
    })
}

/// The body of a `Transfer-Encoding: chunked` message (RFC 9112 section 7.1).
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_with_length_and_chunks() {
        let r = parse_response(
            b"HTTP/1.1 201 Created\r\nX-Piazza-Participant: p3\r\ncontent-length: 5\r\n\r\nhello",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"hello"[..]));
        assert_eq!(r.header("x-piazza-participant").as_deref(), Some("p3"));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort").is_none());
    }

    #[test]
    fn metrics_sum_over_shards_and_labels() {
        let m = Metrics::parse(
            "# HELP x\n# TYPE x counter\n\
             piazza_shard_cpu_seconds_total{shard=\"0\"} 1.5\n\
             piazza_shard_cpu_seconds_total{shard=\"1\"} 2.25\n\
             piazza_drops_total{shard=\"0\",reason=\"send_error\"} 3\n\
             piazza_drops_total{shard=\"1\",reason=\"send_error\"} 4\n\
             piazza_drops_total{shard=\"1\",reason=\"malformed\"} 100\n\
             piazza_http_joins_total 7\n",
        );
        assert_eq!(m.sum("piazza_shard_cpu_seconds_total"), Some(3.75));
        assert_eq!(m.sum("piazza_http_joins_total"), Some(7.0));
        assert_eq!(m.sum("piazza_rooms"), None);
        assert_eq!(
            m.sum_where("piazza_drops_total", "reason=\"send_error\""),
            7.0
        );
    }

    #[test]
    fn only_plain_http_to_this_machine() {
        assert!(Http::new("https://127.0.0.1:8080").is_err());
        assert!(Http::new("http://192.0.2.1:8080").is_err());
        let h = Http::new("http://127.0.0.1:8080/").unwrap();
        assert_eq!(h.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(h.base_path, "");
    }
}
