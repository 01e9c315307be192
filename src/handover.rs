//! The hand-over table of an in-place upgrade (SIGHUP), and the few system
//! calls around it: the table written to a memory file, descriptors kept
//! open across `execve`, the new program asked first (the probe), and the
//! exec itself.
//!
//! The table is everything the new code needs to be the same server: the
//! listeners and every stream's descriptor, each stream's place in the
//! ring (a stream may be in the middle of a frame: the frames travel as
//! the bytes that went out), its stamps and, on the Mercure endpoint, its
//! subscription written out by name; the rings, the sequence, the active
//! subscriptions, the counters, and a worker's channel to its supervisor
//! with the bytes of a message not yet whole. It is JSON (serde), with its
//! version first: a program reads only the version it writes, and says so
//! when asked (`--handover-probe VERSION`) before the old code execs it.
//! A no, or no answer, and the old code takes another path (see
//! `server/upgrade.rs`).
//!
//! This module knows nothing of the loop: the rows are plain data, and
//! each layer turns its own state into them and back.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::counters::Counters;

/// The table's format. Any change to a row below needs a new number:
/// the old code then takes the drain path instead of handing over a table
/// the new code would misread.
pub(crate) const VERSION: u32 = 1;

/// The environment variable that names the table's descriptor in the new
/// program (`SSE_MIO_HANDOVER=<fd>`); removed as soon as it is read, so a
/// worker started later never sees it.
pub(crate) const ENV: &str = "SSE_MIO_HANDOVER";

/// The same for a supervisor's own table ([`SupervisorTable`]).
pub(crate) const SUPERVISOR_ENV: &str = "SSE_MIO_SUPERVISOR_HANDOVER";

/// The drain path's one word to the new code, which could not read the
/// table: the id its sequence goes on from (`SSE_MIO_NEXT_ID=<n>`), so that
/// a client that got every event before the goodbye resumes with no gap
/// and no `reset`. A stable contract: any later version reads it.
pub(crate) const NEXT_ID_ENV: &str = "SSE_MIO_NEXT_ID";

/// The probe's exit status for "I read this table": anything else is a no.
const PROBE_YES: i32 = 0;
/// The probe's exit status for "not my version".
const PROBE_OTHER_VERSION: i32 = 3;

/// How long the new program has to answer the probe.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the new code needs to go on serving where the old one stops.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Table {
    /// [`VERSION`] of the code that wrote it; first, so that a reader of
    /// another version can say no before it reads the rest.
    pub(crate) version: u32,
    /// When SIGHUP came, and when the table was written (milliseconds
    /// since the Unix epoch): the new code logs how long the swap took.
    pub(crate) asked_at_ms: u64,
    pub(crate) written_at_ms: u64,
    /// The listening sockets, in the order of `--addr`'s addresses.
    pub(crate) listeners: Vec<RawFd>,
    /// The id the next event gets (a local sequencer's counter).
    pub(crate) next_id: u64,
    /// The event ring and the dashboard's.
    pub(crate) events: RingRows,
    pub(crate) dashboard: RingRows,
    pub(crate) streams: Vec<StreamRow>,
    /// The active subscriptions, by subscription topic (`--subscriptions`).
    pub(crate) active: Vec<(String, serde_json::Value)>,
    pub(crate) counters: Counters,
    /// A worker's socket to its supervisor.
    pub(crate) channel: Option<ChannelRow>,
    /// `--redis`: where the new code follows the log on from, and the
    /// ticker lease it renews under the same name.
    pub(crate) backplane: Option<BackplaneRow>,
}

/// What a supervisor (`--workers`) hands its new code: the sockets that
/// hold the port, its workers (their pids, their channels with the bytes
/// in flight), the recent events, the sequence, its counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SupervisorTable {
    pub(crate) version: u32,
    pub(crate) asked_at_ms: u64,
    /// The sockets bound (never listening) that hold the port.
    pub(crate) holders: Vec<RawFd>,
    /// A local sequencer's next id, or the backplane's place.
    pub(crate) next_id: u64,
    pub(crate) backplane: Option<BackplaneRow>,
    /// The recent events, as the IPC frames a starting worker is sent.
    pub(crate) history: Vec<u8>,
    pub(crate) workers: Vec<WorkerRow>,
    /// What workers that exited had counted, and the other counts.
    pub(crate) departed: Counters,
    pub(crate) start_failures: u64,
    pub(crate) sequenced: u64,
    pub(crate) messages: u64,
}

