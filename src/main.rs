//! The `sse-mio` binary: flags, logging, then the server's loop. Every way
//! it can fail to start prints one line and exits non-zero (2 for a bad
//! flag, 1 for anything else); no panic message.

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use sse_mio::{Config, Server, Stopped};

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

    let mut server = match Server::bind(&config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("sse-mio: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = server.handle_signals() {
        eprintln!("sse-mio: cannot handle signals: {e}");
        return ExitCode::FAILURE;
    }
    server.log_start_up(&config.www);
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
