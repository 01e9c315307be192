//! A worker's process, known by its pid: what the supervisor needs of
//! `std::process::Child` (wait without blocking, kill), kept as a bare
//! pid so that it survives the supervisor's own upgrade in place (a
//! process's children stay its children across `execve`, but a `Child`
//! does not cross it).

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};

/// A child process of this one, not yet reaped.
#[derive(Debug)]
pub(super) struct Process {
    pid: u32,
}

impl Process {
    /// The process `child` started (the `Child` is dropped: it neither
    /// waits nor kills).
    pub(super) fn of(child: Child) -> Process {
        Process { pid: child.id() }
    }

    /// A child that the old code of an upgrade started.
    pub(super) fn adopt(pid: u32) -> Process {
        Process { pid }
    }

    pub(super) fn id(&self) -> u32 {
        self.pid
    }

    /// Its exit status if it has exited (it is reaped then), without
    /// blocking.
    pub(super) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let mut status = 0;
        // SAFETY: waitpid on our own child, with a valid status pointer.
        let got = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
        match got {
            0 => Ok(None),
            p if p > 0 => Ok(Some(ExitStatus::from_raw(status))),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Sends `signal` to it (it has not been reaped, so the pid is still
    /// its own).
    pub(super) fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child, not yet waited for.
        unsafe { libc::kill(self.pid as i32, signal) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn a_child_is_waited_for_and_killed_by_its_pid() {
        let mut process = Process::of(Command::new("sleep").arg("30").spawn().unwrap());
        assert!(process.try_wait().unwrap().is_none());
        process.signal(libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = process.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "not reaped");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        let mut done = Process::of(Command::new("true").spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        while done.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "not reaped");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(done.try_wait().is_err(), "reaped once only");
    }
}
