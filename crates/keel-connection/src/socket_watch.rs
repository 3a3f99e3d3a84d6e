//! Watches containerd's socket folder so a restarted containerd is noticed the moment its
//! socket appears, not at the next backoff tick.

use std::path::Path;

use futures::StreamExt;
use inotify::{Inotify, WatchMask};

/// Calls `on_created` each time a file named like `socket` is created in its folder.
///
/// Returns when the folder cannot be watched; the caller then relies on backoff alone.
pub(crate) async fn watch_socket(socket: &Path, on_created: impl Fn()) -> std::io::Result<()> {
    let (Some(folder), Some(name)) = (socket.parent(), socket.file_name()) else {
        return Err(std::io::Error::other("socket path has no folder"));
    };
    let inotify = Inotify::init()?;
    inotify
        .watches()
        .add(folder, WatchMask::CREATE | WatchMask::MOVED_TO)?;
    let mut events = inotify.into_event_stream([0_u8; 1024])?;

    while let Some(event) = events.next().await {
        if event?.name.as_deref() == Some(name) {
            on_created();
        }
    }
    Ok(())
}
