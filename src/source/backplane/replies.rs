//! What the backplane does with each reply from Redis: the reader's
//! (the stream's start, the events it follows) and the writer's (appended
//! ids, the clock, the lease, replays), and a lost connection; and what it
//! says of them, once per change (lost, reached again, the lease taken or
//! given up).

use std::time::Instant;

use log::{debug, info, trace, warn};

use super::link;
use super::resp::Reply;
use super::{
    Backplane, LEASE_TTL, READ_BLOCK, READ_COUNT, RENEW, ReadTag, WriteTag, now_ms, scripts,
};
use crate::event::{Answer, Envelope, Event, Kind, Outcome};

impl Backplane {
    pub(super) fn on_reader(&mut self, event: link::Happened<ReadTag>) {
        if matches!(event, link::Happened::Reply(..)) {
            // Redis answers: it is back, if it had been away.
            self.up_again();
        }
        match event {
            link::Happened::Connected => {
                Self::login(&self.url, &mut self.reader, || ReadTag::Login);
                match self.last_id {
                    // Back after a loss: follow on from the last id delivered.
                    Some(_) => self.read_on(),
                    None => {
                        let now = now_ms().to_string();
                        let args = [
                            "EVAL",
                            scripts::INIT,
                            "2",
                            &self.counter,
                            &self.stream,
                            &now,
                        ];
                        self.reader.send(&args, ReadTag::Init);
                        let count = self.history.max(1).to_string();
                        let args = ["XREVRANGE", self.stream.as_str(), "+", "-", "COUNT", &count];
                        self.reader.send(&args, ReadTag::History);
                    }
                }
            }
            link::Happened::Reply(ReadTag::Login, reply) => self.check_login(reply, "reader"),
            link::Happened::Reply(ReadTag::Init, reply) => {
                let last = reply.text().and_then(|t| t.parse::<u64>().ok());
                match (last, reply) {
                    (Some(last), _) => self.top = self.top.max(last),
                    (None, reply) => warn!("redis: the stream's counter: {reply:?}"),
                }
            }
            link::Happened::Reply(ReadTag::History, Reply::Error(e)) => {
                warn!("redis: cannot read the stream {}: {e}", self.stream);
                self.reader.drop_socket(Instant::now());
            }
            link::Happened::Reply(ReadTag::History, reply) => {
                let mut entries = entries(&reply);
                entries.reverse();
                let first_id = entries.first().map_or(self.top + 1, |e| e.id);
                debug!(
                    "redis: {} of the stream's recent events into the ring, from id {first_id}",
                    entries.len()
                );
                self.ready.push_back(Outcome::Start { first_id });
                let last = entries.last().map_or(first_id - 1, |e| e.id);
                for event in entries {
                    self.ready.push_back(Outcome::Published {
                        event,
                        ticket: None,
                    });
                }
                self.last_id = Some(last);
                self.top = self.top.max(last);
                info!("redis: following {} from id {}", self.stream, last + 1);
                self.read_on();
            }
            link::Happened::Reply(ReadTag::Read, Reply::Error(e)) => {
                // Not at once again: after the backoff, on a new connection.
                warn!("redis: cannot follow the stream {}: {e}", self.stream);
                self.reader.drop_socket(Instant::now());
            }
            link::Happened::Reply(ReadTag::Read, reply) => {
                for stream in reply.items() {
                    for event in entries(stream.items().get(1).unwrap_or(&Reply::Array(None))) {
                        let last = self.last_id.unwrap_or(0);
                        if event.id <= last {
                            continue; // never deliver an id twice
                        }
                        self.last_id = Some(event.id);
                        self.top = self.top.max(event.id);
                        self.ready.push_back(Outcome::Published {
                            event,
                            ticket: None,
                        });
                    }
                }
                self.read_on();
            }
            link::Happened::Lost(_, why, was_up) => self.lost("reader", &why, was_up),
        }
    }

