//! # sse-mio
//!
//! A small Server-Sent Events server on a hand-rolled HTTP/1.1 event loop:
//! one thread, one `mio::Poll`, no async runtime. It serves files from
//! `www/` and, on `/sse`, a stream that receives the same random string
//! every second.
//!
//! ## Layout
//! Read in this order to follow a byte from `accept` to the browser:
//! - [`server`]: the loop. Poll, accept, dispatch events, timers, the tick
//!   and its fan-out, and the one `close`.
//! - [`connection`]: one connection's state machine: reading a request,
//!   responding, lingering after an error, streaming.
//! - [`sse`]: frame encoding, the ring of recent frames, and the cursor a
//!   stream keeps into it; partial writes resume from the cursor.
//! - [`http`]: httparse glue, limits, and response heads.
//! - [`routes`]: which response a request gets.
//! - [`chat`]: what `POST /messages` accepts, the event it becomes, and the
//!   per-client flood control.
//! - [`static_files`]: safe path resolution under `www/`, content types,
//!   conditional requests.
//! - [`event_parser`]: the client side (a WHATWG event-stream parser and a
//!   chunked decoder), used by `sse-load` and the tests.
//! - [`metrics`]: `/metrics` (Prometheus) and the `/stats` event.
//! - [`timers`], [`limits`], [`stats`], [`config`]: the deadline queue, OS
//!   limits, counters, flags.
//!
//! ## The life of a connection
//! The listener becomes readable; `accept_all` accepts until `WouldBlock`
//! and registers each socket for readable and writable edges. Its first
//! readable event makes it read into a bounded buffer until httparse finds
//! a complete head. A file request is answered from `www/` and the
//! connection goes back to reading (keep-alive) or closes. A `GET /sse`
//! gets the stream head, then the connection drops its HTTP state and keeps
//! only a cursor into the ring: each tick appends a frame and writes it to
//! every caught-up stream; a stream whose socket is full waits for its
//! writable event and catches up from the ring. It ends when the client
//! resets, falls off the ring or stalls, or when the server shuts down: on
//! SIGINT/SIGTERM every stream gets the frames it is owed and a goodbye
//! with a jittered `retry:` (see [`server`]).

pub mod chat;
pub mod config;
pub mod connection;
pub mod event_parser;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod sse;
pub mod static_files;
pub mod stats;
pub mod timers;

pub use config::Config;
pub use server::{Handle, Server, Stopped};
