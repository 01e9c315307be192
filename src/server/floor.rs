//! The bare-write floor: a benchmark's yardstick, behind the hidden
//! `--bench-floor` flag.
//!
//! How fast could *any* program on this machine get one frame to every
//! stream? The floor answers on the server's own sockets, in the same run:
//! one `write(2)` per stream of a frame as long as a tick's, in a plain
//! loop, and nothing else (no ring, no cursor, no slices). A fan-out
//! spread read beside it says how much the server itself costs.
//!
//! With `--bench-floor`, SIGUSR1 switches between ticking and floor rounds
//! (`sse-load --floor` sends it; a supervisor passes it on to its workers).
//! While the floor is on the ticker pauses, and at each multiple of
//! `--interval` on the monotonic clock (the same instant in every worker,
//! so their rounds overlap as their ticks would) every caught-up stream is
//! written `id: floor-K` and data padded to a tick's length. The id is not
//! a number: it moves no stream's place in the ring, and a client records
//! it like any event, so a load client measures its spread exactly as it
//! measures a tick's. A stream with bytes still pending is left out
//! (counted); one whose write is short is closed, since its stream would
//! be cut mid-frame. Each round is logged: streams, time, what was left.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::{Interest, Registry, Token};
use signal_hook::consts::SIGUSR1;
use signal_hook_mio::v1_0::Signals;

use slab::Slab;

use crate::config::Config;
use crate::connection::{Connection, Doing};
use crate::counters::CloseReason;
use crate::event::TICK_STRING_LEN;
use crate::ring::Ring;
use crate::schedule::{Schedule, Timer};
use crate::sse::encode_event;

/// The floor's switch and its next round.
pub(super) struct Floor {
    signals: Signals,
    /// Time between rounds: `--interval`, or 1 s if the ticker is off.
    period: Duration,
    /// The round queued next while the floor is on; `None` while ticking.
    next_round: Option<u64>,
}

impl Floor {
    /// Makes SIGUSR1 a readiness event under `token`.
    /// The floor, if `--bench-floor` asks for it, its SIGUSR1 registered
    /// under `token`.
    pub(super) fn for_config(
        config: &Config,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Option<Floor>> {
        if !config.bench_floor {
            return Ok(None);
        }
        Floor::new(registry, token, config.interval).map(Some)
    }

    fn new(registry: &Registry, token: Token, interval: Duration) -> io::Result<Floor> {
        let mut signals = Signals::new([SIGUSR1])?;
        registry.register(&mut signals, token, Interest::READABLE)?;
        let period = if interval.is_zero() {
            Duration::from_secs(1)
        } else {
            interval
        };
        Ok(Floor {
            signals,
            period,
            next_round: None,
        })
    }

    pub(super) fn is_on(&self) -> bool {
        self.next_round.is_some()
    }

    /// Round numbers count periods on CLOCK_MONOTONIC: round K is due at
    /// K × period, in every process alike. Returns the next round after
    /// now, and when it is due.
    fn next_after_now(&self) -> (u64, Instant) {
        let period = self.period.as_nanos().max(1) as u64;
        let now_ns = monotonic_ns();
        let round = now_ns / period + 1;
        let due = Instant::now() + Duration::from_nanos(round * period - now_ns);
        (round, due)
    }
}

impl Floor {
    /// SIGUSR1 came: each one switches between ticking and floor rounds.
    pub(super) fn toggle(&mut self, schedule: &mut Schedule) {
        for _ in self.signals.pending() {
            if self.next_round.take().is_some() {
                info!("floor off: events flow again");
            } else {
                let (round, due) = self.next_after_now();
                self.next_round = Some(round);
                schedule.at(due, Timer::Floor { round });
                info!(
                    "floor on: the ticker pauses; every {:?}, one bare write per stream",
                    self.period
                );
            }
        }
    }

    /// Floor round `round` is due: one write of a tick-sized frame to every
    /// caught-up stream of `conns`, timed (the broken ones into `dead`);
    /// then the next round is queued.
    pub(super) fn round(
        &mut self,
        round: u64,
        conns: &mut Slab<Connection>,
        ring: &Ring,
        schedule: &mut Schedule,
        dead: &mut Vec<(usize, CloseReason)>,
    ) {
        if self.next_round != Some(round) {
            return; // switched off (or off and on again) since it was queued
        }
        let (next, due) = self.next_after_now();
        self.next_round = Some(next);
        schedule.at(due, Timer::Floor { round: next });

        let frame = floor_frame(round, tick_frame_len(ring.next_id()));
        let (mut whole, mut pending, mut full, mut cut) = (0usize, 0usize, 0usize, 0usize);
        let start = Instant::now();
        for (key, conn) in conns.iter_mut() {
            if conn.doing() != Doing::Streaming {
                continue;
            }
            let Some((socket, stream)) = conn.stream_mut() else {
                continue;
            };
            if !stream.cursor.caught_up(ring) {
                pending += 1;
                continue;
            }
            match socket.write(&frame) {
                Ok(n) if n == frame.len() => whole += 1,
                Ok(n) => {
                    debug!("#{key} floor write short ({n} of {}): closing", frame.len());
                    dead.push((key, CloseReason::Error));
                    cut += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => full += 1,
                Err(e) => {
                    debug!("#{key} floor write failed: {e}");
                    dead.push((key, CloseReason::from_io(&e)));
                    cut += 1;
                }
            }
        }
        let took = start.elapsed();
        info!(
            "floor round {round}: {whole} streams in {took:?} ({:.2} us each); \
             left out: {pending} with bytes pending, {full} with full buffers; {cut} cut",
            took.as_secs_f64() * 1e6 / whole.max(1) as f64
        );
    }
}

/// The length of a tick's frame with id `id`, which the floor's matches.
fn tick_frame_len(id: u64) -> usize {
    let mut frame = Vec::new();
    encode_event(&mut frame, None, Some(id), &"x".repeat(TICK_STRING_LEN));
    frame.len()
}

/// `id: floor-K`, and data padded so the frame is `len` bytes (or as
/// short as it can be).
fn floor_frame(round: u64, len: usize) -> Vec<u8> {
    let bare = format!("id: floor-{round}\ndata: \n\n").len();
    let pad = len.saturating_sub(bare).max(1);
    format!("id: floor-{round}\ndata: {}\n\n", "f".repeat(pad)).into_bytes()
}

/// Nanoseconds on CLOCK_MONOTONIC (the clock `Instant` reads on Linux),
/// the same in every process.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_parser::{EventParser, Item};

    #[test]
    fn a_floor_frame_is_as_long_as_a_tick_and_parses_as_one_event() {
        for id in [1, 99, 123_456, 98_765_432_101] {
            let len = tick_frame_len(id);
            let frame = floor_frame(1_764_480_000, len);
            assert_eq!(frame.len(), len.max(frame.len()));
            assert!(frame.len() <= len + 1, "{id}: {} vs {len}", frame.len());
            let mut events = Vec::new();
            EventParser::new().feed(&frame, &mut |item| {
                if let Item::Event(e) = item {
                    events.push(e);
                }
            });
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].id, "floor-1764480000");
        }
        assert_eq!(
            tick_frame_len(7),
            "id: 7\ndata: \n\n".len() + TICK_STRING_LEN
        );
    }
}
