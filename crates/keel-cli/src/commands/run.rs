//! `keel run`: create a container, run its task attached or detached, and exit with the
//! task's exit code.

use keel::spec::SpecBuilder;
use keel::{Container, ErrorKind, StdioRequest};
use oci_spec::runtime::{LinuxMemoryBuilder, Spec};

use crate::attach::attach_and_wait;
use crate::cli::{GlobalOptions, RunArgs};
use crate::commands::exit_byte;
use crate::connect::{IgnoreEvents, connect};
use crate::error::CliError;
use crate::terminal::{check_interactive_terminal, window_size};

/// Runs `keel run`; returns the task's exit code, or 0 when detached.
pub async fn run(global: &GlobalOptions, args: RunArgs) -> Result<u8, CliError> {
    check_interactive_terminal(args.interactive, args.tty)?;
    let spec = build_spec(&args)?;
    let session = connect(global, IgnoreEvents).await?;
    let container = session.client.create_container(&args.id, spec).await?;

    let result = if args.detach {
        start_detached(&container).await
    } else {
        run_attached(&container, &args).await
    };
    if args.rm {
        remove(&container).await;
    }
    session.close().await;
    result
}

/// Starts the task without stdio and returns at once, leaving it running.
async fn start_detached(container: &Container) -> Result<u8, CliError> {
    container.start_task(StdioRequest::default()).await?;
    Ok(0)
}

/// Starts the task with this terminal attached, waits for its exit and deletes the task.
async fn run_attached(container: &Container, args: &RunArgs) -> Result<u8, CliError> {
    let stdio = StdioRequest {
        stdin: args.interactive,
        output: true,
        terminal: args.tty,
    };
    let mut task = container.start_task(stdio).await?;
    let status = attach_and_wait(&mut task, args.tty, args.interactive).await?;
    if let Err(error) = task.delete().await {
        // containerd deletes the task by itself when the shim dies, after the exit was
        // reported, so there is nothing left to clean up.
        if error.kind() != ErrorKind::NotFound {
            return Err(error.into());
        }
        tracing::debug!(container_id = %container.id(), %error, "task already deleted");
    }
    Ok(exit_byte(status.code))
}

/// Deletes the container and whatever task it still has, logging a failure.
async fn remove(container: &Container) {
    if let Err(error) = container
        .force_delete(std::time::Duration::from_secs(10))
        .await
    {
        tracing::warn!(container_id = %container.id(), %error, "failed to remove the container");
        eprintln!(
            "keel: failed to remove container {}: {error}",
            container.id()
        );
    }
}

/// Builds the container's spec from the command line.
fn build_spec(args: &RunArgs) -> Result<Spec, CliError> {
    let rootfs = std::path::absolute(&args.rootfs)
        .map_err(|error| CliError::io("resolve", &args.rootfs, error))?;
    if !rootfs.is_dir() {
        return Err(CliError::usage(format!(
            "root folder {} not found: pass --rootfs with a folder that contains the container's files",
            rootfs.display()
        )));
    }
    let mut builder = SpecBuilder::new(rootfs)
        .args(args.command.iter().cloned())
        .terminal(args.tty);
    if args.tty
        && let Some((width, height)) = window_size()
    {
        builder = builder.console_size(width, height);
    }
    for (key, value) in &args.env {
        builder = builder.env(key, value);
    }
    if let Some((uid, gid)) = args.user {
        builder = builder.user(uid, gid);
    }
    if let Some(cwd) = &args.cwd {
        builder = builder.cwd(cwd);
    }
    let mut spec = builder.build();
    if let Some(bytes) = args.memory {
        set_memory_limit(&mut spec, bytes)?;
    }
    Ok(spec)
}

fn set_memory_limit(spec: &mut Spec, bytes: u64) -> Result<(), CliError> {
    let invalid = || CliError::usage(format!("invalid --memory {bytes}: too large"));
    let limit = i64::try_from(bytes).map_err(|_| invalid())?;
    let memory = LinuxMemoryBuilder::default()
        .limit(limit)
        .build()
        .map_err(|_| invalid())?;
    let Some(linux) = spec.linux_mut() else {
        return Err(CliError::usage("the default spec has no Linux section"));
    };
    let mut resources = linux.resources().clone().unwrap_or_default();
    resources.set_memory(Some(memory));
    linux.set_resources(Some(resources));
    Ok(())
}
