//! Read-only requests of the container actor: statistics, process list, status.

use std::time::SystemTime;

use containerd_client::services::v1::{GetRequest, ListPidsRequest, MetricsRequest};
use keel_types::{
    Error, ErrorKind, ExecId, Operation, ProcessId, ProcessInfo, ProcessStatus, Stats,
};

use crate::actor::{ContainerState, exec_id_text};
use crate::listing::process_status;
use crate::metrics::decode_metrics;
use crate::runtime::ProcessDetails;

impl ContainerState {
    pub(crate) async fn stats(&self) -> Result<Stats, Error> {
        let request = MetricsRequest {
            filters: vec![format!("id=={}", self.container_id)],
        };
        let mut tasks = self.services.tasks();
        let response = self.call(Operation::Stats, tasks.metrics(request)).await?;
        let Some(metric) = response
            .metrics
            .into_iter()
            .find(|metric| metric.id == self.container_id.as_str())
        else {
            return Err(self.rejected(
                Operation::Stats,
                ErrorKind::NotFound,
                "the container has no running task",
            ));
        };
        let Some(data) = metric.data else {
            return Err(self.rejected(
                Operation::Stats,
                ErrorKind::Internal,
                "containerd sent metrics without data",
            ));
        };
        let collected_at = metric
            .timestamp
            .and_then(|timestamp| SystemTime::try_from(timestamp).ok())
            .unwrap_or_else(SystemTime::now);
        decode_metrics(&data, collected_at).map_err(|error| {
            self.rejected(Operation::Stats, ErrorKind::Internal, &error.to_string())
        })
    }

    pub(crate) async fn processes(&self) -> Result<Vec<ProcessInfo>, Error> {
        let request = ListPidsRequest {
            container_id: self.container_id.to_string(),
        };
        let mut tasks = self.services.tasks();
        let response = self
            .call(Operation::ListProcesses, tasks.list_pids(request))
            .await?;
        let processes = response
            .processes
            .into_iter()
            .map(|process| ProcessInfo {
                pid: process.pid,
                exec_id: process
                    .info
                    .as_ref()
                    .and_then(ProcessDetails::from_any)
                    .and_then(|details| ExecId::new(details.exec_id).ok()),
            })
            .collect();
        Ok(processes)
    }

    pub(crate) async fn status(&self, process: &ProcessId) -> Result<ProcessStatus, Error> {
        let request = GetRequest {
            container_id: self.container_id.to_string(),
            exec_id: exec_id_text(process),
        };
        let mut tasks = self.services.tasks();
        let response = self
            .call_for(Operation::Status, process, tasks.get(request))
            .await?;
        let Some(info) = response.process else {
            return Err(self.rejected_for(
                Operation::Status,
                process,
                ErrorKind::NotFound,
                "no such process",
            ));
        };
        let status = process_status(&info);
        Ok(status)
    }

    /// Turns an internal error of a request about `process` into failed precondition with
    /// `reason` when the init process is in a state `wrong_state` accepts. runc reports
    /// requests in the wrong state, such as resuming a running task or an exec into a paused
    /// one, as unknown errors, so containerd's view of the task decides.
    pub(crate) async fn precondition_error(
        &self,
        error: Error,
        operation: Operation,
        process: &ProcessId,
        wrong_state: fn(&ProcessStatus) -> bool,
        reason: &str,
    ) -> Error {
        if error.kind() != ErrorKind::Internal {
            return error;
        }
        match self.status(&ProcessId::Init).await {
            Ok(status) if wrong_state(&status) => {
                self.rejected_for(operation, process, ErrorKind::FailedPrecondition, reason)
            }
            _ => error,
        }
    }
}