    /// Asks for what follows the last id delivered (blocking in Redis, not here).
    fn read_on(&mut self) {
        let Some(last) = self.last_id else {
            return;
        };
        let from = format!("{last}-0");
        let block_ms = READ_BLOCK.as_millis().to_string();
        let args = [
            "XREAD",
            "COUNT",
            READ_COUNT,
            "BLOCK",
            &block_ms,
            "STREAMS",
            &self.stream,
            &from,
        ];
        self.reader.send_blocking(&args, ReadTag::Read, READ_BLOCK);
    }

    pub(super) fn on_writer(&mut self, event: link::Happened<WriteTag>) {
        if matches!(event, link::Happened::Reply(..)) {
            self.up_again();
        }
        match event {
            link::Happened::Connected => {
                Self::login(&self.url, &mut self.writer, || WriteTag::Login);
                let (sent, sent_ms) = (Instant::now(), now_ms());
                self.writer
                    .send(&["TIME"], WriteTag::Time { sent, sent_ms });
                self.renew_now = true;
            }
            link::Happened::Reply(WriteTag::Time { sent, sent_ms }, reply) => {
                match redis_ms(&reply) {
                    Some(redis_ms) => {
                        // Redis read its clock about halfway through the
                        // round trip.
                        let halfway = sent_ms + sent.elapsed().as_millis() as u64 / 2;
                        self.clock_offset_ms = redis_ms as i64 - halfway as i64;
                        debug!("redis: its clock is {} ms off ours", self.clock_offset_ms);
                    }
                    None => warn!("redis: TIME answered {reply:?}"),
                }
            }
            link::Happened::Reply(WriteTag::Login, reply) => self.check_login(reply, "writer"),
            link::Happened::Reply(WriteTag::Append { ticket, kind }, reply) => match reply {
                Reply::Integer(id) => {
                    trace!("redis: appended {kind:?} as {id}");
                    if let Some(ticket) = ticket {
                        self.ready.push_back(Outcome::Answer {
                            ticket,
                            answer: Answer::Id(id as u64),
                        });
                    }
                }
                Reply::Error(e) if e.starts_with("NOTTICKER") => {
                    debug!("redis: the lease moved on: this tick is not appended");
                    self.ticker_until = None;
                    self.say_lease(Instant::now());
                }
                Reply::Error(e) if e.starts_with("LATE") => {
                    // Redis ran it past its deadline (it was frozen, or
                    // far behind): not appended, and the poster is told so.
                    debug!("redis: a {kind:?} came late and was not appended");
                    if let Some(ticket) = ticket {
                        self.refuse(ticket);
                    }
                }
                other => {
                    warn!("redis: append failed: {other:?}");
                    if let Some(ticket) = ticket {
                        self.refuse(ticket);
                    }
                }
            },
            link::Happened::Reply(WriteTag::Lease { sent }, reply) => {
                let held = reply == Reply::Integer(1);
                // Counted from when it was asked, with a margin: never
                // believe the lease ours longer than Redis keeps it (a
                // reply that comes late may say it lapsed already).
                self.ticker_until = held.then(|| sent + LEASE_TTL - RENEW / 2);
                self.say_lease(Instant::now());
            }
            link::Happened::Reply(WriteTag::Top, reply) => {
                if let Some(top) = entries(&reply).first() {
                    self.top = self.top.max(top.id);
                }
            }
            link::Happened::Reply(WriteTag::Replay(read), reply) => {
                let answers = self.replays.answer(read, &entries(&reply));
                for (ticket, replay) in answers {
                    self.ready.push_back(Outcome::Answer {
                        ticket,
                        answer: Answer::Replay(replay),
                    });
                }
                for (ticket, after, until) in self.replays.take_queued() {
                    self.ask_replay(ticket, after, until);
                }
            }
            link::Happened::Lost(waiting, why, was_up) => {
                for tag in waiting {
                    match tag {
                        WriteTag::Append {
                            ticket: Some(ticket),
                            ..
                        } => self.refuse(ticket),
                        WriteTag::Replay(read) => {
                            for (ticket, replay) in self.replays.fail(read) {
                                self.ready.push_back(Outcome::Answer {
                                    ticket,
                                    answer: Answer::Replay(replay),
                                });
                            }
                        }
                        _ => {}
                    }
                }
                self.ticker_until = None;
                self.say_lease(Instant::now());
                self.lost("writer", &why, was_up);
                for (ticket, after, until) in self.replays.take_queued() {
                    self.ask_replay(ticket, after, until);
                }
            }
        }
    }

