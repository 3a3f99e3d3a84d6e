//! Running programs with their output passed through to the terminal, echoing each command line
//! first.

use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::process::{Command, ExitCode, ExitStatus};

/// A program run that did not exit with status 0.
#[derive(Debug)]
pub struct CommandFailed {
    /// The command line as echoed.
    pub command: String,
    /// The program's exit status.
    pub status: ExitStatus,
}

impl CommandFailed {
    /// Returns the program's exit code, or 1 when a signal ended it or the code does not fit
    /// in a byte.
    pub fn code(&self) -> u8 {
        self.status
            .code()
            .and_then(|code| u8::try_from(code).ok())
            .filter(|&code| code != 0)
            .unwrap_or(1)
    }

    /// Returns [`code`](Self::code) as the exit code of xtask.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "`{}` failed with {}", self.command, self.status)
    }
}

impl std::error::Error for CommandFailed {}

/// A program to run, with the environment changes to echo along with it.
pub struct Step {
    command: Command,
    env_changes: Vec<String>,
}

/// Returns `cargo <args>` to run in `root`.
pub fn cargo(root: &Path, args: &[&str]) -> Step {
    program("cargo", args).current_dir(root)
}

/// Returns `<name> <args>`, looked up on `PATH`.
pub fn program(name: &str, args: &[&str]) -> Step {
    let mut command = Command::new(name);
    command.args(args);
    Step {
        command,
        env_changes: Vec::new(),
    }
}

impl Step {
    /// Sets the folder the program runs in.
    pub fn current_dir(mut self, folder: &Path) -> Self {
        self.command.current_dir(folder);
        self
    }

    /// Sets the environment variable `key` for the program.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self.env_changes.push(format!("{key}={value}"));
        self
    }

    /// Removes the environment variable `key` for the program.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self.env_changes.push(format!("-u {key}"));
        self
    }

    /// Echoes the command line to standard error, runs the program with the terminal's standard
    /// streams and waits for it.
    ///
    /// # Errors
    ///
    /// Returns [`CommandFailed`] when it exits with a status other than 0, or an error when it
    /// cannot be started.
    pub fn run(mut self) -> anyhow::Result<()> {
        let command = self.to_string();
        eprintln!("$ {command}");
        let status = self
            .command
            .status()
            .map_err(|error| anyhow::anyhow!("failed to start `{command}`: {error}"))?;
        if status.success() {
            return Ok(());
        }
        Err(CommandFailed { command, status }.into())
    }
}

impl fmt::Display for Step {
    /// Writes the command line as a shell would take it: `env` with the changes, if any, then
    /// the program and its arguments.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.env_changes.is_empty() {
            write!(formatter, "env {} ", self.env_changes.join(" "))?;
        }
        let program = self.command.get_program().to_string_lossy();
        let args: Vec<OsString> = self.command.get_args().map(OsString::from).collect();
        write!(formatter, "{program}")?;
        for arg in args {
            write!(formatter, " {}", arg.to_string_lossy())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_displays_env_changes_first() {
        let step = program("cargo", &["test", "--workspace"])
            .env_remove("RUST_TEST_THREADS")
            .env("DEBIAN_FRONTEND", "noninteractive");
        assert_eq!(
            step.to_string(),
            "env -u RUST_TEST_THREADS DEBIAN_FRONTEND=noninteractive cargo test --workspace"
        );
    }

    #[test]
    fn failed_step_passes_exit_code_on() {
        let error = program("sh", &["-c", "exit 3"]).run().err();
        let failed = error
            .as_ref()
            .and_then(|error| error.downcast_ref::<CommandFailed>());
        assert_eq!(failed.map(CommandFailed::code), Some(3));
    }

    #[test]
    fn successful_step_returns_ok() {
        assert!(program("true", &[]).run().is_ok());
    }
}
