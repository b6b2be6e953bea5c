//! The measurements: standard definitions (RFC 3550 jitter and loss, the
//! W3C freeze rule, HDR latency histograms), each a small state machine fed
//! with packet arrivals and tested with hand-computed expectations.

pub mod collector;
pub mod freeze;
pub mod jitter;
pub mod latency;
pub mod loss;
pub mod meter;

pub use collector::{Collector, EngineSample, FrameGap, Series};
pub use freeze::FreezeDetector;
pub use jitter::Jitter;
pub use latency::{LatencyHistogram, Percentiles};
pub use loss::{LossCounter, LossSnapshot};
pub use meter::{MediaTotals, ParticipantMeter, ParticipantResult, PauseWatch, Transport};