/// One worker's place: its process (none while a restart waits) and its
/// channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WorkerRow {
    pub(crate) number: u32,
    pub(crate) pid: Option<u32>,
    pub(crate) channel: Option<ChannelRow>,
    pub(crate) serving: bool,
    pub(crate) ever_served: bool,
    pub(crate) restarts: u64,
    pub(crate) max_connections: u64,
}

impl SupervisorTable {
    /// Every descriptor the table names.
    pub(crate) fn descriptors(&self) -> Vec<RawFd> {
        let channels = self
            .workers
            .iter()
            .filter_map(|w| w.channel.as_ref())
            .map(|c| c.fd);
        self.holders.iter().copied().chain(channels).collect()
    }
}

/// The backplane's place in the shared log: its connections are not
/// carried (the new code connects afresh), only the last id delivered and
/// the lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BackplaneRow {
    pub(crate) last_id: Option<u64>,
    /// This instance's name in the lease.
    pub(crate) holder: String,
    /// How long the lease is still ours, if it is.
    pub(crate) lease_left_ms: Option<u64>,
}

/// A ring: the id its next frame gets, the first id after its last gap,
/// and its frames, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RingRows {
    pub(crate) next_id: u64,
    pub(crate) horizon: u64,
    pub(crate) frames: Vec<FrameRow>,
}

/// One frame, as its bytes went out on each endpoint, and its topics by
/// name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FrameRow {
    pub(crate) id: u64,
    pub(crate) sse: Option<String>,
    pub(crate) mercure: String,
    pub(crate) topics: Vec<String>,
    pub(crate) private: bool,
    pub(crate) mercure_id: String,
}

/// One stream: its descriptor, its cursor, how long it has been quiet
/// and how long it has left to live, and what it follows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StreamRow {
    pub(crate) fd: RawFd,
    /// `events`, `dashboard` or `mercure`.
    pub(crate) feed: String,
    pub(crate) next_id: u64,
    /// Bytes of frame `next_id` already written, and of a heartbeat still
    /// to write.
    pub(crate) offset: u32,
    pub(crate) heartbeat_left: u8,
    pub(crate) waiting: bool,
    pub(crate) quiet_ms: u32,
    /// `--stream-lifetime`: milliseconds left (`None` when it is off).
    pub(crate) ends_in_ms: Option<u32>,
    pub(crate) subscription: Option<SubscriptionRow>,
}

/// A Mercure stream's subscription, by name: the query's matchers, its
/// token's grants and expiry, its subscription events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SubscriptionRow {
    pub(crate) routes: Vec<MatcherRow>,
    pub(crate) grants: Option<Vec<MatcherRow>>,
    pub(crate) expires_ms: Option<u64>,
    pub(crate) announce: Option<Vec<(String, serde_json::Value)>>,
}

/// A topic matcher by its kind and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub(crate) enum MatcherRow {
    All,
    Exact(String),
    Pattern(String),
    Template(String),
}

/// A worker's socket to its supervisor, with what was read of a message
/// not yet whole and what was queued and not yet written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChannelRow {
    pub(crate) fd: RawFd,
    pub(crate) inbound: Vec<u8>,
    pub(crate) outbound: Vec<u8>,
}

