//! Callgrind client requests, so the count mode measures only the timed
//! part of a benchmark: the bench executable runs under
//! `valgrind --tool=callgrind --instr-atstart=no` (setup runs at valgrind's
//! uninstrumented speed) and switches instrumentation on around the
//! measured iterations.
//!
//! A client request is a special no-op instruction sequence that valgrind
//! recognises (`valgrind.h`, `VALGRIND_DO_CLIENT_REQUEST_EXPR` for amd64):
//! run natively, it does nothing and yields the default value.

/// `VG_USERREQ_TOOL_BASE('C', 'T')` from `callgrind.h`.
const CALLGRIND_BASE: usize = ((b'C' as usize) << 24) | ((b'T' as usize) << 16);
const ZERO_STATS: usize = CALLGRIND_BASE + 1;
const TOGGLE_COLLECT: usize = CALLGRIND_BASE + 2;
const START_INSTRUMENTATION: usize = CALLGRIND_BASE + 4;
const STOP_INSTRUMENTATION: usize = CALLGRIND_BASE + 5;
/// `VG_USERREQ__RUNNING_ON_VALGRIND` from `valgrind.h`.
const RUNNING_ON_VALGRIND: usize = 0x1001;

#[cfg(target_arch = "x86_64")]
fn client_request(default: usize, request: usize, arg1: usize) -> usize {
    let args: [usize; 6] = [request, arg1, 0, 0, 0, 0];
    let mut result = default;
    // SAFETY: the rotations of rdi add up to 128 bits (rdi is unchanged) and
    // `xchg rbx, rbx` is a no-op; valgrind, when present, reads the six
    // words at rax (alive for the whole asm block) and writes rdx only.
    unsafe {
        std::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            inout("rdx") result,
            in("rax") args.as_ptr(),
            inout("rdi") 0usize => _,
            options(nostack),
        );
    }
    result
}

#[cfg(not(target_arch = "x86_64"))]
fn client_request(default: usize, _request: usize, _arg1: usize) -> usize {
    default
}

/// Whether the process runs under valgrind.
pub fn running_on_valgrind() -> bool {
    client_request(0, RUNNING_ON_VALGRIND, 0) > 0
}

/// Start counting: zero the counters and switch instrumentation on.
pub fn start() {
    client_request(0, START_INSTRUMENTATION, 0);
    client_request(0, ZERO_STATS, 0);
}

/// Switch event collection off or on again (instrumentation stays on, so
/// this is cheap: callgrind then skips counting what runs in between).
pub fn toggle_collect() {
    client_request(0, TOGGLE_COLLECT, 0);
}

/// Stop counting; callgrind writes the totals when the process exits.
pub fn stop() {
    client_request(0, STOP_INSTRUMENTATION, 0);
}
