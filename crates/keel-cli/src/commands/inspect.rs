//! `keel ps`, `keel stats` and `keel top`: what containers and their tasks are doing.

use std::time::SystemTime;

use keel::ProcessStatus;
use serde_json::json;

use crate::cli::{Format, GlobalOptions};
use crate::commands::task::load_task;
use crate::connect::{IgnoreEvents, connect};
use crate::error::CliError;
use crate::output::{Table, print_json, rfc3339};

/// Prints every container of the namespace with its task's pid and status and its runtime,
/// whichever client created it.
pub async fn ps(global: &GlobalOptions) -> Result<(), CliError> {
    let session = connect(global, IgnoreEvents).await?;
    let listed = session.client.list_containers().await;
    session.close().await;
    let mut table = Table::new(&["CONTAINER", "PID", "STATUS", "RUNTIME"]);
    for container in listed? {
        let (pid, status) = match &container.task {
            Some(task) => (Some(task.pid), status_text(&task.status)),
            None => (None, "no task".to_owned()),
        };
        let exit = container.task.as_ref().and_then(|task| match task.status {
            ProcessStatus::Stopped(exit) => Some(exit),
            _ => None,
        });
        let record = json!({
            "id": container.id,
            "pid": pid,
            "status": status,
            "exit_code": exit.map(|exit| exit.code),
            "exited_at": exit.and_then(|exit| known_time(exit.exited_at)).map(rfc3339),
            "runtime": container.runtime,
            "image": container.image,
            "labels": container.labels,
            "created_at": container.created_at.map(rfc3339),
        });
        let pid_text = pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string());
        table.push(
            vec![
                container.id.to_string(),
                pid_text,
                status,
                container.runtime,
            ],
            record,
        );
    }
    table.print(global.format)
}

/// Returns `time`, or `None` for a time at or before the Unix epoch, such as Go's zero time
/// (year 1), which a time field that containerd never set converts to.
fn known_time(time: SystemTime) -> Option<SystemTime> {
    (time > SystemTime::UNIX_EPOCH).then_some(time)
}

/// Names a process status as ctr does, with the exit code of a stopped process.
fn status_text(status: &ProcessStatus) -> String {
    match status {
        ProcessStatus::Created => "created".to_owned(),
        ProcessStatus::Running => "running".to_owned(),
        ProcessStatus::Paused => "paused".to_owned(),
        ProcessStatus::Pausing => "pausing".to_owned(),
        ProcessStatus::Stopped(exit) => format!("stopped (exit {})", exit.code),
        _ => "unknown".to_owned(),
    }
}

/// Prints the resource usage of a container's task.
pub async fn stats(global: &GlobalOptions, id: &str) -> Result<(), CliError> {
    let session = connect(global, IgnoreEvents).await?;
    let result = async {
        let container = session.client.load_container(id).await?;
        let task = load_task(&container, "stats").await?;
        Ok::<_, CliError>(task.stats().await?)
    }
    .await;
    session.close().await;
    let stats = result?;
    // cgroup v1 reports "no limit" as the largest page-aligned i64, and v2 as 0 or the maximum.
    let limit_bytes = match stats.memory.limit_bytes {
        0 | u64::MAX => None,
        bytes if bytes >= i64::MAX as u64 / 2 => None,
        bytes => Some(bytes),
    };
    if global.format == Format::Json {
        let mut record = serde_json::to_value(&stats)
            .map_err(|error| CliError::io("encode JSON for", "stdout", error.into()))?;
        record["id"] = json!(id);
        record["memory"]["limit_bytes"] = json!(limit_bytes);
        return print_json(&record);
    }
    let mut table = Table::new(&["CONTAINER", "CPU SECONDS", "MEMORY", "LIMIT", "PIDS"]);
    let cpu_seconds = format!("{:.3}", stats.cpu.usage_ns as f64 / 1e9);
    let limit = limit_bytes.map_or_else(|| "-".to_owned(), human_bytes);
    table.push(
        vec![
            id.to_owned(),
            cpu_seconds,
            human_bytes(stats.memory.usage_bytes),
            limit,
            stats.pids.current.to_string(),
        ],
        serde_json::Value::Null,
    );
    table.print(global.format)
}

/// Prints the processes of a container's task.
pub async fn top(global: &GlobalOptions, id: &str) -> Result<(), CliError> {
    let session = connect(global, IgnoreEvents).await?;
    let result = async {
        let container = session.client.load_container(id).await?;
        let task = load_task(&container, "top").await?;
        Ok::<_, CliError>(task.processes().await?)
    }
    .await;
    session.close().await;
    let processes = result?;
    let mut table = Table::new(&["PID", "EXEC ID"]);
    for process in processes {
        let exec_id = process
            .exec_id
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string);
        let record = json!({ "pid": process.pid, "exec_id": process.exec_id });
        table.push(vec![process.pid.to_string(), exec_id], record);
    }
    table.print(global.format)
}

/// Formats a byte count with a binary unit, such as `1.5MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(64 << 20), "64.0MiB");
    }
}