impl Table {
    /// Every descriptor the table names: those to keep open across the
    /// exec.
    pub(crate) fn descriptors(&self) -> Vec<RawFd> {
        let streams = self.streams.iter().map(|s| s.fd);
        let channel = self.channel.iter().map(|c| c.fd);
        self.listeners
            .iter()
            .copied()
            .chain(streams)
            .chain(channel)
            .collect()
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The time `ms` milliseconds after the Unix epoch.
pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Writes `table` into a new memory file (close-on-exec until the exec
/// is decided), read back from its start.
pub(crate) fn write(table: &impl Serialize) -> io::Result<File> {
    // SAFETY: a constant NUL-terminated name; memfd_create returns a new
    // descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"sse-mio-handover".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and nothing else owns it.
    let mut file = unsafe { File::from_raw_fd(fd) };
    // Encoded whole first: serde writes token by token, a system call
    // each on an unbuffered file (half a second for 16,000 streams).
    let bytes = serde_json::to_vec(table).map_err(io::Error::other)?;
    file.write_all(&bytes)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

/// Reads a table from its start; one of another version is refused before
/// the rest of it is read.
pub(crate) fn read<T: DeserializeOwned>(file: &mut File) -> io::Result<T> {
    file.seek(SeekFrom::Start(0))?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    parse(&text)
}

/// A table from its bytes; one of another version is refused.
pub(crate) fn parse<T: DeserializeOwned>(text: &[u8]) -> io::Result<T> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let invalid = |e: serde_json::Error| io::Error::new(io::ErrorKind::InvalidData, e);
    let Version { version } = serde_json::from_slice(text).map_err(invalid)?;
    if version != VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a hand-over table of version {version}; this program reads {VERSION}"),
        ));
    }
    serde_json::from_slice(text).map_err(invalid)
}

/// The table this process was handed, if it was started by an upgrade:
/// `SSE_MIO_HANDOVER` names its descriptor. The variable is removed and
/// the descriptor closed once read.
pub(crate) fn take_from_env<T: DeserializeOwned>(name: &str) -> Option<io::Result<T>> {
    let value = std::env::var_os(name)?;
    // SAFETY: this runs once at start-up, before any other thread of this
    // process reads or writes the environment.
    unsafe { std::env::remove_var(name) };
    let fd: RawFd = match value.to_str().and_then(|v| v.parse().ok()) {
        Some(fd) if fd > 2 => fd,
        _ => {
            let why = format!("{name} does not name a descriptor");
            return Some(Err(io::Error::new(io::ErrorKind::InvalidInput, why)));
        }
    };
    if let Err(e) = check_open(fd) {
        return Some(Err(e));
    }
    // SAFETY: the old code handed this descriptor to us for this purpose
    // alone, and nothing else in this process owns it.
    let mut file = unsafe { File::from_raw_fd(fd) };
    Some(read(&mut file))
}

/// Whether `fd` is an open descriptor of this process.
fn check_open(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("descriptor {fd}: {e}")));
    }
    Ok(())
}

/// Sets or clears `FD_CLOEXEC` on `fd`: cleared, the descriptor stays
/// open across `execve`.
pub(crate) fn set_close_on_exec(fd: RawFd, close: bool) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD read and write the descriptor's flags only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if close {
            flags | libc::FD_CLOEXEC
        } else {
            flags & !libc::FD_CLOEXEC
        };
        if libc::fcntl(fd, libc::F_SETFD, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The path this program was started from (`readlink /proc/self/exe`):
/// where an upgrade finds the new file. If the file was already replaced
/// or removed, the kernel adds " (deleted)"; the path is still the one to
/// look at.
pub(crate) fn started_from() -> io::Result<PathBuf> {
    let link = std::fs::read_link("/proc/self/exe")?;
    let text = link.to_string_lossy();
    Ok(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(&text),
    ))
}

/// What the new program said when asked whether it reads the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// It read the table through.
    Yes,
    /// It ran and said no (another version, or it knows no hand-over):
    /// the old code drains and the new one starts afresh.
    No(String),
    /// It did not answer (not a program, crashed, hung): nothing changes.
    NoAnswer(String),
}

