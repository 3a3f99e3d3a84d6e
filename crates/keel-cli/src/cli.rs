//! The command line: global options and one subcommand per action, parsed with clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run containers on containerd through the keel library.
///
/// Without --address, keel starts a containerd of its own on first use and leaves it running
/// for the next command.
#[derive(Debug, Parser)]
#[command(name = "keel", version)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalOptions,
    /// The action.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Clone, Debug, Args)]
pub struct GlobalOptions {
    /// containerd's gRPC socket; without it keel uses a containerd of its own.
    #[arg(long, global = true, env = "KEEL_ADDRESS", value_name = "SOCKET")]
    pub address: Option<PathBuf>,

    /// The containerd namespace.
    #[arg(
        short = 'n',
        long,
        global = true,
        env = "KEEL_NAMESPACE",
        default_value = "keel"
    )]
    pub namespace: String,

    /// keel's folder: containerd's data in <DIR>/containerd, its sockets in <DIR>/run, FIFOs
    /// in <DIR>/client [default: /var/lib/keel-cli, with sockets and FIFOs under
    /// /run/keel-cli]. A relative path is taken from the current folder.
    #[arg(
        long,
        global = true,
        env = "KEEL_STATE_DIR",
        value_name = "DIR",
        value_parser = parse_absolute_dir
    )]
    pub state_dir: Option<PathBuf>,

    /// The output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Logs keel's own steps to stderr (RUST_LOG overrides the filter).
    #[arg(long, global = true)]
    pub debug: bool,
}

/// The output format of results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document per result, for scripts.
    Json,
}

/// The actions.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container and run its task.
    Run(RunArgs),
    /// Run another process in a running container.
    Exec(ExecArgs),
    /// List containers and their tasks.
    #[command(alias = "ls")]
    Ps,
    /// Send a signal to a container's task.
    Kill(KillArgs),
    /// Stop a container's task: SIGTERM, then SIGKILL after a timeout.
    Stop(StopArgs),
    /// Freeze every process of a container.
    Pause(IdArgs),
    /// Thaw a paused container.
    Resume(IdArgs),
    /// Show a container's resource usage.
    Stats(IdArgs),
    /// List the processes of a container.
    Top(IdArgs),
    /// Print container events until interrupted.
    Events(EventsArgs),
    /// Remove containers.
    Rm(RmArgs),
    /// Checkpoint a running container into a folder.
    Checkpoint(CheckpointArgs),
    /// Start a container's task from a checkpoint folder, deleting its stopped task first.
    Restore(RestoreArgs),
    /// Run keel's own containerd in the foreground until interrupted.
    Containerd(ContainerdArgs),
}

/// Arguments of `keel run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container when its task exits.
    #[arg(long)]
    pub rm: bool,
    /// Pass this terminal's stdin to the process.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Start the task and return at once, leaving it running.
    #[arg(short, long, conflicts_with_all = ["interactive", "tty", "rm"])]
    pub detach: bool,
    /// The container's root folder.
    #[arg(long, value_name = "DIR")]
    pub rootfs: PathBuf,
    /// An environment variable of the process; repeatable.
    #[arg(short, long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// The user to run as, as numeric UID[:GID].
    #[arg(short, long, value_name = "UID[:GID]", value_parser = parse_user)]
    pub user: Option<(u32, u32)>,
    /// The memory limit in bytes; the suffixes k, m and g multiply by 1024, 1024² and 1024³.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub memory: Option<u64>,
    /// The process's working folder inside the container.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// The container id.
    pub id: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Arguments of `keel exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Pass this terminal's stdin to the process.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// The exec id [default: keel-exec-<pid of this command>].
    #[arg(long, value_name = "EXEC_ID")]
    pub exec_id: Option<String>,
    /// An environment variable of the process; repeatable.
    #[arg(short, long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// The process's working folder inside the container.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub cwd: PathBuf,
    /// The container id.
    pub id: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// A single container id.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The container id.
    pub id: String,
}

/// Arguments of `keel kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// The signal: a name (TERM, SIGTERM), a real-time signal (RTMIN, RTMIN+n, RTMAX, RTMAX-n)
    /// or a number from 1 to SIGRTMAX (64 on x86-64 and arm64 Linux).
    #[arg(short, long, default_value = "SIGTERM", value_parser = parse_signal)]
    pub signal: i32,
    /// Signal every process of the task, not only its init process.
    #[arg(short, long)]
    pub all: bool,
    /// The container id.
    pub id: String,
}

