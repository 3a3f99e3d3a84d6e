//! `keel exec`: run another process in a running container and exit with its exit code.

use keel::spec::console_box;
use keel::{ErrorKind, StdioRequest};
use oci_spec::runtime::{Process, ProcessBuilder, UserBuilder};

use crate::attach::attach_and_wait;
use crate::cli::{ExecArgs, GlobalOptions};
use crate::commands::exit_byte;
use crate::commands::task::{load_task, task_error};
use crate::connect::{IgnoreEvents, connect};
use crate::error::CliError;
use crate::terminal::{check_interactive_terminal, window_size};

/// The `PATH` of an exec process, the one keel's default spec gives the init process.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `keel exec`; returns the process's exit code.
pub async fn exec(global: &GlobalOptions, args: ExecArgs) -> Result<u8, CliError> {
    check_interactive_terminal(args.interactive, args.tty)?;
    let process = build_process(&args)?;
    let exec_id = args
        .exec_id
        .clone()
        .unwrap_or_else(|| format!("keel-exec-{}", std::process::id()));
    let session = connect(global, IgnoreEvents).await?;
    let result = run_exec(&session.client, &args, &exec_id, process).await;
    session.close().await;
    result
}

async fn run_exec(
    client: &keel::Client,
    args: &ExecArgs,
    exec_id: &str,
    process: Process,
) -> Result<u8, CliError> {
    let container = client.load_container(&args.id).await?;
    let task = load_task(&container, "exec").await?;
    let stdio = StdioRequest {
        stdin: args.interactive,
        output: true,
        terminal: args.tty,
    };
    let mut exec = match task.exec(exec_id, process, stdio).await {
        Ok(exec) => exec,
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            let hint = format!(
                "the container has an exec with id {exec_id} already; choose another id with \
                 --exec-id, or leave it out for keel to choose one"
            );
            return Err(CliError::with_hint(error, hint));
        }
        Err(error) => return Err(task_error(&container, error).await),
    };
    if let Err(error) = exec.start().await {
        return Err(task_error(&container, error).await);
    }
    let status = attach_and_wait(&mut exec, args.tty, args.interactive).await?;
    if let Err(error) = exec.delete().await {
        // The exec is gone with its task when the shim died after its exit was reported.
        if error.kind() != ErrorKind::NotFound {
            return Err(error.into());
        }
        tracing::debug!(container_id = %args.id, exec_id, %error, "exec already deleted");
    }
    Ok(exit_byte(status.code))
}

fn build_process(args: &ExecArgs) -> Result<Process, CliError> {
    let mut env = vec![DEFAULT_PATH.to_owned()];
    env.extend(args.env.iter().map(|(key, value)| format!("{key}={value}")));
    let user = UserBuilder::default()
        .uid(0_u32)
        .gid(0_u32)
        .build()
        .map_err(|error| CliError::usage(format!("invalid user: {error}")))?;
    let mut process = ProcessBuilder::default()
        .args(args.command.clone())
        .env(env)
        .cwd(args.cwd.clone())
        .terminal(args.tty)
        .user(user)
        .build()
        .map_err(|error| CliError::usage(format!("invalid process: {error}")))?;
    if args.tty
        && let Some((width, height)) = window_size()
    {
        process.set_console_size(Some(console_box(width, height)));
    }
    Ok(process)
}