    /// Redis answered on a link: say so if it had been away.
    pub(super) fn up_again(&mut self) {
        if self.said_down {
            self.said_down = false;
            info!("redis: {} reached again", self.url);
        }
    }

    /// A link failed: a lost connection is counted, and said once until
    /// Redis is reached again (both links usually go together); a failed
    /// attempt likewise.
    pub(super) fn lost(&mut self, which: &str, why: &str, was_up: bool) {
        if was_up {
            self.reconnects += 1;
            if !self.said_down {
                let most = link::BACKOFF_MAX;
                warn!("redis {which}: {why}; connecting again (backoff 100 ms to {most:?})");
                self.said_down = true;
            }
        } else {
            self.down(why);
        }
    }

    /// Says, once per change, whether this instance holds the ticker's
    /// lease (as `is_ticker` says now).
    pub(super) fn say_lease(&mut self, now: Instant) {
        let holds = self.is_ticker(now);
        if holds != self.lease_said {
            self.lease_said = holds;
            if holds {
                info!("redis: this instance holds the ticker lease: it ticks");
            } else {
                info!("redis: this instance does not hold the ticker lease: it does not tick");
            }
        }
    }

    /// Redis could not be reached: said once until it is back.
    pub(super) fn down(&mut self, why: &str) {
        if !self.said_down {
            warn!(
                "redis: {} unreachable ({why}); serving on, retrying with backoff",
                self.url
            );
            self.said_down = true;
        }
    }

    fn check_login(&mut self, reply: Reply, which: &str) {
        if let Reply::Error(e) = reply {
            // The password is in neither the reply nor this line.
            let why = format!("login refused: {e}");
            match which {
                "reader" => {
                    let event = self.reader.fail(why);
                    self.on_reader(event);
                }
                _ => {
                    let event = self.writer.fail(why);
                    self.on_writer(event);
                }
            }
        }
    }
}

/// The events in a list of stream entries (`[[id, [field, value, ...]], ...]`);
/// entries that are not sse-mio's are skipped.
fn entries(reply: &Reply) -> Vec<Event> {
    reply
        .items()
        .iter()
        .filter_map(|entry| {
            let [id, fields] = entry.items() else {
                return None;
            };
            let id = id.text()?.strip_suffix("-0")?.parse().ok()?;
            let fields = fields.items();
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|pair| pair[0].text() == Some(name))
                    .and_then(|pair| pair.get(1)?.text().map(str::to_owned))
            };
            let (kind, wrapped) = match field("k")?.as_str() {
                "t" => (Kind::Tick, false),
                "m" => (Kind::Message, false),
                "M" => (Kind::Message, true),
                "u" => (Kind::Update, true),
                _ => return None,
            };
            let data = field("d")?;
            if !wrapped {
                return Some(Event {
                    id,
                    kind,
                    data,
                    envelope: Envelope::default(),
                });
            }
            // `{"d": data, "e": envelope}`; an entry that is not is skipped.
            let mut value: serde_json::Value = serde_json::from_str(&data).ok()?;
            let envelope = serde_json::from_value(value.get_mut("e")?.take()).ok()?;
            Some(Event {
                id,
                kind,
                data: value.get("d")?.as_str()?.to_owned(),
                envelope,
            })
        })
        .collect()
}

/// Redis's `TIME` reply (`[seconds, microseconds]`) in milliseconds.
fn redis_ms(reply: &Reply) -> Option<u64> {
    let [seconds, micros] = reply.items() else {
        return None;
    };
    let seconds: u64 = seconds.text()?.parse().ok()?;
    let micros: u64 = micros.text()?.parse().ok()?;
    Some(seconds * 1000 + micros / 1000)
}
