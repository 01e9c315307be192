//! Test support: a server started in-process on port 0, and small blocking
//! clients that read with deadlines (never sleeps) and check exact bytes.

#![allow(dead_code)]

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod mercure;

use clap::Parser;
use sse_mio::Stopped;
use sse_mio::{Config, Handle, Server};

/// How long any single read in a test may wait before the test fails.
pub const READ_DEADLINE: Duration = Duration::from_secs(10);

/// A server running on its own thread, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    handle: Handle,
    thread: Option<JoinHandle<Stopped>>,
}

/// The project's www directory.
pub fn project_www() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("www")
}

impl TestServer {
    /// Starts a server on 127.0.0.1:0 serving the project's www/ with the
    /// given extra flags.
    pub fn start(flags: &[&str]) -> TestServer {
        let www = project_www();
        TestServer::start_in(&www, flags)
    }

    /// Same, serving `www`.
    pub fn start_in(www: &Path, flags: &[&str]) -> TestServer {
        let _ = env_logger::builder().is_test(true).try_init();
        let www = www.to_str().expect("utf-8 path");
        let mut args = vec!["sse-mio", "--addr", "127.0.0.1:0", "--www", www];
        args.extend_from_slice(flags);
        let config = Config::try_parse_from(args).expect("valid flags");
        let mut server = Server::bind(&config).expect("server binds");
        let addr = server.local_addr();
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run().expect("event loop runs"));
        TestServer {
            addr,
            handle,
            thread: Some(thread),
        }
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }

    /// Opens a stream on /sse and reads past its head and preamble.
    pub fn sse(&self) -> SseClient {
        SseClient::open(self.addr, &[])
    }

    /// One GET on a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        let mut stream = self.connect();
        send(
            &mut stream,
            &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"),
        );
        read_response(&mut stream, false)
    }
}

impl TestServer {
    /// Starts a graceful shutdown (as SIGTERM does) without waiting for it.
    pub fn begin_shutdown(&self) {
        self.handle.shutdown();
    }

    /// Waits for the server's loop to end and says how it ended.
    pub fn join(mut self) -> Stopped {
        let thread = self.thread.take().expect("running");
        thread.join().expect("server thread")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.stop_now();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(READ_DEADLINE)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

pub fn send(stream: &mut TcpStream, text: &str) {
    stream.write_all(text.as_bytes()).expect("send");
}

/// POSTs `json` to `/messages` on a new connection and reads the answer.
pub fn post_json_to(addr: SocketAddr, json: &str) -> Response {
    let mut stream = connect(addr);
    send(
        &mut stream,
        &format!(
            "POST /messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        ),
    );
    read_response(&mut stream, false)
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of a header (case-insensitive name), if present once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut found = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = found.next().map(|(_, v)| v.as_str());
        assert!(found.next().is_none(), "header {name} appears twice");
        first
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response head byte by byte (so nothing after it is consumed),
/// then its body by `Content-Length` unless `no_body` (HEAD, 304).
pub fn read_response(stream: &mut TcpStream, no_body: bool) -> Response {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => panic!(
                "connection closed inside a response head: {:?}",
                String::from_utf8_lossy(&head)
            ),
            Err(e) => panic!(
                "reading a response head: {e} after {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
        assert!(head.len() < 64 * 1024, "response head too long");
    }
    let head = String::from_utf8(head).expect("ascii head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(
        status_line.starts_with("HTTP/1.1 "),
        "status line {status_line:?}"
    );
    let status: u16 = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(": ").expect("header line");
            (name.to_owned(), value.to_owned())
        })
        .collect();
    let mut response = Response {
        status,
        head: head.clone(),
        headers,
        body: Vec::new(),
    };
    if !no_body && status != 304 {
        let length: usize = response
            .header("Content-Length")
            .expect("Content-Length")
            .parse()
            .unwrap();
        response.body = vec![0; length];
        stream.read_exact(&mut response.body).expect("body");
    }
    response
}

/// Reads until the server closes the connection; returns what came.
/// A reset after the close counts as a close.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!(
                "waiting for the server to close: {e} after {:?}",
                start.elapsed()
            ),
        }
    }
}

