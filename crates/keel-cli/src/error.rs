//! The command line's errors: one line naming what failed and what to do, and an exit code
//! that follows [`keel::ErrorKind`].

use std::path::PathBuf;

use keel::ErrorKind;
use keel_supervisor::SupervisorError;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A keel call failed.
    #[error("{source}{detail}", detail = detail(source))]
    Keel {
        /// The failed call's error.
        #[from]
        source: keel::Error,
    },

    /// keel's own containerd could not be started or adopted.
    #[error("{source}")]
    Supervisor {
        /// The supervisor's error.
        #[from]
        source: SupervisorError,
    },

    /// The command line requests something keel cannot do.
    #[error("{message}")]
    Usage {
        /// The problem and its fix.
        message: String,
    },

    /// A file or terminal operation failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// The operation, such as "write to".
        action: &'static str,
        /// The file or device.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::Usage {
            message: message.into(),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Returns the process exit code: a fixed number per [`ErrorKind`], listed in
    /// `docs/cli.md`.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Keel { source } => exit_code_of(source.kind()),
            Self::Supervisor { .. } => exit_code_of(ErrorKind::Unavailable),
            Self::Usage { .. } => exit_code_of(ErrorKind::InvalidArgument),
            Self::Io { .. } => exit_code_of(ErrorKind::Internal),
        }
    }
}

/// Maps an error kind to the exit code of a failed command.
pub fn exit_code_of(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidArgument => 2,
        ErrorKind::NotFound => 3,
        ErrorKind::AlreadyExists => 4,
        ErrorKind::FailedPrecondition => 5,
        ErrorKind::Unavailable => 6,
        ErrorKind::TimedOut => 7,
        ErrorKind::Cancelled => 8,
        // Shells report a missing executable with 127.
        ErrorKind::ExecutableNotFound => 127,
        _ => 1,
    }
}

/// Returns the text after keel's message: containerd's own message when containerd rejected
/// the request, and the next step for the user. keel's own rejections already end with the
/// next step, so they get nothing.
fn detail(error: &keel::Error) -> String {
    match error {
        keel::Error::Rejected { .. } => String::new(),
        keel::Error::Containerd { source, .. } if !source.message().is_empty() => {
            format!(" ({}); {}", source.message(), hint(error.kind()))
        }
        _ => format!("; {}", hint(error.kind())),
    }
}

/// Returns the next step for the user after an error of `kind`.
fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "see with `keel ps` whether the container and its task still exist",
        ErrorKind::AlreadyExists => "choose another id, or remove the old one with `keel rm -f`",
        ErrorKind::InvalidArgument => "fix the argument and try again",
        ErrorKind::FailedPrecondition => {
            "the container is in the wrong state: see `keel ps`, stop it with `keel stop`, or use `keel rm -f`"
        }
        ErrorKind::Unavailable => {
            "check that containerd runs (`keel containerd`) and that --address names its socket"
        }
        ErrorKind::TimedOut => "containerd is slow or hung; try again, or restart it",
        ErrorKind::Cancelled => "the request was cancelled; try again",
        ErrorKind::ExecutableNotFound => "check the command's path inside the container",
        _ => "run again with --debug for details",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_differ_per_kind() {
        let kinds = [
            ErrorKind::InvalidArgument,
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::FailedPrecondition,
            ErrorKind::Unavailable,
            ErrorKind::TimedOut,
            ErrorKind::Cancelled,
            ErrorKind::ExecutableNotFound,
            ErrorKind::Internal,
        ];
        let mut codes: Vec<u8> = kinds.iter().map(|kind| exit_code_of(*kind)).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&0));
    }

    #[test]
    fn keel_error_names_id_and_hint() {
        let error = CliError::from(keel::Error::InvalidArgument {
            field: "container id",
            value: "bad id".to_owned(),
            reason: "must match [A-Za-z0-9_.-]+".to_owned(),
        });
        let text = error.to_string();
        assert!(text.contains("\"bad id\""), "{text}");
        assert!(text.contains("fix the argument"), "{text}");
        assert_eq!(error.exit_code(), 2);
    }
}