/// Asks `program` (run as a child: `PROGRAM --handover-probe VERSION`,
/// the table on its standard input) whether it reads `table`; waits up to
/// [`PROBE_TIMEOUT`]. `version` is the one the table says (a test may
/// force another).
pub(crate) fn probe(program: &Path, table: &File, version: u32) -> Probe {
    let stdin = match table.try_clone() {
        Ok(file) => file,
        Err(e) => return Probe::NoAnswer(format!("cannot hand it the table: {e}")),
    };
    let started = Command::new(program)
        .args(["--handover-probe", &version.to_string()])
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::null())
        .env_remove(ENV)
        .env_remove(SUPERVISOR_ENV)
        .spawn();
    let mut child = match started {
        Ok(child) => child,
        Err(e) => return Probe::NoAnswer(format!("it does not run: {e}")),
    };
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Probe::NoAnswer(format!("no answer in {PROBE_TIMEOUT:?}"));
            }
            Err(e) => return Probe::NoAnswer(format!("cannot wait for it: {e}")),
        }
    };
    answer_of(status)
}

fn answer_of(status: ExitStatus) -> Probe {
    match status.code() {
        Some(PROBE_YES) => Probe::Yes,
        Some(PROBE_OTHER_VERSION) => Probe::No("it reads another version of the table".into()),
        // clap's status for an unknown flag: a program from before the
        // hand-over existed.
        Some(2) => Probe::No("it knows no hand-over".into()),
        Some(code) => Probe::NoAnswer(format!("it exited with status {code}")),
        None => Probe::NoAnswer(format!("it died: {status}")),
    }
}

/// `--handover-probe VERSION`: reads the table on standard input through
/// and answers with the exit status (0: yes, 3: another version, 1: it
/// does not read).
pub fn answer_probe(version: u32) -> i32 {
    if version != VERSION {
        return PROBE_OTHER_VERSION;
    }
    // SAFETY: standard input is this process's for the probe's whole life.
    let mut stdin = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
    let read_through = read::<serde_json::Value>(&mut stdin).and_then(|value| {
        let text = value.to_string();
        match value.get("workers") {
            Some(_) => parse::<SupervisorTable>(text.as_bytes()).map(drop),
            None => parse::<Table>(text.as_bytes()).map(drop),
        }
    });
    match read_through {
        Ok(()) => PROBE_YES,
        Err(e) if e.kind() == io::ErrorKind::InvalidData && e.to_string().contains("version") => {
            PROBE_OTHER_VERSION
        }
        Err(e) => {
            eprintln!("sse-mio: the hand-over table does not read: {e}");
            1
        }
    }
}

/// Replaces this process with `program`, started with this process's own
/// flags, and, if given, one variable of this module's (the table's
/// descriptor in [`ENV`] or [`SUPERVISOR_ENV`], or [`NEXT_ID_ENV`]);
/// returns only if the exec failed.
pub(crate) fn exec(program: &Path, word: Option<(&str, String)>) -> io::Error {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut command = Command::new(program);
    command.arg0(program).args(args);
    for name in [ENV, SUPERVISOR_ENV, NEXT_ID_ENV] {
        command.env_remove(name);
    }
    if let Some((name, value)) = word {
        command.env(name, value);
    }
    command.exec()
}

/// The id a drained predecessor's sequence stopped at ([`NEXT_ID_ENV`]),
/// if it left one; the variable is removed.
pub(crate) fn take_next_id() -> Option<u64> {
    let value = std::env::var_os(NEXT_ID_ENV)?;
    // SAFETY: at start-up, before any other thread of this process reads
    // or writes the environment.
    unsafe { std::env::remove_var(NEXT_ID_ENV) };
    value.to_str()?.parse().ok()
}