/// Asserts the server closes the connection with nothing more to say.
pub fn assert_closed(stream: &mut TcpStream) {
    let rest = read_to_close(stream);
    assert!(
        rest.is_empty(),
        "unexpected bytes before close: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// One parsed server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
}

/// A blocking `/sse` client with a small line parser (LF line ends, which is
/// what this server sends; comments are collected). Events without data
/// are not dispatched, as in `EventSource`.
pub struct SseClient {
    pub stream: TcpStream,
    pub response: Response,
    buf: Vec<u8>,
    /// The `retry:` value seen so far.
    pub retry: Option<u64>,
    /// Comment lines seen so far, without the colon.
    pub comments: Vec<String>,
}

impl SseClient {
    /// GET /sse with extra header lines, then read the head.
    pub fn open(addr: SocketAddr, extra_headers: &[&str]) -> SseClient {
        SseClient::open_path(addr, "/sse", extra_headers)
    }

    /// GET `path` (an event stream) with extra header lines, then read the head.
    pub fn open_path(addr: SocketAddr, path: &str, extra_headers: &[&str]) -> SseClient {
        let mut stream = connect(addr);
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n");
        for header in extra_headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        send(&mut stream, &request);
        let response = read_response(&mut stream, true);
        assert_eq!(response.status, 200, "{}", response.head);
        SseClient {
            stream,
            response,
            buf: Vec::new(),
            retry: None,
            comments: Vec::new(),
        }
    }

    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8(line[..i].to_vec()).expect("utf-8 stream"));
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading the event stream: {e}"),
            }
        }
    }

    /// Reads the stream's opening notice (`retry:` and the `: connected`
    /// comment, which ends it), without waiting for an event.
    pub fn preamble(&mut self) {
        while let Some(line) = self.line() {
            if let Some(comment) = line.strip_prefix(':') {
                self.comments.push(comment.trim_start().to_owned());
                return;
            } else if let Some(retry) = line.strip_prefix("retry: ") {
                self.retry = retry.parse().ok();
            }
        }
        panic!("the stream ended in its preamble");
    }

    /// The next event with data, or `None` when the stream ends.
    pub fn next_event(&mut self) -> Option<Event> {
        let mut event = Event::default();
        let mut has_data = false;
        loop {
            let line = self.line()?;
            if line.is_empty() {
                if has_data {
                    return Some(event);
                }
                event = Event::default();
                continue;
            }
            if let Some(comment) = line.strip_prefix(':') {
                self.comments.push(comment.trim_start().to_owned());
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "data" => {
                    if has_data {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                    has_data = true;
                }
                "id" => event.id = Some(value.to_owned()),
                "event" => event.event = Some(value.to_owned()),
                "retry" => {
                    self.retry = value.parse().ok();
                    event.retry = self.retry;
                }
                other => panic!("unexpected field {other:?}"),
            }
        }
    }

    /// Reads `n` events and asserts each id follows the one before,
    /// starting right after `after`; returns the last id.
    pub fn consecutive_ids(&mut self, after: u64, n: usize) -> u64 {
        let mut previous = after;
        for _ in 0..n {
            let id = self.next_id();
            assert_eq!(id, previous + 1, "an id was missed or repeated");
            previous = id;
        }
        previous
    }

    /// The worker a stream's opening comment names (`--workers`).
    pub fn worker(&self) -> u32 {
        self.comments
            .iter()
            .find_map(|c| c.strip_prefix("connected to worker "))
            .unwrap_or_else(|| panic!("no worker in {:?}", self.comments))
            .parse()
            .expect("a worker's number")
    }

    /// The next event's id as a number.
    pub fn next_id(&mut self) -> u64 {
        let event = self.next_event().expect("stream ended");
        event
            .id
            .expect("event without id")
            .parse()
            .expect("numeric id")
    }
}

/// A client that asks for /sse and then never reads: a tiny receive
/// buffer, so the server's socket fills after a few kilobytes.
pub fn stalled_client(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(READ_DEADLINE)).unwrap();
    send(&mut stream, "GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
    stream
}

/// Reads everything a stalled client was sent until the server closed it,
/// and returns the ids of the complete frames (a close may cut the last
/// one short; a client drops such an event). Asserts they are consecutive.
pub fn ids_until_close(stream: &mut TcpStream) -> Vec<u64> {
    let rest = read_to_close(stream);
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
    let complete = &text[..text.rfind("\n\n").unwrap()];
    let ids: Vec<u64> = complete
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|id| id.parse().unwrap())
        .collect();
    assert!(!ids.is_empty());
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "frames in order, none skipped"
    );
    ids
}

/// How long a child process's log may stay silent while a test waits for
/// a line.
pub const LOG_DEADLINE: Duration = Duration::from_secs(20);

