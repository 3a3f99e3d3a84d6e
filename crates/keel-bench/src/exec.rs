//! Exec latency: `/bin/true` run with exec in a running container, through keel's facade.

use std::time::Duration;

use keel::StdioRequest;

use crate::Env;
use crate::stats::Samples;
use crate::workload::{start_sleepers, stop_sleepers, timed};

/// Runs `warmup` unrecorded and then `count` recorded execs of `/bin/true` in one running
/// container: add, start, wait for the exit, delete. Returns the wall time of each.
pub async fn run(env: &Env, warmup: usize, count: usize) -> anyhow::Result<Samples> {
    let client = env.connect_keel().await?;
    let mut sleepers = start_sleepers(&client, &env.rootfs, "exec", 0, 1, 1).await?;
    let mut samples = Samples::default();
    let result = async {
        let task = &sleepers[0].task;
        for index in 0..warmup + count {
            let (outcome, elapsed) = timed(exec_once(task, index)).await;
            outcome?;
            if index >= warmup {
                samples.push(elapsed);
            }
        }
        anyhow::Ok(())
    }
    .await;
    stop_sleepers(std::mem::take(&mut sleepers), 1).await?;
    client.shutdown(Duration::from_secs(5)).await;
    result.map(|()| samples)
}

async fn exec_once(task: &keel::Task, index: usize) -> anyhow::Result<()> {
    let process = keel::spec::exec_process(["/bin/true"]);
    let mut exec = task
        .exec(&format!("true-{index}"), process, StdioRequest::default())
        .await?;
    exec.start().await?;
    let status = exec.wait().await?;
    exec.delete().await?;
    anyhow::ensure!(status.code == 0, "exec exited with {}", status.code);
    Ok(())
}
