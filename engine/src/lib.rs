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
//! - [`core::ShardCore`]: the sans-IO room logic a shard drives (routing,
//!   slot assignment, speaker detection). It never reads a clock or touches
//!   a socket, so the simulator drives the very same code with virtual time.
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
//! let events = engine.events();
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

mod config;
pub mod core;
mod engine;
mod error;
mod event;
#[cfg(feature = "sim")]
#[doc(hidden)]
pub mod fuzzing;
mod ids;
mod join;
mod rng;
#[cfg(feature = "server")]
pub mod server;
mod shard;
#[cfg(feature = "sim")]
pub mod sim;

pub use config::{IngressConfig, JoinOptions, RoomConfig};
pub use core::chat::ChatConfig;
pub use core::{CoreStats, DropStats, IngressStats, SlotState, SubscriberStats};
pub use engine::{DEFAULT_SHUTDOWN_BOUND, Engine, EngineBuilder, EngineStats, Joined, RoomInfo};
pub use error::Error;
pub use event::{EngineEvent, Events, LeaveReason, RecvError, TrackKind};
pub use ids::{Layer, ParticipantId, RoomId, VideoSource};
pub use shard::{ShardStats, SocketStats};
