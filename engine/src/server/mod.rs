//! The reference server (feature `server`): an HTTP API with invite links,
//! room controls and tokens, Prometheus metrics, and a browser client, on
//! top of one [`Engine`].
//!
//! The `piazza` binary is a thin `main` around this module:
//!
//! ```no_run
//! # async fn run() -> Result<(), piazza::server::ServerError> {
//! use piazza::server::{Server, ServerConfig};
//!
//! let config = ServerConfig {
//!     http: "127.0.0.1:0".parse().unwrap(),
//!     ..Default::default()
//! };
//! let server = Server::bind(config).await?;
//! println!("open http://{}/", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! Layout: `api` holds the route handlers (a file per resource), `front`
//! the front door every request passes (rate limits, cluster routing),
//! `cluster` the Redis directory of cluster mode (docs/cluster.md),
//! `ratelimit` the per-address token buckets, `tokens` the signed room
//! tokens, `rooms` the server's room registry (fed by the engine's events),
//! `metrics` the Prometheus text, `config` the TOML/env/flag configuration
//! and `web` the embedded browser client (`static/`). Routes, statuses and
//! bodies are documented in `docs/api.md` section 4.
//!
//! Threads: the HTTP side runs on tokio; every engine call that waits for a
//! shard (create, join, leave, kick, lock, close) runs on tokio's blocking
//! pool. One plain thread, `piazza-events`, reads the engine's events into
//! the registry; a tokio task closes rooms that stayed empty past the grace
//! period and samples the forwarding rate for `/metrics`.

mod api;
mod cluster;
mod config;
mod error;
mod front;
mod ice;
mod metrics;
mod ratelimit;
mod rooms;
mod tokens;
mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Mutex as AsyncMutex, Notify, Semaphore};

use crate::Engine;

pub use config::{Args, ClusterConfig, ServerConfig, parse_duration};

pub use error::ApiError;
pub use ice::{IceServer, IceServerConfig, turn_rest_password};
pub use metrics::process_heap_bytes;
pub use rooms::MemberView;
pub use tokens::{Claims, Grant, TokenKeys};

use cluster::Cluster;
use metrics::{HttpCounters, RateSampler};
use ratelimit::RateLimiter;
use rooms::RoomRegistry;

