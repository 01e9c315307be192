//! Writing a stream: the frames it wants from its cursor on, in one
//! `write` or a gathered `writev`, short writes and `WouldBlock` resumed
//! from the same bytes, frames it does not want passed over, a stream that
//! fell off the ring told apart from one that only passed over others'
//! frames. [`Stream::flush`](super::Stream::flush) is the one way in.

use std::io::{self, IoSlice, Write};

use log::trace;

use super::{Cursor, Ring, Wants};
use crate::counters::Counters;
use crate::sse::HEARTBEAT;

/// Most frames gathered into one `writev` when a connection catches up.
const MAX_IOVECS: usize = 16;

/// How far a flush got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Every frame in the ring went out; the connection waits for the next event.
    CaughtUp,
    /// The socket's send buffer is full (`WouldBlock`); a writable event will
    /// resume from the cursor.
    Blocked,
    /// The next frame this connection needs has already left the ring.
    Lagged,
}

/// Writes the frames a stream wants from `cursor` on until it is caught up
/// or the socket is full: where the write of a stream happens
/// ([`Stream::flush`] is the one way in). Frames it does not want are passed
/// over. An I/O error other than `WouldBlock`/`Interrupted` is returned for
/// the caller to close the connection.
pub(super) fn write_frames<W: Write>(
    socket: &mut W,
    cursor: &mut Cursor,
    ring: &Ring,
    wants: &dyn Wants,
    counters: &mut Counters,
) -> io::Result<Flushed> {
    let result = write_pending(socket, cursor, ring, wants, counters);
    cursor.set_waiting(matches!(result, Ok(Flushed::Blocked)));
    result
}

fn write_pending<W: Write>(
    socket: &mut W,
    cursor: &mut Cursor,
    ring: &Ring,
    wants: &dyn Wants,
    counters: &mut Counters,
) -> io::Result<Flushed> {
    while cursor.heartbeat_left() > 0 {
        let pending = &HEARTBEAT[HEARTBEAT.len() - cursor.heartbeat_left() as usize..];
        match socket.write(pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                counters.bytes_written += n as u64;
                if n < pending.len() {
                    counters.short_writes += 1;
                    trace!("short write: {n} of {} heartbeat bytes", pending.len());
                }
                cursor.set_heartbeat_left(cursor.heartbeat_left() - n as u8);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                counters.would_block += 1;
                trace!("WouldBlock in a heartbeat: waiting for a writable event");
                return Ok(Flushed::Blocked);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let feed = cursor.feed();
    loop {
        if cursor.next_id < ring.first_id() {
            if !ring.may_pass_over_lost(cursor, wants) {
                return Ok(Flushed::Lagged);
            }
            trace!(
                "passing over frames {}..{}: none was for this stream",
                cursor.next_id,
                ring.first_id()
            );
            cursor.next_id = ring.first_id();
        }
        // Pass over what this stream does not want (only between frames).
        while cursor.offset() == 0
            && let Some(frame) = ring.frame(cursor.next_id)
            && !frame.for_stream(feed, wants)
        {
            cursor.next_id += 1;
        }
        if cursor.next_id == ring.next_id() {
            return Ok(Flushed::CaughtUp);
        }
        let Some(frame) = ring.frame(cursor.next_id) else {
            return Ok(Flushed::Lagged);
        };
        // The frames this write carries: the rest of the current one, then
        // (catching up) the next ones it wants, gathered into one writev(2).
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut ids = [0u64; MAX_IOVECS];
        let pending = &frame.bytes(feed)[cursor.offset() as usize..];
        slices[0] = IoSlice::new(pending);
        ids[0] = cursor.next_id;
        let mut count = 1;
        let mut wanted = pending.len();
        let mut next = cursor.next_id + 1;
        while count < MAX_IOVECS
            && let Some(frame) = ring.frame(next)
        {
            next += 1;
            if frame.for_stream(feed, wants) {
                slices[count] = IoSlice::new(frame.bytes(feed));
                ids[count] = frame.id;
                wanted += frame.bytes(feed).len();
                count += 1;
            }
        }
        // The common case, a caught-up connection and one new frame, is one
        // plain write(2).
        let result = if count == 1 {
            socket.write(pending)
        } else {
            socket.write_vectored(&slices[..count])
        };
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                counters.bytes_written += n as u64;
                if n < wanted {
                    counters.short_writes += 1;
                    trace!(
                        "short write: {n} of {wanted} bytes at id {} offset {}",
                        cursor.next_id,
                        cursor.offset()
                    );
                }
                // Frames older than the newest were sent from history.
                let newest = ring.next_id() - 1;
                let mut left = n;
                for (slice, &id) in slices[..count].iter().zip(&ids[..count]) {
                    if left < slice.len() {
                        cursor.next_id = id;
                        let offset = if id == ids[0] {
                            cursor.offset() + left as u32
                        } else {
                            left as u32
                        };
                        cursor.set_offset(offset);
                        break;
                    }
                    left -= slice.len();
                    if id < newest {
                        counters.replayed += 1;
                    }
                    cursor.next_id = if id == ids[count - 1] { next } else { id + 1 };
                    cursor.set_offset(0);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                counters.would_block += 1;
                trace!(
                    "WouldBlock at id {} offset {}: waiting for a writable event",
                    cursor.next_id,
                    cursor.offset()
                );
                return Ok(Flushed::Blocked);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
