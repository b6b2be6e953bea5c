//! Fuzz target `sdp`: an SDP offer to join preparation and the shard adopting the participant
//! (`piazza::fuzzing::sdp`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = piazza::fuzzing::sdp::run(data);
});
