//! The Redis backplane (`--redis URL`): instances share one log, a Redis
//! stream, so that an event published on any of them reaches the clients
//! of all of them, in one order, with the same ids and bytes.
//!
//! Redis is the engine; this module only speaks to it, over two
//! connections in the loop's own poll (see `link`): the **writer** runs
//! the scripts (`scripts`): every event, tick or chat message, is
//! appended by one `EVAL` that takes the next id from a counter and
//! `XADD`s `<id>-0`; the ticker's lease is taken and renewed once a
//! second, and a tick is appended only by the lease's holder, checked in
//! the same script. The **reader** sits in `XREAD BLOCK` from the last id
//! it delivered and hands every entry to the hub as an event, so every
//! instance fans out the same stream in stream order. A chat post's `202`
//! comes when its script has returned its id.
//!
//! Starting: the reader makes sure the counter exists, reads the last
//! `--history` entries into the ring, then follows the stream. Redis gone:
//! streams stay open, chat posts get `503`, both links reconnect with
//! jittered backoff, and the reader resumes from the last id it
//! delivered: nothing Redis kept is lost or repeated. A client whose
//! `Last-Event-ID` is older than the ring gets what it missed from the
//! stream (`XRANGE`, see `replay`), shared between clients that ask
//! together.

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{trace, warn};
use mio::{Registry, Token};
use rand::RngExt;
use rand::distr::Alphanumeric;

use crate::config::RedisUrl;
use crate::event::{Answer, Ask, Outcome, Replay, Status, Why};
use crate::event::{Draft, Kind, Ticket};
use crate::schedule::{SourceTimer, SourceTimers};

mod link;
mod replay;
mod replies;
mod resp;
mod scripts;

use crate::handover::BackplaneRow;
use link::{Link, State};
#[cfg(feature = "internals")]
pub(crate) use resp::read_pieces;

/// How often the lease is renewed (and the lag measured).
const RENEW: Duration = Duration::from_secs(1);

/// How long a lease lasts unless renewed: a dead holder's lease is free
/// after this, and another instance takes it within a renewal.
const LEASE_TTL: Duration = Duration::from_secs(3);

/// The lease an upgrade wants left before it hands over (a renewal
/// leaves about 2.5 s; the swap takes a fraction of a second).
const LEASE_FOR_SWAP: Duration = Duration::from_secs(2);

/// How long `XREAD` blocks in Redis before it is asked again.
const READ_BLOCK: Duration = Duration::from_millis(1000);

/// Most entries one `XREAD` returns.
const READ_COUNT: &str = "1000";

/// The stream keeps at least this many times `--history` entries.
const KEEP_PER_HISTORY: usize = 10;

/// What the reader's replies are for.
#[derive(Debug)]
enum ReadTag {
    Login,
    Init,
    History,
    Read,
}

/// What the writer's replies are for.
#[derive(Debug)]
enum WriteTag {
    Login,
    Append {
        ticket: Option<Ticket>,
        kind: Kind,
    },
    Lease {
        sent: Instant,
    },
    /// Redis's clock, asked at `sent` (local ms): the appends' deadlines
    /// are set on it.
    Time {
        sent: Instant,
        sent_ms: u64,
    },
    Top,
    Replay(u64),
}

/// The Redis backplane: this instance's connections to the shared log.
pub(crate) struct Backplane {
    url: RedisUrl,
    stream: String,
    counter: String,
    lease: String,
    /// This instance's name in the lease.
    holder: String,
    history: usize,
    maxlen: String,
    registry: Registry,
    reader: Link<ReadTag>,
    writer: Link<WriteTag>,
    /// The last id delivered to the hub; `None` until the stream's start
    /// is known.
    last_id: Option<u64>,
    /// The stream's newest id, as last measured.
    top: u64,
    /// The lease is ours until this instant.
    ticker_until: Option<Instant>,
    /// Whether the log last said this instance holds the lease (each
    /// change is said once).
    lease_said: bool,
    /// `--redis-timeout`: how long Redis has to answer.
    timeout: Duration,
    /// Redis's clock less ours, in ms, as measured at login.
    clock_offset_ms: i64,
    /// The earliest reply check queued in the schedule, not yet come.
    reply_check: Option<Instant>,
    /// The reconnect each link has queued in the schedule, so that one
    /// retry is queued once.
    queued_retry: [Option<Instant>; 2],
    /// When the periodic renewal is next due (a renewal asked for sooner
    /// does not move it).
    next_renew: Instant,
    /// The writer has just connected: renew at once, not at the next
    /// period.
    renew_now: bool,
    reconnects: u64,
    /// Said once: Redis cannot be reached.
    said_down: bool,
    ready: VecDeque<Outcome>,
    replays: replay::Reads,
    /// Where replies are read into.
    scratch: Vec<u8>,
}

