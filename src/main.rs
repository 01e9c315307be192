//! The `sse-mio` binary: flags, logging, then the server's loop. Every way
//! it can fail to start prints one line and exits non-zero (2 for a bad
//! flag, 1 for anything else); no panic message.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use sse_mio::{Config, Server, Stopped, Supervisor};

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
    // An older copy of this program asks, in an upgrade, whether this one
    // reads its hand-over table.
    if let Some(version) = config.handover_probe {
        return ExitCode::from(sse_mio::answer_probe(version) as u8);
    }
    // A bad --redis is a flag error too, said without the URL.
    if let Err(e) = config.redis_url() {
        eprintln!("sse-mio: {e} (see --help)");
        return ExitCode::from(2);
    }
    init_logging(&config);
    if config.workers > 1 && config.worker.is_none() {
        return supervise(&config);
    }

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
    if config.worker.is_none() {
        server.log_start_up();
    }
    match server.run() {
        Ok(Stopped::Drained | Stopped::Deadline) => match server.exec_after_drain() {
            // An upgrade whose new file could not take the hand-over:
            // drained, it starts afresh (this returns only if it failed).
            Some(e) => {
                eprintln!("sse-mio: cannot start the new program after the drain: {e}");
                ExitCode::FAILURE
            }
            None => ExitCode::SUCCESS,
        },
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

/// `env_logger`, at info unless `RUST_LOG` says otherwise. With workers,
/// every line says which process wrote it (`supervisor`, `worker 3`).
fn init_logging(config: &Config) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    let who = match config.worker {
        Some(n) => Some(format!("worker {n}")),
        None if config.workers > 1 => Some("supervisor".to_owned()),
        None => None,
    };
    if let Some(who) = who {
        builder.format(move |buf, record| {
            writeln!(
                buf,
                "[{} {:<5} {}] {who}: {}",
                buf.timestamp(),
                record.level(),
                record.target(),
                record.args()
            )
        });
    }
    builder.init();
}

/// `--workers N`: this process supervises N workers.
fn supervise(config: &Config) -> ExitCode {
    let args = std::env::args_os().skip(1).collect();
    let supervisor = match Supervisor::start(config, args) {
        Ok(supervisor) => supervisor,
        Err(e) => {
            eprintln!("sse-mio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match supervisor.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sse-mio: supervisor loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