/// The exec of an upgrade: `fds` (what the table names) and the table
/// itself kept open across it, the table's descriptor in `name`. Returns
/// only if that failed, every descriptor close-on-exec again.
pub(crate) fn exec_handing_over(
    program: &Path,
    fds: &[RawFd],
    name: &str,
    table: &File,
) -> io::Error {
    let mut fds = fds.to_vec();
    fds.push(table.as_raw_fd());
    let e = match fds.iter().try_for_each(|&fd| set_close_on_exec(fd, false)) {
        Ok(()) => exec(program, Some((name, table.as_raw_fd().to_string()))),
        Err(e) => io::Error::new(e.kind(), format!("cannot keep a descriptor open: {e}")),
    };
    for fd in fds {
        let _ = set_close_on_exec(fd, true);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        Table {
            version: VERSION,
            asked_at_ms: 1,
            written_at_ms: 2,
            listeners: vec![3],
            next_id: 42,
            events: RingRows {
                next_id: 42,
                horizon: 40,
                frames: vec![FrameRow {
                    id: 41,
                    sse: Some("id: 41\ndata: x\n\n".into()),
                    mercure: "id: #41\ndata: x\n\n".into(),
                    topics: vec!["/tick".into()],
                    private: false,
                    mercure_id: "#41".into(),
                }],
            },
            dashboard: RingRows::default(),
            streams: vec![StreamRow {
                fd: 7,
                feed: "mercure".into(),
                next_id: 41,
                offset: 3,
                heartbeat_left: 0,
                waiting: true,
                quiet_ms: 10,
                ends_in_ms: None,
                subscription: Some(SubscriptionRow {
                    routes: vec![MatcherRow::Exact("/a".into()), MatcherRow::All],
                    grants: Some(vec![MatcherRow::Pattern("/b/*".into())]),
                    expires_ms: Some(5),
                    announce: None,
                }),
            }],
            active: vec![("/s".into(), serde_json::json!({"active": true}))],
            counters: Counters::default(),
            channel: Some(ChannelRow {
                fd: 9,
                inbound: vec![1, 2],
                outbound: vec![],
            }),
            backplane: None,
        }
    }

    #[test]
    fn a_table_comes_back_as_it_was_written() {
        let table = sample();
        let mut file = write(&table).unwrap();
        let json = |t: &Table| serde_json::to_value(t).unwrap();
        assert_eq!(json(&read::<Table>(&mut file).unwrap()), json(&table));
        assert_eq!(table.descriptors(), vec![3, 7, 9]);
    }

    /// The rows are the format: a change to them shows here, and needs a
    /// new [`VERSION`].
    #[test]
    fn the_format_is_version_one() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(
            json["streams"][0]["subscription"]["routes"],
            serde_json::json!([{"type": "exact", "value": "/a"}, {"type": "all"}])
        );
        let text = serde_json::to_string(&sample()).unwrap();
        assert!(
            text.starts_with(r#"{"version":1,"#),
            "the version comes first"
        );
        let mut keys: Vec<&str> = (json.as_object().unwrap().keys())
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        let fields = "active asked_at_ms backplane channel counters dashboard events listeners \
                      next_id streams version written_at_ms";
        assert_eq!(keys, fields.split_whitespace().collect::<Vec<_>>());
    }

    #[test]
    fn another_version_is_refused_before_the_rest_is_read() {
        let e = parse::<Table>(br#"{"version": 99, "what": "ever"}"#).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("version 99"), "{e}");
        assert!(
            parse::<Table>(br#"{"version": 1, "listeners": "#).is_err(),
            "torn"
        );
    }

    #[test]
    fn close_on_exec_is_set_and_cleared() {
        let file = write(&Table::default()).unwrap();
        let fd = file.as_raw_fd();
        let flags = || unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_ne!(
            flags() & libc::FD_CLOEXEC,
            0,
            "a memory file starts close-on-exec"
        );
        set_close_on_exec(fd, false).unwrap();
        assert_eq!(flags() & libc::FD_CLOEXEC, 0);
        set_close_on_exec(fd, true).unwrap();
        assert_ne!(flags() & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn the_program_is_found_where_it_was_started_from() {
        assert_eq!(started_from().unwrap(), std::env::current_exe().unwrap());
    }

    #[test]
    fn a_probe_that_is_not_a_program_gives_no_answer() {
        let file = write(&sample()).unwrap();
        let answer = probe(Path::new("/nonexistent/sse-mio"), &file, VERSION);
        assert!(matches!(answer, Probe::NoAnswer(_)), "{answer:?}");
        // `false` runs and exits 1: an answer that is not a yes.
        assert!(matches!(
            probe(Path::new("/bin/false"), &file, VERSION),
            Probe::NoAnswer(_)
        ));
    }
}