impl Backplane {
    /// A backplane on `url` and stream `key`, whose connections will
    /// register in `registry` under `tokens`; nothing is connected yet.
    pub(crate) fn new(
        url: RedisUrl,
        key: &str,
        history: usize,
        registry: Registry,
        tokens: (Token, Token),
        timeout: Duration,
    ) -> Backplane {
        let now = Instant::now();
        let random: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(8)
            .map(char::from)
            .collect();
        Backplane {
            url,
            stream: key.to_owned(),
            counter: format!("{key}:id"),
            lease: format!("{key}:ticker"),
            holder: format!("{}-{}", std::process::id(), random),
            history,
            maxlen: (history.max(1) * KEEP_PER_HISTORY).to_string(),
            registry,
            reader: Link::new("reader", tokens.0, timeout, now),
            writer: Link::new("writer", tokens.1, timeout, now),
            last_id: None,
            top: 0,
            ticker_until: None,
            lease_said: false,
            timeout,
            clock_offset_ms: 0,
            reply_check: None,
            queued_retry: [None; 2],
            next_renew: now,
            renew_now: false,
            reconnects: 0,
            said_down: false,
            ready: VecDeque::new(),
            replays: replay::Reads::default(),
            scratch: vec![0; 64 * 1024],
        }
    }

    /// What an upgrade carries: the last id delivered, and the lease with
    /// the time it is still ours.
    pub(crate) fn carry(&self, now: Instant) -> BackplaneRow {
        BackplaneRow {
            last_id: self.last_id,
            holder: self.holder.clone(),
            lease_left_ms: (self.ticker_until)
                .filter(|&until| until > now)
                .map(|until| (until - now).as_millis() as u64),
        }
    }

    /// Whether an upgrade may hand over now: the ticker lease, if this
    /// instance holds it, has at least [`LEASE_FOR_SWAP`] left (it was
    /// renewed recently), so that the new code renews it in time.
    pub(crate) fn may_hand_over(&self, now: Instant) -> bool {
        self.ticker_until
            .is_none_or(|until| until >= now + LEASE_FOR_SWAP)
    }

    /// Goes on where the old code of an upgrade stopped: the log is
    /// followed from the last id it delivered (no history read again, no
    /// new start of the sequence), and the lease is renewed under its name.
    pub(crate) fn resume(&mut self, row: &BackplaneRow, now: Instant) {
        self.last_id = row.last_id;
        self.top = self.top.max(row.last_id.unwrap_or(0));
        self.holder.clone_from(&row.holder);
        self.ticker_until = row.lease_left_ms.map(|ms| now + Duration::from_millis(ms));
        self.lease_said = self.ticker_until.is_some();
    }

    /// Queues the first connection attempts and the first lease renewal.
    pub(crate) fn start(&self, timers: &mut dyn SourceTimers) {
        let now = Instant::now();
        timers.queue(now, SourceTimer::Reconnect);
        timers.queue(now, SourceTimer::Renew);
    }

    /// What `/metrics`, the dashboard and `/healthz` show.
    pub(crate) fn status(&self, now: Instant) -> Status {
        Status {
            connected: self.reader.is_answering()
                && self.writer.is_answering()
                && self.last_id.is_some(),
            reconnects: self.reconnects,
            lag: self.top.saturating_sub(self.last_id.unwrap_or(self.top)),
            ticker: self.is_ticker(now),
        }
    }

    fn is_ticker(&self, now: Instant) -> bool {
        self.ticker_until.is_some_and(|until| now < until)
    }

