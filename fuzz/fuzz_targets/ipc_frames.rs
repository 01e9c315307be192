//! Fuzz the supervisor-worker frame reader: the input's first byte picks
//! the piece size, the rest is fed in pieces and read both as a worker
//! reads it and as a supervisor does. Whole messages or a protocol error,
//! never a panic, never more buffered than a frame's bound (see
//! `sse_mio::internals::ipc_frames`).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        sse_mio::internals::ipc_frames(data);
    });
}
