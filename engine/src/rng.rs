//! Where Piazza's randomness comes from: one 64-bit seed per engine or
//! simulation, split into independent streams for each user (ICE
//! credentials, each shard's ingress table keys). A seeded simulation draws
//! the same values on every run; a production engine seeds from the OS.

use std::hash::{BuildHasher, RandomState};

/// A seed from the operating system (std's hasher keys are OS-random).
pub(crate) fn os_seed() -> u64 {
    RandomState::new().hash_one(0x5eed_u64)
}

/// The `stream`-th seed derived from `seed` (SplitMix64 of their mix), so
/// every user of randomness gets its own independent, reproducible stream.
pub(crate) fn derive(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Stream numbers of [`derive`].
pub(crate) mod stream {
    /// ICE credentials of joins.
    pub const JOIN: u64 = 1;
    /// Shard `n`'s ingress keys are `SHARD + n`.
    pub const SHARD: u64 = 1000;
    /// str0m's thread-local generator in a simulation.
    #[cfg(feature = "sim")]
    pub const STR0M: u64 = 2;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_distinct_and_reproducible() {
        assert_eq!(derive(7, 1), derive(7, 1));
        assert_ne!(derive(7, 1), derive(7, 2));
        assert_ne!(derive(7, 1), derive(8, 1));
    }
}
