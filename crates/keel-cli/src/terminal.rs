//! This process's terminal: raw mode for an interactive pseudo-terminal session, and its
//! window size.

use std::io::IsTerminal as _;

use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};

use crate::error::CliError;

/// Rejects `-i -t` when stdin is not a terminal. The input would reach the process through a
/// pseudo-terminal fed from a pipe, whose hang-up at the end of the input kills the process.
pub fn check_interactive_terminal(interactive: bool, tty: bool) -> Result<(), CliError> {
    if interactive && tty && !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "-i -t needs a terminal on stdin, and stdin is not one; drop -t to pipe input to the process",
        ));
    }
    Ok(())
}

/// Puts stdin's terminal in raw mode and restores the previous mode when dropped, so keys such
/// as Ctrl-C reach the container's terminal instead of signalling this process.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Enables raw mode when stdin is a terminal; returns `None` otherwise.
    pub fn enable() -> Option<Self> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        if let Err(error) = tcsetattr(&stdin, OptionalActions::Now, &self.saved) {
            tracing::warn!(%error, "failed to restore the terminal mode");
        }
    }
}

/// Returns the window size (columns, rows) of the first of stdin, stdout and stderr that is a
/// terminal.
pub fn window_size() -> Option<(u32, u32)> {
    let size = if std::io::stdin().is_terminal() {
        tcgetwinsize(std::io::stdin())
    } else if std::io::stdout().is_terminal() {
        tcgetwinsize(std::io::stdout())
    } else if std::io::stderr().is_terminal() {
        tcgetwinsize(std::io::stderr())
    } else {
        return None;
    };
    let size = size.ok()?;
    (size.ws_col > 0 && size.ws_row > 0).then(|| (u32::from(size.ws_col), u32::from(size.ws_row)))
}
