//! Cluster mode: several `piazza` nodes share a Redis directory (design,
//! keys and failure behaviour in docs/cluster.md).
//!
//! - Each node heartbeats its entry (URL, media address, load) every third
//!   of the node TTL; a node that stops is dead when the entry expires.
//! - Rooms are placed on the least-loaded live node by a Lua script; their
//!   metadata lives in the directory, so a dead node's room is recreated on
//!   a live node at its next join ([`Directory::locate`] claims it
//!   atomically).
//! - A room request reaching a node that does not host the room is proxied
//!   to the owner ([`Cluster::forward`]) with a signed hop header; a
//!   forwarded request is never forwarded again, so no loop can form.
//! - With Redis down, running rooms keep forwarding media and local
//!   requests keep working; what needs the directory answers 503
//!   `directory_unavailable`, and the connection manager reconnects with
//!   backoff on its own.

mod directory;
mod forward;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

pub(crate) use directory::{Directory, DirectoryError, Located, NodeInfo, RoomMeta};
pub(crate) use forward::{CLIENT_IP_HEADER, HOP_HEADER, verify_hop};

use super::AppState;
use super::config::ClusterConfig;
use super::error::ApiError;

/// What the cluster side counts (exported in `/metrics`).
#[derive(Debug, Default, Clone)]
pub(crate) struct ClusterStats {
    /// The last directory call succeeded.
    pub up: bool,
    /// Live nodes as of the last heartbeat.
    pub nodes: Vec<NodeInfo>,
    pub forwarded: u64,
    pub forward_failures: u64,
    pub directory_errors: u64,
    pub rooms_recreated: u64,
    pub rooms_lost: u64,
    pub loops_refused: u64,
}

/// This node's membership in the cluster.
pub(crate) struct Cluster {
    /// This process's node id: the configured name and a random suffix.
    pub id: String,
    pub config: ClusterConfig,
    pub dir: Directory,
    http: reqwest::Client,
    stats: Mutex<ClusterStats>,
    /// Rooms closed here whose directory entries are still to be removed
    /// (retried while Redis is away).
    to_forget: Mutex<Vec<String>>,
    /// Participant counts last written to the directory.
    sent_counts: Mutex<HashMap<String, usize>>,
    warned_down: AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("id", &self.id).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data behind these locks: a panic mid-update leaves it usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cluster {
    /// Set up (does not connect: the heartbeat task does, and retries).
    pub fn new(config: ClusterConfig, token_ttl: Duration) -> Result<Cluster, String> {
        let dir =
            Directory::new(&config.redis_url, &config.key_prefix, token_ttl).map_err(|e| {
                format!(
                    "cluster.redis_url {}: {e}",
                    super::config::redact(&config.redis_url)
                )
            })?;
        let mut suffix = [0u8; 4];
        getrandom::fill(&mut suffix).map_err(|e| format!("no randomness for the node id: {e}"))?;
        let id = format!(
            "{}-{}",
            config.node_id,
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(15))
            // A node answers for itself: never follow its redirects.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the forwarding HTTP client: {e}"))?;
        Ok(Cluster {
            id,
            config,
            dir,
            http,
            stats: Mutex::new(ClusterStats::default()),
            to_forget: Mutex::new(Vec::new()),
            sent_counts: Mutex::new(HashMap::new()),
            warned_down: AtomicBool::new(false),
        })
    }

    pub fn stats(&self) -> ClusterStats {
        lock(&self.stats).clone()
    }

    pub fn count(&self, f: impl FnOnce(&mut ClusterStats)) {
        f(&mut lock(&self.stats));
    }

    /// The 503 for a failed directory call (and count it).
    pub fn unavailable(&self, e: &DirectoryError) -> ApiError {
        self.directory_failed(e);
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "directory_unavailable",
            "the cluster directory (Redis) is unreachable: rooms already running keep going; \
             try this again in a few seconds",
        )
    }

    fn directory_failed(&self, e: &DirectoryError) {
        {
            let mut s = lock(&self.stats);
            s.up = false;
            s.directory_errors += 1;
        }
        if !self.warned_down.swap(true, Ordering::Relaxed) {
            tracing::warn!("cluster directory unreachable: {e}; retrying with backoff");
        }
    }

    fn directory_ok(&self) {
        lock(&self.stats).up = true;
        if self.warned_down.swap(false, Ordering::Relaxed) {
            tracing::info!("cluster directory reachable again");
        }
    }

    /// Remove a closed room's entry (now or at a later heartbeat).
    pub fn forget_later(&self, slug: String) {
        lock(&self.to_forget).push(slug);
    }

    /// This node's entry for its heartbeat.
    fn describe(&self, state: &AppState, cpu: f64) -> NodeInfo {
        let stats = state.engine.stats();
        NodeInfo {
            id: self.id.clone(),
            url: self.config.node_url.clone(),
            media: state
                .engine
                .advertised_addrs()
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
            participants: stats.participants() as u64,
            rooms: state.rooms().len() as u64,
            cpu,
            draining: state.drain.is_draining(),
        }
    }

