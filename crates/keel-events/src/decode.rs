//! Decoding of event envelopes.
//!
//! containerd names event types without the leading `type.googleapis.com/` host and with no
//! leading slash (`containerd.events.TaskExit`), which prost's `Any::to_msg` rejects, so the
//! type URL is matched here and the payload decoded directly.

use std::time::SystemTime;

use containerd_client::events::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOom,
    TaskPaused, TaskResumed, TaskStart,
};
use containerd_client::types::Envelope;
use keel_types::{ContainerEvent, ContainerId, Event, ExecId, ExitStatus, ProcessId};
use prost::Message;

/// Why an envelope could not be turned into an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The envelope carries no payload.
    #[error("envelope on topic {topic:?} has no event")]
    MissingEvent {
        /// The envelope's topic.
        topic: String,
    },
    /// The payload's bytes do not decode as the type its URL names.
    #[error("event of type {type_url:?} is malformed")]
    Malformed {
        /// The payload's type URL.
        type_url: String,
        /// prost's error.
        #[source]
        source: prost::DecodeError,
    },
    /// A container or exec id in the payload breaks containerd's identifier rule.
    #[error("event of type {type_url:?} carries an invalid id")]
    InvalidId {
        /// The payload's type URL.
        type_url: String,
        /// The validation error.
        #[source]
        source: keel_types::Error,
    },
}

/// Decodes one envelope.
///
/// Returns `Ok(None)` for task events keel does not report (`TaskIO`) and for types it does
/// not know, so a newer containerd's additions are skipped rather than fatal.
///
/// # Errors
///
/// Returns [`DecodeError`] for an envelope without payload, a payload that does not decode, or
/// an invalid id.
pub fn decode_envelope(envelope: &Envelope) -> Result<Option<ContainerEvent>, DecodeError> {
    let Some(any) = &envelope.event else {
        return Err(DecodeError::MissingEvent {
            topic: envelope.topic.clone(),
        });
    };
    let type_url = any.type_url.trim_start_matches('/');
    let type_name = type_url.rsplit('/').next().unwrap_or(type_url);
    let timestamp = envelope
        .timestamp
        .and_then(|timestamp| SystemTime::try_from(timestamp).ok())
        .unwrap_or_else(SystemTime::now);
    let payload = any.value.as_slice();
    let decoded = match type_name {
        "containerd.events.TaskCreate" => decode::<TaskCreate>(type_name, payload)
            .map(|event| (event.container_id, Event::Created { pid: event.pid })),
        "containerd.events.TaskStart" => decode::<TaskStart>(type_name, payload)
            .map(|event| (event.container_id, Event::Started { pid: event.pid })),
        "containerd.events.TaskExit" => {
            let event = decode::<TaskExit>(type_name, payload)?;
            let process = process_of(type_name, &event.container_id, &event.id)?;
            let status = ExitStatus {
                code: event.exit_status,
                exited_at: system_time(event.exited_at, timestamp),
            };
            Ok((
                event.container_id,
                Event::Exited {
                    process,
                    pid: event.pid,
                    status,
                    synthetic: None,
                },
            ))
        }
        "containerd.events.TaskDelete" => {
            let event = decode::<TaskDelete>(type_name, payload)?;
            let status = ExitStatus {
                code: event.exit_status,
                exited_at: system_time(event.exited_at, timestamp),
            };
            Ok((
                event.container_id,
                Event::Deleted {
                    pid: event.pid,
                    status: Some(status),
                },
            ))
        }
        "containerd.events.TaskOOM" => decode::<TaskOom>(type_name, payload)
            .map(|event| (event.container_id, Event::OutOfMemory)),
        "containerd.events.TaskExecAdded" => {
            let event = decode::<TaskExecAdded>(type_name, payload)?;
            let exec_id = exec_id_of(type_name, event.exec_id)?;
            Ok((event.container_id, Event::ExecAdded { exec_id }))
        }
        "containerd.events.TaskExecStarted" => {
            let event = decode::<TaskExecStarted>(type_name, payload)?;
            let exec_id = exec_id_of(type_name, event.exec_id)?;
            let pid = event.pid;
            Ok((event.container_id, Event::ExecStarted { exec_id, pid }))
        }
        "containerd.events.TaskPaused" => decode::<TaskPaused>(type_name, payload)
            .map(|event| (event.container_id, Event::Paused)),
        "containerd.events.TaskResumed" => decode::<TaskResumed>(type_name, payload)
            .map(|event| (event.container_id, Event::Resumed)),
        "containerd.events.TaskCheckpointed" => decode::<TaskCheckpointed>(type_name, payload)
            .map(|event| (event.container_id, Event::Checkpointed)),
        _ => return Ok(None),
    };
    let (container_id, event) = decoded?;
    let container_id = ContainerId::new(container_id).map_err(|source| DecodeError::InvalidId {
        type_url: type_name.to_owned(),
        source,
    })?;
    Ok(Some(ContainerEvent {
        container_id,
        event,
        timestamp,
    }))
}

