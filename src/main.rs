//! The `sse-mio` binary: flags, logging, the open-files limit, then the loop.

use std::process::ExitCode;

use clap::Parser;
use log::{info, warn};

use sse_mio::server::RESERVED_FDS;
use sse_mio::{Config, Server, limits};

fn main() -> ExitCode {
    let config = Config::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    match limits::raise_open_files_limit() {
        Ok(limit) if limit.before < limit.soft => info!(
            "open-files limit raised from {} to {} (the hard limit)",
            limit.before, limit.soft
        ),
        Ok(limit) => info!("open-files limit is {} (the hard limit)", limit.soft),
        Err(e) => warn!("cannot raise the open-files limit: {e}"),
    }

    let mut server = match Server::bind(&config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("sse-mio: {e}");
            return ExitCode::FAILURE;
        }
    };
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sse-mio: event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
