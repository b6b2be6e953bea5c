//! Fuzz target `http`: one request body to the reference server's API, in-process
//! (input format: `piazza::fuzzing::http`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    piazza::fuzzing::http::run(data);
});
