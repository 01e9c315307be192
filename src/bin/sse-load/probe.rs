//! What `sse-load` reads of the server and the machine, from `/proc`:
//! the server's process tree (a supervisor and its workers), its resident
//! memory and CPU time, and the kernel's TCP counters that say whether the
//! machine itself dropped connections.

use std::collections::BTreeMap;

use crate::publish::Published;
use crate::tally::Posted;

#[derive(Default)]
pub(crate) struct ServerFigures {
    pub(crate) rss_before: Option<u64>,
    pub(crate) rss_after: Option<u64>,
    /// The anonymous part of it (`RssAnon`: what the server allocated,
    /// not the program's pages it maps as it runs new code paths).
    pub(crate) anon_before: Option<u64>,
    pub(crate) anon_after: Option<u64>,
    pub(crate) cpu_percent: Option<f64>,
    /// The chat messages posted to it during the hold (`--chat`).
    pub(crate) chat: Vec<Posted>,
    /// The posts to the publisher endpoint during the hold (`--publish`).
    pub(crate) published: Vec<Published>,
    /// [`kernel_counters`] at the start and at the end of the hold.
    pub(crate) kernel_before: BTreeMap<String, u64>,
    pub(crate) kernel_after: BTreeMap<String, u64>,
}

/// The TCP counters of `/proc/net/netstat` that a load test watches.
pub(crate) const KERNEL_COUNTERS: [&str; 3] =
    ["ListenOverflows", "ListenDrops", "TCPMemoryPressures"];

/// [`KERNEL_COUNTERS`] now (`nstat`'s `TcpExt` figures), by name.
pub(crate) fn kernel_counters() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let mut out = BTreeMap::new();
    if let [names, values] = lines[..] {
        for (name, value) in names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            if KERNEL_COUNTERS.contains(&name) {
                out.insert(name.to_owned(), value.parse().unwrap_or(0));
            }
        }
    }
    out
}

/// The fields of `/proc/<pid>/stat` after the command name (which may
/// hold spaces and parentheses).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.get(stat.rfind(')')? + 2..)?;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// `pid` and every process descended from it: a server with `--workers`
/// is a supervisor and its workers, and all of them are the server.
pub(crate) fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some(ppid) = stat_fields(child).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
                parents.push((child, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    tree
}

/// Resident memory of `pid` and its descendants, summed.
pub(crate) fn proc_rss(pid: u32) -> Option<u64> {
    proc_status_bytes(pid, "VmRSS:")
}

/// The anonymous part of [`proc_rss`] (`RssAnon`: heap and stacks, not
/// the program's file pages).
pub(crate) fn proc_anon(pid: u32) -> Option<u64> {
    proc_status_bytes(pid, "RssAnon:")
}

/// A `kB` field of `/proc/PID/status`, in bytes, summed over `pid` and its
/// descendants.
fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let bytes = |pid: u32| -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    let root = bytes(pid)?;
    let rest: u64 = process_tree(pid)
        .into_iter()
        .skip(1)
        .filter_map(bytes)
        .sum();
    Some(root + rest)
}

/// utime + stime of `pid` and its descendants, in seconds.
pub(crate) fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let cpu = |pid: u32| -> Option<f64> {
        let fields = stat_fields(pid)?;
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Some((utime + stime) / ticks)
    };
    let root = cpu(pid)?;
    let rest: f64 = process_tree(pid).into_iter().skip(1).filter_map(cpu).sum();
    Some(root + rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `RssAnon` is what a process allocated: 8 MiB of touched heap shows
    /// in it, and it is part of the RSS, not all of it (the program's own
    /// pages are the rest).
    #[test]
    fn the_allocated_part_of_the_rss_is_read() {
        let me = std::process::id();
        let before = proc_anon(me).unwrap();
        let heap = vec![1u8; 8 << 20];
        let after = proc_anon(me).unwrap();
        assert!(after >= before + (7 << 20), "{before} -> {after}");
        assert!(after < proc_rss(me).unwrap());
        drop(std::hint::black_box(heap));
    }
}
