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
//! Layout: `api` holds the route handlers, `tokens` the signed room
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
mod bandwidth_api;
mod config;
mod error;
mod metrics;
mod rooms;
mod tokens;
mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Mutex as AsyncMutex, Semaphore};

use crate::Engine;

pub use config::{Args, ServerConfig, parse_duration};
pub use error::ApiError;
pub use rooms::MemberView;
pub use tokens::{Claims, Grant, TokenKeys};

use metrics::{HttpCounters, RateSampler};
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
        let state = Arc::new(AppState {
            engine: Arc::new(engine),
            keys: TokenKeys::new(&secret),
            rooms: Mutex::new(RoomRegistry::default()),
            create: AsyncMutex::new(()),
            joins: Semaphore::new(config.max_pending_joins),
            counters: Mutex::new(HttpCounters::default()),
            rates: Mutex::new(RateSampler::default()),
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

        let app = api::router(state.clone());
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;

        janitor.abort();
        let engine = state.engine.clone();
        let bound = state.config.shutdown_timeout;
        match tokio::task::spawn_blocking(move || engine.shutdown_within(bound)).await {
            Ok(true) => tracing::info!("engine stopped: every participant was told"),
            Ok(false) => tracing::warn!("engine shutdown exceeded {bound:?}; exiting anyway"),
            Err(e) => tracing::error!("engine shutdown panicked: {e}"),
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
                        state.rooms().apply(&event, SystemTime::now());
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