/// Why the server could not start or stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is unusable.
    Config(String),
    /// The engine refused to start (sockets, threads, configuration).
    Engine(crate::Error),
    /// The HTTP listener failed.
    Io(std::io::Error),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Config(e) => write!(f, "configuration: {e}"),
            ServerError::Engine(e) => write!(f, "engine: {e}"),
            ServerError::Io(e) => write!(f, "http listener: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// State shared by every handler.
pub(crate) struct AppState {
    engine: Arc<Engine>,
    config: ServerConfig,
    keys: TokenKeys,
    rooms: Mutex<RoomRegistry>,
    /// Serialises room creation so `max_rooms` is exact.
    create: AsyncMutex<()>,
    /// Joins prepared at once.
    joins: Semaphore,
    counters: Mutex<HttpCounters>,
    rates: Mutex<RateSampler>,
    /// Cluster mode; `None` for a node on its own.
    cluster: Option<Arc<Cluster>>,
    create_limit: RateLimiter,
    join_limit: RateLimiter,
    drain: Drain,
}

/// Draining: no new rooms here, running rooms continue until they empty or
/// the deadline passes, then the server stops (participants are told to
/// rejoin, and land on other nodes).
#[derive(Debug, Default)]
pub(crate) struct Drain {
    draining: AtomicBool,
    deadline: Mutex<Option<Instant>>,
}

impl Drain {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Start (or shorten) a drain.
    pub fn start(&self, within: Duration) {
        let at = Instant::now() + within;
        let mut deadline = self.deadline.lock().unwrap_or_else(PoisonError::into_inner);
        if deadline.is_none_or(|d| at < d) {
            *deadline = Some(at);
        }
        if !self.draining.swap(true, Ordering::SeqCst) {
            tracing::info!("draining: no new rooms; running rooms continue for at most {within:?}");
        }
    }

    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts a drain from outside the server (the binary's SIGUSR1 handler).
#[derive(Clone)]
pub struct Drainer(Arc<AppState>);

impl std::fmt::Debug for Drainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Drainer")
    }
}

impl Drainer {
    /// Drain within the configured `drain_timeout`.
    pub fn drain(&self) {
        self.0.drain.start(self.0.config.drain_timeout);
    }
}

impl AppState {
    /// The registry. Never held across an `.await` or an engine call.
    fn rooms(&self) -> MutexGuard<'_, RoomRegistry> {
        // Updates are single inserts/removes; a panic mid-update (a bug)
        // leaves the map usable.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn counters(&self) -> MutexGuard<'_, HttpCounters> {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rates(&self) -> MutexGuard<'_, RateSampler> {
        self.rates.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The `sub` of a participant's token: `p12`, or `p12@node` in a
    /// cluster (participant ids are per node).
    fn participant_sub(&self, id: crate::ParticipantId) -> String {
        match &self.cluster {
            Some(c) => format!("{id}@{}", c.id),
            None => id.to_string(),
        }
    }

    /// The participant a token belongs to, if it is one of this node's.
    fn own_participant(&self, claims: &Claims) -> Option<crate::ParticipantId> {
        match &self.cluster {
            None => claims.participant(),
            Some(c) => {
                let (id, node) = claims.sub.split_once('@')?;
                if node == c.id { id.parse().ok() } else { None }
            }
        }
    }
}

/// A bound, not yet serving, reference server.
pub struct Server {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Server {
    /// Start the engine and bind the HTTP listener.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        let mut builder = Engine::builder().bind(config.udp_bind);
        if let Some(n) = config.shards {
            builder = builder.shards(n);
        }
        if config.max_participants_per_shard > 0 {
            builder = builder.max_participants_per_shard(config.max_participants_per_shard);
        }
        if let Some(port) = config.udp_port {
            builder = builder.port_range(port..=port.saturating_add(255));
        }
        if let Some(ip) = config.public_ip {
            builder = builder.public_ip(ip);
        }
        if config.ice_tcp {
            builder = builder.ice_tcp(Some(crate::TcpConfig::default()));
        }
        let engine = tokio::task::spawn_blocking(move || builder.build())
            .await
            .map_err(|e| ServerError::Config(format!("engine start panicked: {e}")))?
            .map_err(ServerError::Engine)?;
        let listener = tokio::net::TcpListener::bind(config.http)
            .await
            .map_err(ServerError::Io)?;
        let local_addr = listener.local_addr().map_err(ServerError::Io)?;

        let secret = match &config.token_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                let mut s = vec![0u8; 32];
                getrandom::fill(&mut s).map_err(|e| {
                    ServerError::Config(format!("no randomness for the token secret: {e}"))
                })?;
                s
            }
        };
        let cluster = match &config.cluster {
            Some(c) => Some(Arc::new(
                Cluster::new(c.clone(), config.token_ttl).map_err(ServerError::Config)?,
            )),
            None => None,
        };
        let state = Arc::new(AppState {
            engine: Arc::new(engine),
            keys: TokenKeys::new(&secret),
            rooms: Mutex::new(RoomRegistry::default()),
            create: AsyncMutex::new(()),
            joins: Semaphore::new(config.max_pending_joins),
            counters: Mutex::new(HttpCounters::default()),
            rates: Mutex::new(RateSampler::default()),
            cluster,
            create_limit: RateLimiter::new(config.rate_limit_rooms_per_minute),
            join_limit: RateLimiter::new(config.rate_limit_joins_per_minute),
            drain: Drain::default(),
            config,
        });
        Ok(Server {
            state,
            listener,
            local_addr,
        })
    }

    /// The HTTP listener's address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The engine behind the server.
    pub fn engine(&self) -> Arc<Engine> {
        self.state.engine.clone()
    }

    /// The HTTP API as a router (what [`Server::run`] serves), to serve on
    /// a listener of one's own or to drive in-process with
    /// `tower::ServiceExt::oneshot` (the fuzz harness does). Without
    /// [`Server::run`] nothing feeds the engine's events into the room
    /// registry and empty rooms stay open.
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// A handle that starts a drain (SIGUSR1 in the binary).
    pub fn drainer(&self) -> Drainer {
        Drainer(self.state.clone())
    }

    /// This node's id in the cluster (`None` single-node).
    pub fn node_id(&self) -> Option<String> {
        self.state.cluster.as_ref().map(|c| c.id.clone())
    }

    /// The UDP addresses clients are told to send media to.
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.state.engine.advertised_addrs()
    }

    /// Serve until `shutdown` completes, then shut down gracefully: stop
    /// accepting HTTP connections (requests in flight finish), then
    /// [`Engine::shutdown_within`] the configured `shutdown_timeout`: joins
    /// are refused, every participant is told (`closing` control message,
    /// DTLS close_notify), the shards stop.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let state = self.state;
        let stop = Arc::new(AtomicBool::new(false));
        let pump = spawn_event_pump(state.clone(), stop.clone())?;
        let janitor = tokio::spawn(janitor(state.clone()));
        let heartbeats = state
            .cluster
            .clone()
            .map(|c| tokio::spawn(c.heartbeats(state.clone())));
        let drained = Arc::new(Notify::new());
        let drainer = tokio::spawn(watch_drain(state.clone(), drained.clone()));
        let stop_serving = async move {
            tokio::select! {
                _ = shutdown => {}
                _ = drained.notified() => {}
            }
        };

        let app = api::router(state.clone());
        let served = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop_serving)
        .await;

        janitor.abort();
        drainer.abort();
        if let Some(h) = heartbeats {
            h.abort();
        }
        if let Some(cluster) = &state.cluster {
            // Before the participants are told: their rejoin must find the
            // rooms free to move.
            let release = cluster.release_all(&state);
            if tokio::time::timeout(Duration::from_secs(3), release)
                .await
                .is_err()
            {
                tracing::warn!("releasing rooms in the directory timed out; the node TTL will");
            }
        }
        let engine = state.engine.clone();
        let bound = state.config.shutdown_timeout;
        match tokio::task::spawn_blocking(move || engine.shutdown_within(bound)).await {
            Ok(true) => tracing::info!("engine stopped: every participant was told"),
            Ok(false) => tracing::warn!("engine shutdown exceeded {bound:?}; exiting anyway"),
            Err(e) => tracing::error!("engine shutdown panicked: {e}"),
        }
        if let Some(cluster) = &state.cluster {
            let _ = tokio::time::timeout(Duration::from_secs(3), cluster.deregister()).await;
        }
        stop.store(true, Ordering::SeqCst);
        let _ = tokio::task::spawn_blocking(move || pump.join()).await;
        tracing::info!("server stopped");
        served.map_err(ServerError::Io)
    }
}

