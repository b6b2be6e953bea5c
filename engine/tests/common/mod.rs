//! Processes for the cluster tests (`cluster.rs`) and the browser failover
//! scenario (`server_browser.rs`): a real `redis-server` on a loopback
//! port in a temporary directory and `piazza` nodes started from the
//! binary Cargo built, each killed by its PID when its handle drops (also
//! when a test panics).
//!
//! Each test crate uses part of this module.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The token secret every node shares.
pub const SECRET: &str = "cluster test secret, 32 bytes or more";
/// The API key of every node (room creation, `/v1/cluster`, drain).
pub const API_KEY: &str = "cluster-test-api-key";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `redis-server` in a temporary directory, no persistence.
pub struct Redis {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Redis {
    pub fn start_on(port: u16, dir: PathBuf) -> Redis {
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (engine/tests/cluster.sh and browser/ci.sh install it)");
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < end,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis { child, port, dir }
    }

    pub fn start() -> Redis {
        let dir = std::env::temp_dir().join(format!(
            "piazza-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        Redis::start_on(free_port(), dir)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kill it (no persistence: its data is gone) but keep the directory
    /// and port for [`Redis::start_on`].
    pub fn kill(mut self) -> (u16, PathBuf) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let kept = (self.port, self.dir.clone());
        std::mem::forget(self);
        kept
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `piazza` node as a process, logging to a file.
pub struct Node {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Node {
    /// A node of the cluster on `redis`, one shard, heartbeats every third
    /// of `ttl`; `extra` flags after the common ones.
    pub fn start(redis: &Redis, name: &str, ttl: Duration, extra: &[&str]) -> Node {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("piazza-cluster-{name}-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_piazza"))
            .args([
                "--http",
                &format!("127.0.0.1:{port}"),
                "--shards",
                "1",
                "--token-secret",
                SECRET,
                "--api-key",
                API_KEY,
                "--redis-url",
                &redis.url(),
                "--node-id",
                name,
                "--node-url",
                &url,
                "--node-ttl",
                &format!("{}ms", ttl.as_millis()),
                "--shutdown-timeout",
                "2s",
            ])
            .args(extra)
            .env("PIAZZA_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the piazza binary runs");
        Node { child, url, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no goodbye, its directory entry stays until the TTL.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send a signal by name (`STOP`, `CONT`, `USR1`) to this node's PID.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// The last `lines` lines of the node's log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A stopped (SIGSTOP) node still dies of SIGKILL.
        self.kill9();
    }
}

/// Redis and `names.len()` nodes on it, each of which sees all the others
/// in `GET /v1/cluster` (within 60 s, or panic).
pub async fn start_cluster(names: &[&str], ttl: Duration, extra: &[&str]) -> (Redis, Vec<Node>) {
    let redis = Redis::start();
    let nodes: Vec<Node> = names
        .iter()
        .map(|n| Node::start(&redis, n, ttl, extra))
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    for node in &nodes {
        loop {
            let seen = async {
                let res = http
                    .get(format!("{}/v1/cluster", node.url))
                    .bearer_auth(API_KEY)
                    .send()
                    .await
                    .ok()?;
                let v: serde_json::Value = res.json().await.ok()?;
                v["nodes"].as_array().map(|n| n.len())
            }
            .await;
            if seen == Some(nodes.len()) {
                break;
            }
            assert!(
                Instant::now() < end,
                "node {} did not join the cluster within 60 s (sees {seen:?} nodes); its log:\n{}",
                node.url,
                node.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (redis, nodes)
}
