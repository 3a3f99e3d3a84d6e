//! `keel`: a command line for containers on containerd, in the manner of `ctr`, built on the
//! keel library and its containerd supervisor.
//!
//! Every command connects a keel client, to `--address` or to keel's own containerd (started
//! on first use and left running), does its work, and exits. Results print as aligned columns
//! or, with `--format json`, as JSON; a failure prints one line and exits with a code that
//! follows the error's kind.

mod attach;
mod cli;
mod commands;
mod connect;
mod error;
mod output;
mod spinner;
mod terminal;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keel: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::dispatch(cli));
    // A blocking read of stdin may still be waiting for input; it must not keep us alive.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("keel: {}", one_line(&error.to_string()));
            ExitCode::from(error.exit_code())
        }
    }
}

/// Joins the lines of a message, such as runc's error that containerd passes on, so that a
/// failure prints one line.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    lines.join(" ")
}

/// Logs to stderr: errors by default, keel's steps with `--debug`, containerd's life for
/// `keel containerd`; `RUST_LOG` overrides all of these. The library's warnings, such as a
/// reset event stream, are left for `--debug`, because each command reports what they mean
/// for it in its own words.
fn init_logging(cli: &Cli) {
    // keel's own crates only: the gRPC and HTTP/2 crates log every frame at debug level.
    let default = if cli.global.debug {
        "warn,keel=debug,keel_cli=debug,keel_connection=debug,keel_events=debug,keel_container=debug,keel_supervisor=debug,containerd=info"
    } else if matches!(cli.command, Command::Containerd(_)) {
        "info"
    } else {
        "error"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn one_line_joins_trimmed_lines() {
        assert_eq!(
            one_line("restore failed:\n  log: /x\n\n"),
            "restore failed: log: /x"
        );
        assert_eq!(one_line("plain"), "plain");
    }
}
