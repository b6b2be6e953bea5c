//! Janus's HTTP transport: a session, its plugin handles, requests and the
//! long-poll thread that brings their asynchronous events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde_json::{Value, json};

use super::EVENT_TIMEOUT;
use crate::error::LoadgenError;
use crate::run::target::Http;

/// A Janus session over HTTP, its events from a long-poll thread.
pub(super) struct Session {
    http: Http,
    id: u64,
    events: Receiver<Value>,
    /// Events of awaited transactions that arrived before their wait.
    stash: HashMap<String, Value>,
    awaiting: HashSet<String>,
    next_tx: u64,
    stop: Arc<AtomicBool>,
    /// `hangup` events seen (a PeerConnection that went down).
    pub(super) hangups: u64,
    /// Handles whose PeerConnection is up (`webrtcup`).
    pub(super) up: HashSet<u64>,
}

impl Session {
    pub(super) fn open(base: &str) -> Result<Session, LoadgenError> {
        let http = Http::new(base)?;
        let v = post(&http, "", &json!({"janus": "create", "transaction": "c"}))?;
        let id = v["data"]["id"].as_u64().ok_or_else(|| {
            LoadgenError::Target(format!(
                "{base}: no session id in the answer to create ({v}): is this a Janus HTTP transport?"
            ))
        })?;
        let (tx, events) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let poll_http = Http::new(base)?;
        let poll_stop = stop.clone();
        std::thread::Builder::new()
            .name("janus-events".into())
            .spawn(move || long_poll(poll_http, id, tx, poll_stop))
            .map_err(|e| LoadgenError::Io(format!("starting the Janus event thread: {e}")))?;
        Ok(Session {
            http,
            id,
            events,
            stash: HashMap::new(),
            awaiting: HashSet::new(),
            next_tx: 0,
            stop,
            hangups: 0,
            up: HashSet::new(),
        })
    }

    pub(super) fn attach(&mut self) -> Result<u64, String> {
        let v = post(
            &self.http,
            &format!("/{}", self.id),
            &json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": "a"}),
        )
        .map_err(|e| e.to_string())?;
        v["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("attach: {}", janus_error(&v)))
    }

    /// A VideoRoom request on `handle`; with `wait`, its asynchronous
    /// event (and jsep) is awaited and returned, else the synchronous
    /// answer (or the ack).
    pub(super) fn message(
        &mut self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
        wait: bool,
    ) -> Result<Value, String> {
        self.next_tx += 1;
        let tx = format!("t{}", self.next_tx);
        let mut msg = json!({"janus": "message", "transaction": tx, "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        if wait {
            self.awaiting.insert(tx.clone());
        }
        let v =
            post(&self.http, &format!("/{}/{handle}", self.id), &msg).map_err(|e| e.to_string())?;
        let what = body_request(&msg);
        match v["janus"].as_str() {
            Some("success") => {
                self.awaiting.remove(&tx);
                plugin_result(&v, &what)
            }
            Some("ack") if wait => {
                let ev = self.wait_event(&tx)?;
                plugin_result(&ev, &what)
            }
            Some("ack") => Ok(v),
            _ => {
                self.awaiting.remove(&tx);
                Err(format!("{what}: {}", janus_error(&v)))
            }
        }
    }

    pub(super) fn wait_event(&mut self, tx: &str) -> Result<Value, String> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(v) = self.stash.remove(tx) {
                self.awaiting.remove(tx);
                return Ok(v);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => self.file(v),
                Err(_) => {
                    self.awaiting.remove(tx);
                    return Err(format!(
                        "no answer from Janus within {} s",
                        EVENT_TIMEOUT.as_secs()
                    ));
                }
            }
        }
    }

    /// Keep an event someone waits for; count hangups; drop the rest.
    pub(super) fn file(&mut self, v: Value) {
        if v["janus"] == "hangup" {
            self.hangups += 1;
        }
        if v["janus"] == "webrtcup"
            && let Some(h) = v["sender"].as_u64()
        {
            self.up.insert(h);
        }
        if let Some(t) = v["transaction"].as_str()
            && self.awaiting.contains(t)
        {
            self.stash.insert(t.to_string(), v);
        }
    }