/// The `piazza-events` thread: engine events into the room registry.
fn spawn_event_pump(
    state: Arc<AppState>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, ServerError> {
    let events = state.engine.events();
    std::thread::Builder::new()
        .name("piazza-events".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match events.recv_timeout(Duration::from_millis(200)) {
                    Ok(event) => {
                        tracing::debug!(?event, "engine event");
                        let closed = state.rooms().apply(&event, SystemTime::now());
                        if let (Some(slug), Some(cluster)) = (closed, &state.cluster) {
                            cluster.forget_later(slug);
                        }
                    }
                    Err(crate::RecvError::Timeout) => {}
                    Err(_) => break,
                }
            }
        })
        .map_err(ServerError::Io)
}

/// Close rooms empty past the grace period; sample forwarding rates.
async fn janitor(state: Arc<AppState>) {
    let grace = state.config.empty_room_grace;
    let tick = (grace / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let expired = state.rooms().take_expired(SystemTime::now(), grace);
        for (slug, id) in expired {
            tracing::info!(room = %slug, "room closed: empty for {grace:?}");
            state.counters().rooms_expired += 1;
            if let Some(cluster) = &state.cluster {
                cluster.forget_later(slug.clone());
            }
            let engine = state.engine.clone();
            match tokio::task::spawn_blocking(move || engine.close_room(id)).await {
                Ok(Ok(())) | Ok(Err(crate::Error::UnknownRoom(_))) => {}
                Ok(Err(e)) => tracing::warn!(room = %slug, "closing an empty room: {e}"),
                Err(e) => tracing::error!(room = %slug, "closing an empty room panicked: {e}"),
            }
        }
        let stats = state.engine.stats();
        state.rates().sample(Instant::now(), &stats);
    }
}

/// Stop the server once a drain is over: every room empty, or the deadline.
async fn watch_drain(state: Arc<AppState>, drained: Arc<Notify>) {
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    loop {
        interval.tick().await;
        let Some(deadline) = state.drain.deadline() else {
            continue;
        };
        let empty = state.rooms().rooms().all(|r| r.members.is_empty());
        if empty || Instant::now() >= deadline {
            tracing::info!(
                rooms = state.rooms().len(),
                "drain over ({}); stopping",
                if empty {
                    "no participants left"
                } else {
                    "deadline"
                }
            );
            drained.notify_one();
            return;
        }
    }
}
