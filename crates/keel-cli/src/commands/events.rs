//! `keel events`: print container events as they happen, until interrupted.

use std::collections::BTreeSet;

use keel::{ContainerEvent, Event, NamespaceEvent};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{EventsArgs, Format, GlobalOptions};
use crate::connect::{IgnoreEvents, connect};
use crate::error::CliError;
use crate::output::{print_json, rfc3339, write_stdout};

/// Prints the events of every container of the namespace (or of those named) until SIGINT
/// or SIGTERM, whichever client caused them.
pub async fn events(global: &GlobalOptions, args: EventsArgs) -> Result<(), CliError> {
    // An id that no container can have would filter out every event without a word.
    for id in &args.ids {
        keel::ContainerId::new(id)?;
    }
    let filter: BTreeSet<String> = args.ids.into_iter().collect();
    let session = connect(global, IgnoreEvents).await?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|error| CliError::io("listen for", "SIGINT", error))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|error| CliError::io("listen for", "SIGTERM", error))?;
    let mut subscription = session.client.subscribe()?;
    let result = loop {
        let next = tokio::select! {
            _ = interrupt.recv() => break Ok(()),
            _ = terminate.recv() => break Ok(()),
            next = subscription.next() => next,
        };
        let printed = match next {
            Some(NamespaceEvent::Event(event)) => {
                if !filter.is_empty() && !filter.contains(event.container_id.as_str()) {
                    continue;
                }
                match global.format {
                    Format::Json => print_json(&event),
                    Format::Table => write_stdout(&event_line(&event)),
                }
            }
            Some(NamespaceEvent::Gap) => {
                eprintln!(
                    "keel: the event stream to containerd broke; events published meanwhile are not shown"
                );
                Ok(())
            }
            Some(NamespaceEvent::Lagged { missed }) => {
                eprintln!("keel: fell behind and skipped {missed} events");
                Ok(())
            }
            Some(_) => Ok(()),
            None => break Ok(()),
        };
        if let Err(error) = printed {
            break Err(error);
        }
    };
    session.close().await;
    result
}

/// Formats one event as `<time>  <container>  <what happened>`.
fn event_line(event: &ContainerEvent) -> String {
    let what = match &event.event {
        Event::Created { pid } => format!("created pid={pid}"),
        Event::Started { pid } => format!("started pid={pid}"),
        Event::ExecAdded { exec_id } => format!("exec-added exec_id={exec_id}"),
        Event::ExecStarted { exec_id, pid } => format!("exec-started exec_id={exec_id} pid={pid}"),
        Event::Exited {
            process,
            pid,
            status,
            synthetic,
        } => {
            let mut text = format!("exited process={process} pid={pid} code={}", status.code);
            if let Some(reason) = synthetic {
                text.push_str(&format!(" synthetic={reason:?}"));
            }
            text
        }
        Event::OutOfMemory => "oom".to_owned(),
        Event::Paused => "paused".to_owned(),
        Event::Resumed => "resumed".to_owned(),
        Event::Checkpointed => "checkpointed".to_owned(),
        Event::Deleted { pid, status } => match status {
            Some(status) => format!("deleted pid={pid} code={}", status.code),
            None => format!("deleted pid={pid}"),
        },
        other => format!("{other:?}"),
    };
    format!(
        "{}  {}  {what}\n",
        rfc3339(event.timestamp),
        event.container_id
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use keel::{ContainerId, ExitStatus, ProcessId};

    use super::*;

    #[test]
    fn exit_line_names_process_pid_and_code() {
        let timestamp = SystemTime::UNIX_EPOCH + Duration::from_secs(60);
        let event = ContainerEvent {
            container_id: ContainerId::new("web").expect("valid id"),
            event: Event::Exited {
                process: ProcessId::Init,
                pid: 42,
                status: ExitStatus {
                    code: 3,
                    exited_at: timestamp,
                },
                synthetic: None,
            },
            timestamp,
        };
        assert_eq!(
            event_line(&event),
            "1970-01-01T00:01:00.000Z  web  exited process=init pid=42 code=3\n"
        );
    }
}
