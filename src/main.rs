//! The `sse-mio` binary: flags, logging, the open-files limit, signals, then
//! the loop. Every way it can fail to start prints one line and exits
//! non-zero (2 for a bad flag, 1 for anything else); no panic message.

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use log::{info, warn};

use sse_mio::server::{RESERVED_FDS, Stopped};
use sse_mio::{Config, Server, limits};

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message, first line only: "error: invalid value ... for '--interval <INTERVAL>': ..."
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            let line = line.strip_prefix("error: ").unwrap_or(line);
            eprintln!("sse-mio: {line} (see --help)");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    // Raised before binding (the default --max-connections follows it), but
    // logged after, so that a failure to start is the only line printed.
    let raised = limits::raise_open_files_limit();
    let mut server = match Server::bind(&config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("sse-mio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match raised {
        Ok(limit) if limit.before < limit.soft => info!(
            "open-files limit raised from {} to {} (the hard limit)",
            limit.before, limit.soft
        ),
        Ok(limit) => info!("open-files limit is {} (the hard limit)", limit.soft),
        Err(e) => warn!("cannot raise the open-files limit: {e}"),
    }
    if let Err(e) = server.handle_signals() {
        eprintln!("sse-mio: cannot handle signals: {e}");
        return ExitCode::FAILURE;
    }
    let fd_limit = limits::open_files_limit();
    info!(
        "serving {} on http://{} (events on /sse every {:?}; up to {} connections)",
        config.www.display(),
        server.local_addr(),
        config.interval,
        server.max_connections()
    );
    if (server.max_connections() as u64) + (RESERVED_FDS as u64) >= fd_limit {
        info!(
            "the open-files limit ({fd_limit}) caps connections at {}; raise the hard limit \
             (ulimit -Hn, or LimitNOFILE= under systemd) to hold more",
            server.max_connections()
        );
    }
    match server.run() {
        Ok(Stopped::Drained | Stopped::Deadline) => ExitCode::SUCCESS,
        // Stopped by a second signal: the shell's convention, 128 + signal.
        Ok(Stopped::Forced { signal }) => {
            ExitCode::from(signal.map_or(1, |s| 128u8.saturating_add(s as u8)))
        }
        Err(e) => {
            eprintln!("sse-mio: event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
