//! # Piazza
//!
//! A selective forwarding unit (SFU) for group video calls of up to 50
//! people, built on [str0m](https://docs.rs/str0m) in RTP mode.
//!
//! Each client publishes Opus audio and VP8 video (optionally simulcast)
//! and receives through a fixed set of recvonly "slots" that the SFU fills
//! with whoever matters most (the active speaker first), so nobody
//! renegotiates when others join or speak. A data channel carries control
//! messages.
//!
//! ## Architecture
//!
//! - [`Engine`]: the embedding API and control plane. It keeps the room
//!   registry, prepares joins (SDP, DTLS, the participant's `Rtc`) on the
//!   caller's thread and sends commands to the shards.
//! - Shards: one OS thread per shard, each with one UDP socket (batched
//!   `recvmmsg`/`sendmmsg`, `epoll`). A room lives on one shard for life.
//! - The sans-IO core (`ShardCore`, public with the `sim` feature): the room
//!   logic a shard drives (routing, slot assignment, bandwidth allocation,
//!   speaker detection). It never reads a clock or touches a socket, so the
//!   simulator drives the very same code, through the shard's own loop step,
//!   with virtual time.
//!
//! ## Features
//!
//! - default: the engine alone.
//! - `server`: the reference server (`piazza::server`, the `piazza` binary).
//! - `sim`: the simulator (`piazza::sim`) and the core (`piazza::core`), for
//!   the benchmarks, the load generator and tests.
//!
//! ## Example
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let offer_sdp = String::new();
//! let engine = piazza::Engine::builder()
//!     .shards(2)
//!     .bind("127.0.0.1".parse()?)
//!     .build()?;
//! let room = engine.create_room(piazza::RoomConfig::default())?;
//!
//! // The client's SDP offer arrives over your signalling channel.
//! let joined = engine.join(room, &offer_sdp, piazza::JoinOptions::new("Alice"))?;
//! // ... send `joined.answer` back to the client ...
//!
//! let events = engine.events(); // piazza::Events
//! while let Ok(event) = events.recv() {
//!     println!("{event:?}");
//!     # break;
//! }
//! engine.leave(room, joined.participant)?;
//! engine.shutdown();
//! # Ok(())
//! # }
//! ```
//!
//! `examples/embed.rs` runs the same flow with a str0m client over loopback:
//! `cargo run -p piazza --example embed`.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod answer;
mod config;
// The sans-IO core is public with the `sim` feature (for the benchmarks,
// the load generator and the tests; not a stable API), private otherwise.
#[cfg(feature = "sim")]
pub mod core;
#[cfg(not(feature = "sim"))]
#[allow(dead_code)]
mod core;
mod engine;
mod error;
mod event;
#[cfg(feature = "sim")]
#[doc(hidden)]
pub mod fuzzing;
mod ids;
mod join;
mod latency;
mod rng;
#[cfg(feature = "server")]
pub mod server;
mod shard;
#[cfg(feature = "sim")]
pub mod sim;

pub use config::{ConfigError, IngressConfig, JoinOptions, RoomConfig, TcpConfig};
pub use core::chat::ChatConfig;
pub use core::{
    CoreStats, DownlinkStats, DropStats, ESTIMATE_BOUNDS_BPS, Footprint, IngressStats, SlotState,
    SubscriberStats, TcpStats,
};
pub use engine::{DEFAULT_SHUTDOWN_BOUND, Engine, EngineBuilder, EngineStats, Joined, RoomInfo};
pub use error::{Error, IoError};
pub use event::{EngineEvent, Events, LeaveReason, RecvError, TrackKind};
pub use ids::{Layer, ParticipantId, RoomId, VideoCodec, VideoSource};
pub use latency::{FORWARD_LATENCY_BUCKETS, ForwardLatency};
pub use shard::{ShardStats, SocketStats, TcpSocketStats};
