//! Recognising containerd defects that a test must tell apart from keel bugs.

use std::error::Error;

/// Reports whether `error`, or one of its sources, is containerd refusing a task because an
/// old task bundle folder of the same container id is still there.
///
/// containerd 1.6.20 killed while it creates a task can leave the task's bundle folder behind
/// with no task record, so status and delete requests return not found. From then on every
/// task create for that container id fails with "failed to start shim: mkdir <bundle>: file
/// exists", whoever sends it, until the folder is removed by hand, because no containerd
/// request removes it. containerd 1.7.24 returned the same error once, but the folder was gone
/// a few seconds later.
pub fn is_stale_task_bundle(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        let text = error.to_string();
        if text.contains("failed to start shim: mkdir") && text.contains("file exists") {
            return true;
        }
        current = error.source();
    }
    false
}

/// Reports whether a containerd of `version` (such as `1.7.24~ds1`) deletes, when it starts, a
/// task whose process exited while containerd was down, so the exit status is lost.
///
/// containerd 1.7 loads each shim it finds and deletes the ones that report no process,
/// because it takes them for shims whose task was never created. A shim whose task already
/// exited reports none either, so it is deleted, and its exit event, queued while containerd
/// was down, is lost with it.
/// containerd 1.6 keeps such a task stopped, with its exit status. Seen with 1.6.20 and
/// 1.7.24; later versions are assumed to behave like 1.7.
pub fn loses_exits_across_restart(version: &str) -> bool {
    let mut numbers = version
        .split(|character: char| !character.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    (major, minor) >= (1, 7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_one_seven_lose_exits() {
        assert!(!loses_exits_across_restart("1.6.20~ds1"));
        assert!(loses_exits_across_restart("1.7.24~ds1"));
        assert!(loses_exits_across_restart("v2.0.0"));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("create task failed")]
    struct Wrapper(#[source] std::io::Error);

    #[test]
    fn stale_bundle_found_in_source_chain() {
        let status = std::io::Error::other(
            "failed to start shim: mkdir /tmp/x/state/io.containerd.runtime.v2.task/ns/a: file exists",
        );
        assert!(is_stale_task_bundle(&Wrapper(status)));
    }

    #[test]
    fn other_errors_are_not_stale_bundles() {
        let status = std::io::Error::other("failed to start shim: permission denied");
        assert!(!is_stale_task_bundle(&Wrapper(status)));
    }
}