    /// The metadata of a room this node runs.
    fn meta_of(&self, state: &AppState, slug: &str) -> Option<RoomMeta> {
        let rooms = state.rooms();
        let r = rooms.get(slug)?;
        let info = state.engine.room_info(r.id).ok();
        Some(RoomMeta {
            slug: r.slug.clone(),
            name: r.name.clone(),
            public: r.public,
            max_participants: r.max_participants,
            starts_at: r.starts_at.map(secs).unwrap_or(0),
            created_at: secs(r.created_at),
            locked: info.is_some_and(|i| i.locked),
            participants: info.map_or(r.members.len(), |i| i.participants),
            e2ee: r.e2ee,
        })
    }

    /// Heartbeats until the server stops: register, re-announce rooms when
    /// the directory lost them, push participant counts, retry pending
    /// forgets, refresh the view of the cluster.
    pub async fn heartbeats(self: Arc<Self>, state: Arc<AppState>) {
        let period = (self.config.node_ttl / 3).max(Duration::from_millis(100));
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cpu = CpuSampler::default();
        loop {
            interval.tick().await;
            let node = self.describe(&state, cpu.sample(&state));
            if let Err(e) = self.beat(&state, &node).await {
                self.directory_failed(&e);
            } else {
                self.directory_ok();
            }
        }
    }

    async fn beat(&self, state: &Arc<AppState>, node: &NodeInfo) -> Result<(), DirectoryError> {
        let existed = self.dir.heartbeat(node, self.config.node_ttl).await?;
        let slugs: Vec<String> = state.rooms().rooms().map(|r| r.slug.clone()).collect();
        if !existed {
            // First beat, a Redis restart, or a lapse past the TTL: the
            // directory may not know (or may have moved) our rooms.
            if !slugs.is_empty() {
                tracing::info!(rooms = slugs.len(), "re-announcing this node's rooms");
            }
            for slug in &slugs {
                let Some(meta) = self.meta_of(state, slug) else {
                    continue;
                };
                if let Some(other) = self.dir.adopt(&meta, &self.id).await? {
                    // Recreated elsewhere while we were away: the newer copy
                    // wins; ours closes, telling its participants to rejoin
                    // (they land there).
                    tracing::warn!(room = %slug, owner = %other, "room moved to another node; closing the copy here");
                    self.count(|s| s.rooms_lost += 1);
                    let id = state.rooms().remove(slug).map(|r| r.id);
                    if let Some(id) = id {
                        let engine = state.engine.clone();
                        let _ =
                            tokio::task::spawn_blocking(move || engine.hand_over_room(id)).await;
                    }
                }
            }
            lock(&self.sent_counts).clear();
        }
        // Participant counts that changed since the last beat.
        let changed: Vec<(String, usize)> = {
            let sent = lock(&self.sent_counts);
            slugs
                .iter()
                .filter_map(|s| {
                    let n = self.meta_of(state, s)?.participants;
                    (sent.get(s) != Some(&n)).then(|| (s.clone(), n))
                })
                .collect()
        };
        self.dir.set_participants(&changed).await?;
        {
            let mut sent = lock(&self.sent_counts);
            sent.retain(|s, _| slugs.contains(s));
            sent.extend(changed);
        }
        let pending: Vec<String> = std::mem::take(&mut *lock(&self.to_forget));
        for (i, slug) in pending.iter().enumerate() {
            if let Err(e) = self.dir.forget(slug, &self.id).await {
                lock(&self.to_forget).extend(pending[i..].iter().cloned());
                return Err(e);
            }
        }
        let nodes = self.dir.nodes().await?;
        lock(&self.stats).nodes = nodes;
        Ok(())
    }

    /// Let go of every room here (draining or stopping): their next join
    /// recreates them on another node at once, without waiting for the TTL.
    pub async fn release_all(&self, state: &AppState) {
        let slugs: Vec<String> = state.rooms().rooms().map(|r| r.slug.clone()).collect();
        for slug in slugs {
            if let Err(e) = self.dir.release(&slug, &self.id).await {
                tracing::warn!(room = %slug, "could not release the room in the directory: {e}");
                return;
            }
        }
    }

    /// Say goodbye: the entry goes now, not after the TTL.
    pub async fn deregister(&self) {
        match self.dir.deregister(&self.id).await {
            Ok(()) => tracing::info!(node = %self.id, "left the cluster"),
            Err(e) => tracing::warn!("could not deregister (the TTL will): {e}"),
        }
    }
}

fn secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Busy fraction of the shard threads between two heartbeats.
#[derive(Default)]
struct CpuSampler {
    last: Option<(Instant, Duration)>,
}

impl CpuSampler {
    fn sample(&mut self, state: &AppState) -> f64 {
        let stats = state.engine.stats();
        let busy: Duration = stats.shards.iter().map(|s| s.cpu_time).sum();
        let now = Instant::now();
        let shards = stats.shards.len().max(1) as f64;
        let fraction = match self.last {
            Some((t, b)) => {
                let wall = now.duration_since(t).as_secs_f64() * shards;
                if wall > 0.0 {
                    (busy.saturating_sub(b).as_secs_f64() / wall).clamp(0.0, 1.0)
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, busy));
        fraction
    }
}