/// Arguments of `keel stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10)]
    pub timeout_secs: u64,
    /// The container id.
    pub id: String,
}

/// Arguments of `keel events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print only the events of these containers; all containers by default.
    pub ids: Vec<String>,
}

/// Arguments of `keel rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill a running task first.
    #[arg(short, long)]
    pub force: bool,
    /// The container ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// Arguments of `keel checkpoint`.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// The container id.
    pub id: String,
    /// The new or empty folder to write the checkpoint to; made if missing.
    pub dir: PathBuf,
    /// Stop the task after the checkpoint.
    #[arg(long)]
    pub exit: bool,
}

/// Arguments of `keel restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The container id. The container must exist; a stopped task of it is deleted first, and
    /// a running one is rejected.
    pub id: String,
    /// The checkpoint folder.
    pub dir: PathBuf,
}

/// Arguments of `keel containerd`.
#[derive(Debug, Args)]
pub struct ContainerdArgs {
    /// Seconds to wait after SIGTERM before SIGKILL when stopping.
    #[arg(long, default_value_t = 10)]
    pub grace_secs: u64,
    /// Stop the containers too when stopping; by default they keep running.
    #[arg(long)]
    pub stop_containers: bool,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!(
            "invalid environment variable {text:?}: expected KEY=VALUE"
        )),
    }
}

fn parse_user(text: &str) -> Result<(u32, u32), String> {
    let invalid = || format!("invalid user {text:?}: expected a numeric UID or UID:GID");
    let (uid, gid) = match text.split_once(':') {
        Some((uid, gid)) => (uid, gid),
        None => (text, text),
    };
    let uid = uid.parse().map_err(|_| invalid())?;
    let gid = gid.parse().map_err(|_| invalid())?;
    Ok((uid, gid))
}

/// Parses a folder path and makes it absolute against the current folder, because containerd
/// runs in another folder and reads its config and state by path.
fn parse_absolute_dir(text: &str) -> Result<PathBuf, String> {
    std::path::absolute(text).map_err(|error| format!("invalid folder {text:?}: {error}"))
}

/// Parses a byte count with an optional binary suffix: k, m or g (any case, with an optional
/// trailing b).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size {text:?}: expected bytes, such as 512m or 1073741824");
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, multiplier) = match lower.char_indices().last() {
        Some((index, 'k')) => (&lower[..index], 1_u64 << 10),
        Some((index, 'm')) => (&lower[..index], 1_u64 << 20),
        Some((index, 'g')) => (&lower[..index], 1_u64 << 30),
        _ => (lower, 1),
    };
    let count: u64 = digits.parse().map_err(|_| invalid())?;
    count.checked_mul(multiplier).ok_or_else(invalid)
}

