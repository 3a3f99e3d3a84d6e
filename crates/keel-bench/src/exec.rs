//! Exec latency: `/bin/true` run with exec in a running container, through keel's facade and
//! through the Go client, interleaved.

use std::time::Duration;

use keel::StdioRequest;

use crate::Env;
use crate::stats::Samples;
use crate::workload::{start_sleepers, stop_sleepers, timed};

/// The figures of the exec benchmark.
#[derive(Debug)]
pub struct ExecResults {
    /// Wall time of keel's execs.
    pub keel: Samples,
    /// Wall time of the Go client's execs, measured inside the Go process, or why they were
    /// not measured.
    pub go: Result<Samples, String>,
}

/// Runs `warmup` unrecorded and then `count` recorded execs of `/bin/true` per client, each
/// client in its own running container: add, start, wait for the exit, delete. keel and Go
/// alternate which goes first.
pub async fn run(env: &Env, warmup: usize, count: usize) -> anyhow::Result<ExecResults> {
    let client = env.connect_keel().await?;
    let mut sleepers = start_sleepers(&client, &env.rootfs, "exec", 0, 1, 1).await?;
    let mut go = match &env.go {
        Ok(go) => {
            let namespace = env.containerd.new_namespace();
            go.execs(&namespace, warmup + count)
                .map_err(|error| format!("failed: {error:#}"))
        }
        Err(reason) => Err(reason.clone()),
    };
    let mut results = ExecResults {
        keel: Samples::default(),
        go: go
            .as_ref()
            .map(|_| Samples::default())
            .map_err(Clone::clone),
    };
    let outcome = async {
        let task = &sleepers[0].task;
        for index in 0..warmup + count {
            let record = index >= warmup;
            if index % 2 == 1 {
                run_go(&mut go, &mut results.go, record).await;
            }
            let (outcome, elapsed) = timed(exec_once(task, index)).await;
            outcome?;
            if record {
                results.keel.push(elapsed);
            }
            if index % 2 == 0 {
                run_go(&mut go, &mut results.go, record).await;
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Ok(go) = go
        && let Err(error) = go.finish().await
    {
        results.go = Err(format!("failed: {error:#}"));
    }
    stop_sleepers(std::mem::take(&mut sleepers), 1).await?;
    client.shutdown(Duration::from_secs(5)).await;
    outcome.map(|()| results)
}

/// Runs one Go exec and records it, or turns the column into the failure's message.
async fn run_go(
    go: &mut Result<crate::go::GoOnRequest, String>,
    column: &mut Result<Samples, String>,
    record: bool,
) {
    let (Ok(execs), Ok(samples)) = (go.as_mut(), column.as_mut()) else {
        return;
    };
    match execs.run_one().await {
        Ok(run) if record => samples.push_value(run.ms),
        Ok(_) => {}
        Err(error) => *column = Err(format!("failed: {error:#}")),
    }
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
