//! The program every worker is started from: this very binary, held open
//! by the supervisor from its first moment. A deploy that replaces or
//! deletes the file on disk (`cargo install`, a package upgrade) does not
//! matter to a worker started afterwards: it is started from the open
//! file (`/proc/self/fd/N`), not from the path, so it runs the same code
//! as its supervisor. The path the program was started from is kept too,
//! for the workers' `argv[0]` (what `ps` shows) and for an upgrade, which
//! must exec the new file at that path, never `/proc/self/fd/N`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// This program, open.
pub(super) struct Executable {
    /// Opened with `O_CLOEXEC`: a worker's exec of `/proc/self/fd/N`
    /// resolves the path before the descriptor is closed.
    file: File,
    /// Where it was started from (`readlink /proc/self/exe`).
    path: PathBuf,
}

impl Executable {
    /// Opens the running program.
    pub(super) fn open() -> io::Result<Executable> {
        let path = crate::handover::started_from()?;
        let file = File::open("/proc/self/exe")
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open this program: {e}")))?;
        Ok(Executable { file, path })
    }

    /// The file now at `path` (an upgrade's new program), open.
    pub(super) fn open_at(path: &Path) -> io::Result<Executable> {
        let file = File::open(path)?;
        let path = path.to_owned();
        Ok(Executable { file, path })
    }

    /// What to exec to start a worker: the open file, by descriptor.
    pub(super) fn program(&self) -> String {
        format!("/proc/self/fd/{}", self.file.as_raw_fd())
    }

    /// The path this program was started from.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_this_one_and_stays_open() {
        let exe = Executable::open().unwrap();
        assert_eq!(exe.path(), std::env::current_exe().unwrap());
        let program = exe.program();
        let by_fd = std::fs::read_link(&program).unwrap();
        assert_eq!(by_fd, exe.path(), "{program} is this program");
    }
}
