//! `keel containerd`: run keel's own containerd in the foreground until interrupted.

use std::time::Duration;

use keel_supervisor::{ContainerdOutput, Containers, Supervisor};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{ContainerdArgs, GlobalOptions};
use crate::connect::{Paths, supervisor_config};
use crate::error::CliError;

/// Starts or adopts keel's own containerd, logs its output and life to stderr, and stops it on
/// SIGINT or SIGTERM.
pub async fn containerd(global: &GlobalOptions, args: ContainerdArgs) -> Result<(), CliError> {
    if global.address.is_some() {
        return Err(CliError::usage(
            "`keel containerd` runs keel's own containerd; drop --address",
        ));
    }
    let paths = Paths::new(global.state_dir.as_deref());
    let mut config = supervisor_config(&paths);
    // Its output goes to this command's log. It keeps its own process group, so a Ctrl-C
    // meant for this command does not reach it and the stop below is the only one.
    config.output = ContainerdOutput::Tracing;
    let supervisor = Supervisor::start(config).await?;
    eprintln!(
        "keel: containerd (pid {}) serves on {}; press Ctrl-C to stop it",
        supervisor.pid().unwrap_or_default(),
        supervisor.socket().display()
    );

    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|error| CliError::io("listen for", "SIGINT", error))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|error| CliError::io("listen for", "SIGTERM", error))?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }

    let containers = if args.stop_containers {
        Containers::Stop
    } else {
        Containers::Keep
    };
    supervisor
        .stop(Duration::from_secs(args.grace_secs), containers)
        .await?;
    Ok(())
}
