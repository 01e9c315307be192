//! # sse-mio
//!
//! A small Server-Sent Events server on a hand-rolled HTTP/1.1 event loop:
//! one thread, one `mio::Poll`, no async runtime. It serves files from
//! `www/` and, on `/sse`, a stream that receives the same random string
//! every second, and the chat messages clients post to `/messages`.
//!
//! ## Reading order
//! Follow a byte from `accept` to the browser, top layer first (each module
//! imports only the ones below it; ARCHITECTURE.md draws the graph):
//! - `supervisor`: with `--workers N`, the process that holds the port,
//!   starts the workers and sequences every event for them.
//! - `server`: the loop. Poll, dispatch by token, the end of each batch,
//!   the schedule's timers, the tick, the drain, and the one `close`.
//! - `admission`: the listener; accepting, limits, socket options.
//! - `shutdown`: the stop flag, signals, the drain's state, the summary.
//! - `hub`: every event's way from the source: encoded once into the
//!   ring, fanned out to the streams a slice at a time.
//! - `connection`: one connection, and its switch from HTTP to streaming.
//! - `exchange`: the HTTP half: requests, a chat body, responses, lingering.
//! - `routes`: which response a request gets (a `Route`).
//! - `shared`: what the loop lends a connection while driving it.
//! - `source`: where events get their ids, the asynchronous five-call seam:
//!   this process (`Local`), a worker's supervisor (`Upstream`), or a
//!   Redis stream shared by several instances (`Backplane`).
//! - `handover`: SIGHUP's upgrade in place: the table the old code hands
//!   the new one (listeners, streams, rings, subscriptions), the probe,
//!   the exec.
//! - `ipc`, `peer`: the supervisor-worker protocol; what it shares with
//!   the Redis link (a send queue, `ProtocolError`).
//! - `ring`: the ring of recent frames, cursors, and flushing a stream.
//! - `response`: a response ready to write, and the builders routes share.
//! - `static_files`, `chat`, `metrics`: files under `www/`, chat messages
//!   and flood control, `/metrics` and the dashboard frame.
//! - `sse`: the `text/event-stream` format, every byte of it.
//! - `http`: httparse glue, `Refusal`, the chunked decoder, heads, `Date`.
//! - `event`: what an event is, and the seam's words (`Ask`, `Answer`,
//!   `Outcome`, ...).
//! - `schedule`, `counters`, `limits`, `config`: the one timer queue, the
//!   counters, OS limits, the flags.
//! - [`event_parser`]: the client side (a WHATWG event-stream parser), for
//!   `sse-load`, the tests, and anyone writing a client.
//!
//! ## The life of a connection
//! The listener becomes readable; admission accepts until `WouldBlock` and
//! registers each socket for readable and writable edges. Its first
//! readable event makes it read into a bounded buffer until httparse finds
//! a complete head; `routes::route` says what it gets. A file is answered
//! from `www/` and the connection goes back to reading (keep-alive) or
//! closes. A chat post's body is read, its event is asked of the source, and
//! the `202 {"id": N}` waits until the event has come back and gone out to
//! every caught-up stream (with `--redis`, until the shared log has it). A `GET /sse` gets
//! the stream head, then the connection drops its HTTP state and keeps only
//! a cursor into the ring: each event is encoded once into the ring and
//! written to every caught-up stream; a stream whose socket is full waits
//! for its writable event and catches up from the ring. It ends when the
//! client resets, falls off the ring or stalls, or when the server shuts
//! down: on SIGINT/SIGTERM every stream gets the frames it is owed and a
//! goodbye with a jittered `retry:`. On SIGHUP the same process execs the
//! new binary and every stream goes on, its socket carried across.
//!
//! ## The library
//! [`Server`], [`Config`], [`Handle`] and [`Stopped`] run a server
//! in-process (the integration tests do); [`event_parser`] reads a stream;
//! [`raise_open_files_limit`] and [`parse_duration`] serve clients such as
//! `sse-load`. Everything else is private. The `internals` feature opens a
//! few insides to the fuzz targets and benchmarks; it is not an API.

mod admission;
mod auth;
mod chat;
mod config;
mod connection;
mod counters;
mod event;
pub mod event_parser;
mod exchange;
mod handover;
mod http;
mod hub;
mod ipc;
mod limits;
mod mercure;
mod metrics;
mod peer;
mod response;
mod ring;
mod routes;
mod schedule;
mod server;
mod shared;
mod shutdown;
mod source;
mod sse;
mod static_files;
mod supervisor;
mod topics;

pub use config::{Config, parse_duration};
pub use handover::answer_probe;
pub use limits::{NofileLimit, open_files_limit, raise_open_files_limit};
pub use server::Server;
pub use shutdown::{Handle, Stopped};
pub use supervisor::Supervisor;

/// The server's insides that the fuzz targets and the benchmarks reach.
/// Behind the `internals` feature; not an API, and not stable.
#[cfg(feature = "internals")]
pub mod internals;