    /// Read the events that arrived (hangups counted).
    pub(super) fn drain(&mut self) {
        while let Ok(v) = self.events.try_recv() {
            self.file(v);
        }
    }

    pub(super) fn destroy(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = post(
            &self.http,
            &format!("/{}", self.id),
            &json!({"janus": "destroy", "transaction": "d"}),
        );
    }
}

/// The long poll: `GET /janus/SESSION?maxev=50` until told to stop (each
/// poll also keeps the session alive).
fn long_poll(http: Http, session: u64, tx: Sender<Value>, stop: Arc<AtomicBool>) {
    let path = format!("/{session}?maxev=50");
    let mut failures = 0;
    while !stop.load(Ordering::Relaxed) {
        let v = http
            .request("GET", &path, &[], b"")
            .ok()
            .filter(|r| r.status == 200)
            .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok());
        match v {
            Some(Value::Array(evs)) => {
                failures = 0;
                for e in evs {
                    let _ = tx.send(e);
                }
            }
            Some(e) => {
                failures = 0;
                let _ = tx.send(e);
            }
            None => {
                failures += 1;
                if failures > 5 {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

pub(super) fn post(http: &Http, path: &str, body: &Value) -> Result<Value, LoadgenError> {
    let res = http.request(
        "POST",
        path,
        &[("Content-Type", "application/json".to_string())],
        body.to_string().as_bytes(),
    )?;
    if res.status != 200 {
        return Err(LoadgenError::Target(format!(
            "POST {path}: HTTP {}",
            res.status
        )));
    }
    serde_json::from_slice(&res.body)
        .map_err(|e| LoadgenError::Target(format!("POST {path}: not JSON: {e}")))
}

pub(super) fn body_request(msg: &Value) -> String {
    msg["body"]["request"]
        .as_str()
        .unwrap_or("request")
        .to_string()
}

pub(super) fn janus_error(v: &Value) -> String {
    match v["error"]["reason"].as_str() {
        Some(r) => format!("Janus error {}: {r}", v["error"]["code"]),
        None => format!("unexpected answer {v}"),
    }
}

/// A plugin answer: its `plugindata.data`, or its error (plugin errors
/// come back as `success` with `error_code` inside), with any jsep kept
/// under `jsep`.
pub(super) fn plugin_result(v: &Value, what: &str) -> Result<Value, String> {
    if v["janus"] == "error" {
        return Err(format!("{what}: {}", janus_error(v)));
    }
    let data = &v["plugindata"]["data"];
    if let Some(code) = data["error_code"].as_u64() {
        return Err(format!(
            "{what}: VideoRoom error {code}: {}",
            data["error"].as_str().unwrap_or("")
        ));
    }
    let mut out = data.clone();
    if !v["jsep"].is_null() {
        out["jsep"] = v["jsep"].clone();
    }
    Ok(out)
}

/// The mid of the first m-line of `kind` ("audio", "video") in `sdp`.
pub(super) fn first_mid(sdp: &str, kind: &str) -> Option<String> {
    let mut inside = false;
    for l in sdp.lines().map(str::trim_end) {
        if let Some(m) = l.strip_prefix("m=") {
            inside = m.starts_with(kind);
        } else if inside && let Some(mid) = l.strip_prefix("a=mid:") {
            return Some(mid.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_errors_inside_success() {
        let v = json!({"janus": "success", "plugindata": {"plugin": "janus.plugin.videoroom",
            "data": {"videoroom": "event", "error_code": 426, "error": "No such room"}}});
        let e = plugin_result(&v, "join").unwrap_err();
        assert!(e.contains("426") && e.contains("No such room"), "{e}");
        let ok = json!({"janus": "event", "plugindata": {"data": {"videoroom": "attached"}},
            "jsep": {"type": "offer", "sdp": "v=0"}});
        let d = plugin_result(&ok, "join").unwrap();
        assert_eq!(d["jsep"]["type"], "offer");
    }

    #[test]
    fn mids_of_an_offer() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";
        assert_eq!(first_mid(sdp, "audio").as_deref(), Some("0"));
        assert_eq!(first_mid(sdp, "video").as_deref(), Some("1"));
        assert_eq!(first_mid(sdp, "application"), None);
    }
}