    /// What the seam asks: an append, or a replay (a backplane has no
    /// whole-server metrics to give).
    pub(crate) fn ask(&mut self, ask: Ask, ticket: Option<Ticket>, timers: &mut dyn SourceTimers) {
        match (ask, ticket) {
            (Ask::Publish(draft), ticket) => self.publish(draft, ticket),
            (Ask::Replay { after, until }, Some(ticket)) => self.ask_replay(ticket, after, until),
            (ask, _) => warn!("redis: cannot answer {ask:?}"),
        }
        self.pump();
        self.plan(timers);
    }

    /// Asks for `draft` to be appended. A tick is dropped unless this
    /// instance holds the lease; a chat message while Redis is away is
    /// refused (`503`).
    fn publish(&mut self, draft: Draft, ticket: Option<Ticket>) {
        let now = Instant::now();
        let kind = draft.kind;
        if kind == Kind::Tick && !self.is_ticker(now) {
            trace!("redis: not the ticker: no tick here");
            return;
        }
        if !self.writer.is_answering() || self.last_id.is_none() {
            if let Some(ticket) = ticket {
                self.refuse(ticket);
            }
            return;
        }
        let (kind_field, holder) = match kind {
            Kind::Tick => ("t", self.holder.as_str()),
            Kind::Message if draft.envelope.is_empty() => ("m", ""),
            Kind::Message => ("M", ""),
            Kind::Update => ("u", ""),
        };
        // A chat message in a room and a Mercure update carry their
        // envelope (topics, private, id, type, retry) with the data, as
        // JSON (`replies::entries` reads it back).
        let data = match kind_field {
            "M" | "u" => serde_json::json!({ "d": draft.data, "e": draft.envelope }).to_string(),
            _ => draft.data,
        };
        // By Redis's own clock, the append must run within half the reply
        // timeout, or never: past the timeout the poster has been answered
        // 503, and a Redis that was frozen must not publish it when it
        // wakes (the half is the margin for the clock offset's error and
        // the reply's way back).
        let half = self.timeout.as_millis() as i64 / 2;
        let deadline = (now_ms() as i64 + self.clock_offset_ms + half).to_string();
        let args = [
            "EVAL",
            scripts::APPEND,
            "3",
            &self.counter,
            &self.stream,
            &self.lease,
            kind_field,
            &data,
            &self.maxlen,
            holder,
            &now_ms().to_string(),
            &deadline,
        ];
        self.writer.send(&args, WriteTag::Append { ticket, kind });
    }

    /// Asks for the events after `after` up to `until` (what the ring no
    /// longer holds), for the connection with `ticket`.
    fn ask_replay(&mut self, ticket: Ticket, after: u64, until: u64) {
        if !self.writer.is_up() {
            self.ready.push_back(Outcome::Answer {
                ticket,
                answer: Answer::Replay(Replay::unavailable()),
            });
            return;
        }
        if let Some(replay) = self.replays.covered_by_last(after, until) {
            self.ready.push_back(Outcome::Answer {
                ticket,
                answer: Answer::Replay(replay),
            });
            return;
        }
        if let Some((read, from, to)) = self.replays.join(ticket, after, until) {
            let (from, to) = (format!("{from}-0"), format!("{to}-0"));
            self.writer.send(
                &["XRANGE", self.stream.as_str(), &from, &to],
                WriteTag::Replay(read),
            );
        }
    }

    /// The next outcome, in stream order.
    pub(crate) fn next(&mut self) -> Option<Outcome> {
        self.ready.pop_front()
    }

    /// A deadline this backplane queued came: connect what is down and
    /// due, or renew the lease (and queue the next renewal).
    pub(crate) fn on_time(
        &mut self,
        timer: SourceTimer,
        now: Instant,
        timers: &mut dyn SourceTimers,
    ) {
        match timer {
            SourceTimer::Reconnect => self.reconnect(now),
            SourceTimer::Replies => {
                self.reply_check = None;
                if let Some(why) = self.reader.overdue(now) {
                    let happened = self.reader.fail(why);
                    self.on_reader(happened);
                }
                if let Some(why) = self.writer.overdue(now) {
                    let happened = self.writer.fail(why);
                    self.on_writer(happened);
                }
            }
            SourceTimer::Renew => {
                if now >= self.next_renew {
                    self.next_renew = now + RENEW;
                    timers.queue(self.next_renew, SourceTimer::Renew);
                }
                // A lease not renewed in time lapses here, and is said so.
                self.say_lease(now);
                if self.writer.is_up() {
                    let ttl = LEASE_TTL.as_millis().to_string();
                    let args = ["EVAL", scripts::LEASE, "1", &self.lease, &self.holder, &ttl];
                    self.writer.send(&args, WriteTag::Lease { sent: now });
                    let top = ["XREVRANGE", self.stream.as_str(), "+", "-", "COUNT", "1"];
                    self.writer.send(&top, WriteTag::Top);
                }
            }
        }
        self.pump();
        self.plan(timers);
    }

