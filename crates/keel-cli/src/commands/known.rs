//! The containers of a namespace that have a bundle folder in keel's client folder.
//!
//! NOTE: the keel facade has no call that lists containerd's containers yet. So `keel ps` and
//! `keel events` see only the containers whose bundle folders exist under keel's client
//! folder, which are those created through keel with the same `--state-dir`. Containers of
//! other clients of the same containerd are missing.

use crate::connect::Paths;

/// Lists the ids of the containers that have a bundle folder in `namespace`, sorted.
pub fn known_container_ids(paths: &Paths, namespace: &str) -> Vec<String> {
    let folder = paths.client_dir.join(namespace);
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|file_type| file_type.is_dir()))
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter(|id| keel::ContainerId::new(id.as_str()).is_ok())
        .collect();
    ids.sort();
    ids
}