fn decode<M: Message + Default>(type_url: &str, payload: &[u8]) -> Result<M, DecodeError> {
    M::decode(payload).map_err(|source| DecodeError::Malformed {
        type_url: type_url.to_owned(),
        source,
    })
}

/// Turns containerd's process id into a [`ProcessId`]: the init process is reported with an
/// empty id or with the container's own id.
fn process_of(type_url: &str, container_id: &str, id: &str) -> Result<ProcessId, DecodeError> {
    if id.is_empty() || id == container_id {
        return Ok(ProcessId::Init);
    }
    exec_id_of(type_url, id.to_owned()).map(ProcessId::Exec)
}

fn exec_id_of(type_url: &str, exec_id: String) -> Result<ExecId, DecodeError> {
    ExecId::new(exec_id).map_err(|source| DecodeError::InvalidId {
        type_url: type_url.to_owned(),
        source,
    })
}

fn system_time(timestamp: Option<prost_types::Timestamp>, fallback: SystemTime) -> SystemTime {
    timestamp
        .and_then(|timestamp| SystemTime::try_from(timestamp).ok())
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{Any, Timestamp};

    fn envelope(type_url: &str, value: Vec<u8>) -> Envelope {
        Envelope {
            timestamp: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            namespace: "default".to_owned(),
            topic: "/tasks/exit".to_owned(),
            event: Some(Any {
                type_url: type_url.to_owned(),
                value,
            }),
        }
    }

    #[test]
    fn exit_of_init_process_decodes() {
        let exit = TaskExit {
            container_id: "web".to_owned(),
            id: "web".to_owned(),
            pid: 42,
            exit_status: 3,
            exited_at: Some(Timestamp {
                seconds: 1_700_000_001,
                nanos: 0,
            }),
        };
        let decoded = decode_envelope(&envelope(
            "containerd.events.TaskExit",
            exit.encode_to_vec(),
        ))
        .expect("decodes")
        .expect("is reported");
        assert_eq!(decoded.container_id.as_str(), "web");
        let Event::Exited {
            process,
            pid,
            status,
            synthetic,
        } = decoded.event
        else {
            panic!("expected an exit, got {:?}", decoded.event);
        };
        assert_eq!(process, ProcessId::Init);
        assert_eq!(pid, 42);
        assert_eq!(status.code, 3);
        assert_eq!(synthetic, None);
    }

    #[test]
    fn delete_carries_exit_status() {
        let delete = TaskDelete {
            container_id: "web".to_owned(),
            id: "web".to_owned(),
            pid: 42,
            exit_status: 137,
            exited_at: Some(Timestamp {
                seconds: 1_700_000_002,
                nanos: 0,
            }),
        };
        let decoded = decode_envelope(&envelope(
            "containerd.events.TaskDelete",
            delete.encode_to_vec(),
        ))
        .expect("decodes")
        .expect("is reported");
        let Event::Deleted { pid, status } = decoded.event else {
            panic!("expected a delete, got {:?}", decoded.event);
        };
        assert_eq!(pid, 42);
        let status = status.expect("status");
        assert_eq!(status.code, 137);
        assert_eq!(
            status.exited_at,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_002)
        );
    }

    #[test]
    fn exit_of_exec_process_names_exec() {
        let exit = TaskExit {
            container_id: "web".to_owned(),
            id: "probe".to_owned(),
            pid: 43,
            exit_status: 0,
            exited_at: None,
        };
        let decoded = decode_envelope(&envelope(
            "containerd.events.TaskExit",
            exit.encode_to_vec(),
        ))
        .expect("decodes")
        .expect("is reported");
        let Event::Exited { process, .. } = decoded.event else {
            panic!("expected an exit");
        };
        assert_eq!(
            process,
            ProcessId::Exec(ExecId::new("probe").expect("valid"))
        );
    }

    #[test]
    fn type_url_with_host_or_slash_decodes() {
        let start = TaskStart {
            container_id: "web".to_owned(),
            pid: 7,
        };
        for type_url in [
            "/containerd.events.TaskStart",
            "type.googleapis.com/containerd.events.TaskStart",
        ] {
            let decoded = decode_envelope(&envelope(type_url, start.encode_to_vec()))
                .expect("decodes")
                .expect("is reported");
            assert_eq!(decoded.event, Event::Started { pid: 7 });
        }
    }

    #[test]
    fn malformed_payload_is_an_error() {
        let result = decode_envelope(&envelope("containerd.events.TaskExit", vec![0xff, 0xff]));
        assert!(
            matches!(result, Err(DecodeError::Malformed { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn invalid_container_id_is_an_error() {
        let start = TaskStart {
            container_id: "../etc".to_owned(),
            pid: 7,
        };
        let result = decode_envelope(&envelope(
            "containerd.events.TaskStart",
            start.encode_to_vec(),
        ));
        assert!(
            matches!(result, Err(DecodeError::InvalidId { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn unknown_type_is_skipped() {
        let result = decode_envelope(&envelope("containerd.events.TaskIO", Vec::new()));
        assert!(matches!(result, Ok(None)), "{result:?}");
    }

    #[test]
    fn missing_payload_is_an_error() {
        let mut envelope = envelope("containerd.events.TaskExit", Vec::new());
        envelope.event = None;
        assert!(matches!(
            decode_envelope(&envelope),
            Err(DecodeError::MissingEvent { .. })
        ));
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use prost_types::Any;

    use super::*;

    const TYPE_URLS: [&str; 12] = [
        "containerd.events.TaskCreate",
        "containerd.events.TaskStart",
        "containerd.events.TaskExit",
        "containerd.events.TaskDelete",
        "containerd.events.TaskOOM",
        "containerd.events.TaskExecAdded",
        "containerd.events.TaskExecStarted",
        "containerd.events.TaskPaused",
        "containerd.events.TaskResumed",
        "containerd.events.TaskCheckpointed",
        "containerd.events.TaskIO",
        "other.Type",
    ];

    proptest! {
        #[test]
        fn arbitrary_payload_never_panics(
            type_index in 0..TYPE_URLS.len(),
            value in proptest::collection::vec(any::<u8>(), 0..256),
            seconds in any::<i64>(),
            nanos in any::<i32>(),
        ) {
            let envelope = Envelope {
                timestamp: Some(prost_types::Timestamp { seconds, nanos }),
                namespace: "default".to_owned(),
                topic: "/tasks/exit".to_owned(),
                event: Some(Any { type_url: TYPE_URLS[type_index].to_owned(), value }),
            };
            let _ = decode_envelope(&envelope);
        }

        #[test]
        fn decoded_ids_are_valid(container_id in "\\PC{0,90}", exec_id in "\\PC{0,90}") {
            let exit = TaskExit { container_id, id: exec_id, ..TaskExit::default() };
            let envelope = Envelope {
                timestamp: None,
                namespace: "default".to_owned(),
                topic: "/tasks/exit".to_owned(),
                event: Some(Any {
                    type_url: "containerd.events.TaskExit".to_owned(),
                    value: exit.encode_to_vec(),
                }),
            };
            if let Ok(Some(event)) = decode_envelope(&envelope) {
                prop_assert!(ContainerId::new(event.container_id.as_str()).is_ok());
            }
        }
    }
}
