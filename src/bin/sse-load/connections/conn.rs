//! One connection of the load: where it is in its life, what it has seen.

use std::collections::HashMap;

use mio::net::TcpStream;
use rustls::ClientConnection;
use sse_mio::event_parser::{ChunkedDecoder, EventParser};

pub(super) enum Phase {
    Connecting,
    Head,
    Streaming,
    /// The stream ended; with `--reconnect`, a new one is due (see
    /// `reconnect.rs`).
    Waiting,
}

pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) phase: Phase,
    pub(super) opened_ns: u64,
    pub(super) sent: usize,
    pub(super) head: Vec<u8>,
    pub(super) chunked: Option<ChunkedDecoder>,
    pub(super) parser: EventParser,
    /// The server said it is full (a comment before it closes).
    pub(super) turned_away: bool,
    /// The server said goodbye: it is shutting down.
    pub(super) said_goodbye: bool,
    /// The last numeric id this connection received.
    pub(super) last_id: Option<u64>,
    /// When it last received an event (ns), for the gaps between events.
    pub(super) last_event_ns: u64,
    /// Events without an id: how often each data (by its hash) has come
    /// on this connection. Only for streams that send no ids; boxed, so
    /// that it costs the others 8 bytes each, not a map's 48.
    #[allow(clippy::box_collection)]
    pub(super) seen_data: Option<Box<HashMap<u64, u32>>>,
    /// With `--reconnect`: what the stream said to wait before coming
    /// back (`retry:`), the last id to resume after (empty: none), when
    /// the stream ended (0 while it streams), and the request with
    /// `Last-Event-ID`.
    pub(super) retry_ms: u64,
    pub(super) resume_id: String,
    pub(super) ended_ns: u64,
    pub(super) request: Option<Vec<u8>>,
    /// `https://`: the TLS session the stream's bytes go through.
    pub(super) tls: Option<Box<ClientConnection>>,
    /// With `--topics`: the topic this connection follows (`t<k>`).
    pub(super) topic: Option<u32>,
}
