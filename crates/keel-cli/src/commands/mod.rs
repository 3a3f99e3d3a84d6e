//! One module per group of commands; [`dispatch`] runs the parsed command and returns the exit
//! code.

mod checkpoint;
mod containerd;
mod events;
mod exec;
mod inspect;
mod lifecycle;
mod run;
mod task;

use crate::cli::{Cli, Command};
use crate::error::CliError;

/// Runs the command and returns the process exit code.
pub async fn dispatch(cli: Cli) -> Result<u8, CliError> {
    let global = &cli.global;
    match cli.command {
        Command::Run(args) => run::run(global, args).await,
        Command::Exec(args) => exec::exec(global, args).await,
        Command::Ps => inspect::ps(global).await.map(|()| 0),
        Command::Kill(args) => lifecycle::kill(global, args).await.map(|()| 0),
        Command::Stop(args) => lifecycle::stop(global, args).await.map(|()| 0),
        Command::Pause(args) => lifecycle::pause(global, &args.id).await.map(|()| 0),
        Command::Resume(args) => lifecycle::resume(global, &args.id).await.map(|()| 0),
        Command::Stats(args) => inspect::stats(global, &args.id).await.map(|()| 0),
        Command::Top(args) => inspect::top(global, &args.id).await.map(|()| 0),
        Command::Events(args) => events::events(global, args).await.map(|()| 0),
        Command::Rm(args) => lifecycle::rm(global, args).await.map(|()| 0),
        Command::Checkpoint(args) => checkpoint::checkpoint(global, args).await.map(|()| 0),
        Command::Restore(args) => checkpoint::restore(global, args).await.map(|()| 0),
        Command::Containerd(args) => containerd::containerd(global, args).await.map(|()| 0),
    }
}

/// Converts a process exit code to this command's exit code: the low eight bits, as a shell
/// reports them.
pub(crate) fn exit_byte(code: u32) -> u8 {
    u8::try_from(code & 0xff).unwrap_or(u8::MAX)
}
