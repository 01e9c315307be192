//! The bare-write floor (`--bench-floor`, SIGUSR1), which the benchmarks
//! measure the server against: frames of a tick's length instead of ticks,
//! in rounds that fall on the same instants in every worker, and back to
//! ticking with no id lost.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::*;

/// `id: floor-K` as a round number.
fn floor_round(event: &Event) -> Option<u64> {
    event.id.as_deref()?.strip_prefix("floor-")?.parse().ok()
}

/// The length of the frame an event came in (id and one data line).
fn frame_len(event: &Event) -> usize {
    format!(
        "id: {}\ndata: {}\n\n",
        event.id.as_deref().unwrap_or(""),
        event.data
    )
    .len()
}

/// Reads events until a floor round arrives, returning the last numeric
/// id before it and the round.
fn until_floor(client: &mut SseClient) -> (Option<u64>, Event) {
    let mut last = None;
    loop {
        let event = client.next_event().expect("the stream goes on");
        if floor_round(&event).is_some() {
            return (last, event);
        }
        last = event.id.as_deref().and_then(|id| id.parse().ok());
    }
}

#[test]
fn sigusr1_switches_ticks_for_floor_rounds_of_a_ticks_length_and_back() {
    let mut server = ChildServer::spawn(&["--bench-floor", "--interval", "200ms"], |_| {});
    let mut client = SseClient::open(server.addr, &[]);
    client.preamble();
    let tick = client.next_event().expect("a tick");
    let tick_len = frame_len(&tick);

    server.signal(libc::SIGUSR1);
    server.read_log_until("floor on");
    let (last_tick, first) = until_floor(&mut client);
    let mut rounds = vec![floor_round(&first).unwrap()];
    let mut lengths = vec![frame_len(&first)];
    for _ in 0..2 {
        let event = client.next_event().expect("a floor round");
        rounds.push(floor_round(&event).expect("only floor rounds while the floor is on"));
        lengths.push(frame_len(&event));
    }
    assert_eq!(rounds[1], rounds[0] + 1, "{rounds:?}");
    assert_eq!(rounds[2], rounds[0] + 2, "{rounds:?}");
    // As long as a tick's frame (a digit more at most, when the round's
    // number is the longer).
    for len in &lengths {
        assert!(
            (tick_len..=tick_len + 1).contains(len),
            "{len} vs {tick_len}"
        );
    }
    let line = server.read_log_until("floor round");
    assert!(line.contains("1 streams in"), "{line}");

    server.signal(libc::SIGUSR1);
    server.read_log_until("floor off");
    // Ticking again, and the ids go on from the last tick: the floor moved
    // no stream's place in the ring.
    let next = loop {
        let event = client.next_event().expect("the stream goes on");
        if floor_round(&event).is_none() {
            break event;
        }
    };
    let last_tick = last_tick.unwrap_or_else(|| tick.id.as_deref().unwrap().parse().unwrap());
    assert_eq!(
        next.id.as_deref(),
        Some((last_tick + 1).to_string().as_str())
    );
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn with_workers_the_switch_reaches_every_worker_and_their_rounds_coincide() {
    let mut server = ChildServer::spawn(
        &["--workers", "2", "--bench-floor", "--interval", "200ms"],
        |_| {},
    );
    // One stream on each worker: SO_REUSEPORT picks, so open until both
    // have one.
    let mut on: [Option<SseClient>; 2] = [None, None];
    let deadline = Instant::now() + Duration::from_secs(20);
    while on.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "streams landed on one worker only"
        );
        let mut client = SseClient::open(server.addr, &[]);
        client.preamble();
        let worker = client.worker() as usize;
        on[worker - 1].get_or_insert(client);
    }

    server.signal(libc::SIGUSR1);
    server.read_log_until("worker 1: floor on");
    let mut rounds: Vec<BTreeSet<u64>> = Vec::new();
    for client in on.iter_mut().flatten() {
        let (_, first) = until_floor(client);
        let mut seen = BTreeSet::from([floor_round(&first).unwrap()]);
        for _ in 0..3 {
            let event = client.next_event().expect("a floor round");
            seen.insert(floor_round(&event).expect("only floor rounds"));
        }
        rounds.push(seen);
    }
    // The same round numbers in both: rounds fall on multiples of the
    // interval on the one monotonic clock (a worker that got the signal
    // just after a boundary starts a round later).
    let common = rounds[0].intersection(&rounds[1]).count();
    assert!(common >= 3, "{rounds:?}");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(15)).success());
    assert!(server.log.contains("worker 2: floor on"), "{}", server.log);
}