/// Parses a signal: a name (`TERM`, `SIGTERM`, any case), a real-time signal name (`RTMIN`,
/// `RTMIN+n`, `RTMAX`, `RTMAX-n`, with or without `SIG`), or a number from 1 to the C
/// library's `SIGRTMAX` (64 on x86-64 and arm64 Linux).
pub fn parse_signal(text: &str) -> Result<i32, String> {
    let max = nix::libc::SIGRTMAX();
    if let Ok(number) = text.parse::<i32>() {
        if (1..=max).contains(&number) {
            return Ok(number);
        }
        return Err(format!(
            "invalid signal number {number}: expected a number from 1 to {max}"
        ));
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(offset) = name.strip_prefix("RTMIN") {
        return parse_real_time(text, nix::libc::SIGRTMIN(), offset, '+');
    }
    if let Some(offset) = name.strip_prefix("RTMAX") {
        return parse_real_time(text, max, offset, '-');
    }
    format!("SIG{name}")
        .parse::<nix::sys::signal::Signal>()
        .map(|signal| signal as i32)
        .map_err(|_| {
            format!(
                "invalid signal {text:?}: expected a name such as TERM, KILL, RTMIN+1 or \
                 RTMAX-1, or a number from 1 to {max}"
            )
        })
}

/// Parses the part after `RTMIN` or `RTMAX`: nothing, or `sign` and a count, as in
/// `RTMIN+3`. The result must stay between the C library's `SIGRTMIN` and `SIGRTMAX`.
fn parse_real_time(text: &str, base: i32, offset: &str, sign: char) -> Result<i32, String> {
    let (min, max) = (nix::libc::SIGRTMIN(), nix::libc::SIGRTMAX());
    let invalid = || {
        format!(
            "invalid signal {text:?}: expected RTMIN, RTMIN+n, RTMAX or RTMAX-n with a result \
             from {min} to {max}"
        )
    };
    if offset.is_empty() {
        return Ok(base);
    }
    let count: i32 = offset
        .strip_prefix(sign)
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(invalid)?;
    let number = if sign == '+' {
        base.checked_add(count)
    } else {
        base.checked_sub(count)
    };
    number
        .filter(|number| (min..=max).contains(number))
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_accept_binary_suffixes() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("4k"), Ok(4096));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("1gb"), Ok(1 << 30));
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn signals_accept_names_and_numbers() {
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("TERM"), Ok(15));
        assert_eq!(parse_signal("sigkill"), Ok(9));
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("-9").is_err());
    }

    #[test]
    fn signals_accept_real_time_signals() {
        let (min, max) = (nix::libc::SIGRTMIN(), nix::libc::SIGRTMAX());
        assert_eq!(parse_signal("34"), Ok(34));
        assert_eq!(parse_signal(&max.to_string()), Ok(max));
        assert_eq!(parse_signal("RTMIN"), Ok(min));
        assert_eq!(parse_signal("SIGRTMIN+1"), Ok(min + 1));
        assert_eq!(parse_signal("rtmin+2"), Ok(min + 2));
        assert_eq!(parse_signal("RTMAX"), Ok(max));
        assert_eq!(parse_signal("SIGRTMAX-3"), Ok(max - 3));
        assert_eq!(parse_signal(&format!("RTMIN+{}", max - min)), Ok(max));
    }

    #[test]
    fn signals_reject_out_of_range() {
        let (min, max) = (nix::libc::SIGRTMIN(), nix::libc::SIGRTMAX());
        let too_high = parse_signal(&(max + 1).to_string());
        assert_eq!(
            too_high,
            Err(format!(
                "invalid signal number {}: expected a number from 1 to {max}",
                max + 1
            ))
        );
        assert!(parse_signal(&format!("RTMIN+{}", max - min + 1)).is_err());
        assert!(parse_signal(&format!("RTMAX-{}", max - min + 1)).is_err());
        assert!(parse_signal("RTMIN-1").is_err());
        assert!(parse_signal("RTMAX+1").is_err());
        assert!(parse_signal("RTMIN+").is_err());
        assert!(parse_signal("RTMINX").is_err());
        let unknown = parse_signal("NOPE").expect_err("unknown name");
        assert!(unknown.contains(&format!("1 to {max}")), "{unknown}");
    }

    #[test]
    fn state_dir_becomes_absolute() {
        let current = std::env::current_dir().expect("current folder");
        assert_eq!(parse_absolute_dir("rel"), Ok(current.join("rel")));
        assert_eq!(parse_absolute_dir("/tmp/x"), Ok(PathBuf::from("/tmp/x")));
        assert!(parse_absolute_dir("").is_err());
    }

    #[test]
    fn user_accepts_uid_and_gid() {
        assert_eq!(parse_user("1000"), Ok((1000, 1000)));
        assert_eq!(parse_user("1000:100"), Ok((1000, 100)));
        assert!(parse_user("nobody").is_err());
    }

    #[test]
    fn env_needs_a_key() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".to_owned(), "b=c".to_owned())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("plain").is_err());
    }

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
