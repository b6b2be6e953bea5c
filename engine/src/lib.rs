//! # Piazza
//!
//! A selective forwarding unit (SFU) for group video calls of up to 50
//! people, built on [str0m](https://docs.rs/str0m) in RTP mode.
//!
//! Placeholder crate docs; the embedding example lives in `engine.rs`.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod config;
pub mod core;
mod error;
mod event;
mod ids;
mod join;
#[cfg(feature = "sim")]
pub mod sim;

pub use config::{JoinOptions, RoomConfig};
pub use error::Error;
pub use event::{EngineEvent, LeaveReason, TrackKind};
pub use ids::{Layer, ParticipantId, RoomId, VideoSource};