    /// Connects each link that is down and due.
    fn reconnect(&mut self, now: Instant) {
        let due = |state| matches!(state, State::Down { retry_at } if now >= retry_at);
        // A name is looked up only when a connection is to be made.
        if !due(self.reader.state()) && !due(self.writer.state()) {
            return;
        }
        let addr = self.address();
        for result in [
            due(self.reader.state()).then(|| self.reader.connect_to(&self.registry, addr, now)),
            due(self.writer.state()).then(|| self.writer.connect_to(&self.registry, addr, now)),
        ]
        .into_iter()
        .flatten()
        {
            if let Err(why) = result {
                self.down(&why);
            }
        }
    }

    /// Queues a reconnect for each link that went down since the last one
    /// was queued: its retry instant is an entry in the loop's schedule.
    fn plan(&mut self, timers: &mut dyn SourceTimers) {
        if std::mem::take(&mut self.renew_now) {
            timers.queue(Instant::now(), SourceTimer::Renew);
        }
        // The next reply or connection Redis owes: looked at when it is due.
        let owed = [self.reader.deadline(), self.writer.deadline()];
        if let Some(due) = owed.into_iter().flatten().min()
            && self.reply_check.is_none_or(|queued| due < queued)
        {
            self.reply_check = Some(due);
            timers.queue(due, SourceTimer::Replies);
        }
        for (i, state) in [self.reader.state(), self.writer.state()]
            .into_iter()
            .enumerate()
        {
            if let State::Down { retry_at } = state
                && self.queued_retry[i] != Some(retry_at)
            {
                self.queued_retry[i] = Some(retry_at);
                timers.queue(retry_at, SourceTimer::Reconnect);
            }
        }
    }

    /// Redis's address, resolved now (a name is looked up at each attempt).
    fn address(&self) -> Option<SocketAddr> {
        (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .ok()?
            .next()
    }

    /// A socket is ready: drive both links until nothing more happens.
    pub(crate) fn on_ready(&mut self, timers: &mut dyn SourceTimers) {
        self.pump();
        self.plan(timers);
    }

    /// Drives both links and acts on what they say, until they are quiet.
    fn pump(&mut self) {
        for _ in 0..64 {
            let mut quiet = true;
            // What follows a reply that dropped its link is the old
            // connection's: it is left.
            for event in self.reader.drive(&mut self.scratch) {
                quiet = false;
                self.on_reader(event);
                if matches!(self.reader.state(), State::Down { .. }) {
                    break;
                }
            }
            for event in self.writer.drive(&mut self.scratch) {
                quiet = false;
                self.on_writer(event);
                if matches!(self.writer.state(), State::Down { .. }) {
                    break;
                }
            }
            if quiet {
                break;
            }
        }
    }

    /// Logs in (`AUTH`, `SELECT`) on a link that just connected.
    fn login<T>(url: &RedisUrl, link: &mut Link<T>, tag: impl Fn() -> T) {
        if let Some(password) = &url.password {
            match &url.user {
                Some(user) => link.send(&["AUTH", user, password], tag()),
                None => link.send(&["AUTH", password.as_str()], tag()),
            }
        }
        if url.db != 0 {
            link.send(&["SELECT", &url.db.to_string()], tag());
        }
    }

    /// A chat message that cannot be appended now.
    fn refuse(&mut self, ticket: Ticket) {
        let wait = rand::rng().random_range(1..=5);
        self.ready.push_back(Outcome::Answer {
            ticket,
            answer: Answer::Refused(Why::Unavailable, wait),
        });
    }
}

/// The time in milliseconds: where a new counter starts.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
