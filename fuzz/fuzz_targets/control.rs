//! Fuzz target `control`: control-channel JSON messages, one a line, applied by the room
//! (input format: `piazza::fuzzing::control`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    piazza::fuzzing::control::run(data);
});
