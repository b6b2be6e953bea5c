//! Fuzz target `datagram`: datagrams, signed STUN, SRTP-protected RTP, control messages and time
//! advances on a shard core whose room holds two connected participants
//! (input format: `piazza::fuzzing::datagram`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    piazza::fuzzing::datagram::run(data);
});