/// Waits for `child` to exit, at most `limit`. Past it, the child is killed
/// through its handle (not reaped yet, so its pid is still its own) and the
/// test fails.
pub fn wait_or_kill(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `command` to its end, at most `limit`, and collects its output
/// (read on threads, so a full pipe never blocks it). Its stdin is the
/// caller's choice (by default, inherited).
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let what = format!("{:?}", command.get_program());
    let status = wait_or_kill(&mut child, limit, &what);
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// The built `sse-mio` binary as a child process on port 0, killed when
/// dropped. Its log (stderr) is read line by line on a thread, to learn
/// the port and to wait (with a deadline) for what it says.
pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    /// Everything read from stderr so far.
    pub log: String,
}

impl ChildServer {
    /// Starts the binary with `--addr 127.0.0.1:0 --www <project www>` and
    /// `args`; `configure` may change the command (limits, environment).
    pub fn spawn(args: &[&str], configure: impl FnOnce(&mut Command)) -> ChildServer {
        let www = project_www();
        let www = www.to_str().expect("utf-8 path");
        ChildServer::spawn_with(&[&["--www", www], args].concat(), configure)
    }

    /// Starts the binary with `args` alone (no `--www`), and `--addr
    /// 127.0.0.1:0` unless `args` say where.
    pub fn spawn_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> ChildServer {
        ChildServer::spawn_program(env!("CARGO_BIN_EXE_sse-mio").as_ref(), args, configure)
    }

    /// As [`spawn_with`](Self::spawn_with), with the binary at `program`
    /// (a copy the test may replace or delete).
    pub fn spawn_program(
        program: &Path,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> ChildServer {
        let mut command = Command::new(program);
        if !args.contains(&"--addr") {
            command.args(["--addr", "127.0.0.1:0"]);
        }
        command
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("spawn sse-mio");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let mut server = ChildServer {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            lines,
            log: String::new(),
        };
        let line = server.read_log_until("http://");
        let rest = line.split("http://").nth(1).expect("url");
        server.addr = rest
            .split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .expect("address in the log");
        server
    }

    /// Reads log lines until one contains `needle`, and returns it. Fails
    /// if the server exits first, or says nothing of it for
    /// [`LOG_DEADLINE`].
    pub fn read_log_until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + LOG_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "the server did not say {needle:?} within {LOG_DEADLINE:?}:\n{}",
                    self.log
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("server exited before saying {needle:?}:\n{}", self.log)
                }
            };
            self.log.push_str(&line);
            self.log.push('\n');
            if line.contains(needle) {
                return line;
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to the server (still running: not reaped).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child, which has not been waited for.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Waits for the server to exit (killing it if it takes longer than
    /// `limit`, which fails the test), then reads the rest of its log.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let status = wait_or_kill(&mut self.child, limit, "the server");
        let deadline = Instant::now() + LOG_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push_str(&line);
                    self.log.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return status,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the server's log did not end:\n{}", self.log)
                }
            }
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Asks `check` every 20 ms until it gives an answer, for a state that no
/// event announces (a gauge refreshed four times a second, a slot freed by
/// a close); fails with `what` after `limit`.
pub fn poll_until<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(answer) = check() {
            return answer;
        }
        assert!(Instant::now() < deadline, "{what} (waited {limit:?})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of a sample line (`name{labels} value`) in a Prometheus
/// exposition.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// Runs `promtool check metrics` on the exposition. Without promtool the
/// check is skipped loudly, except in CI, where `.ci/run` installs it.
pub fn promtool_check(text: &str) {
    let mut input = tempfile::NamedTempFile::new().unwrap();
    input.write_all(text.as_bytes()).unwrap();
    let mut command = Command::new("promtool");
    command
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(input.path()).unwrap());
    let probe = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match probe {
        Ok(mut child) => {
            wait_or_kill(&mut child, Duration::from_secs(30), "promtool --version");
        }
        Err(e) => {
            return skip_loudly(&format!(
                "promtool not found ({e}): no `promtool check metrics` (apt-get install prometheus)"
            ));
        }
    }
    let output = output_within(&mut command, Duration::from_secs(30));
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A test that cannot run here (a tool is missing): under `CI=true` it
/// fails; otherwise it says so on the terminal (written straight to stderr,
/// which the test harness does not capture, unlike `eprintln!`).
pub fn skip_loudly(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "cannot run under CI=true: {why}"
    );
    let banner = "=".repeat(72);
    let _ = writeln!(
        io::stderr(),
        "\n{banner}\nSKIPPED: {why}\n(.ci/run installs what is needed; with CI=true this fails)\n{banner}"
    );
}
