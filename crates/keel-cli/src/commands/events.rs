//! `keel events`: print container events as they happen, until interrupted.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use keel::{Backend, ContainerEvent, Event};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{EventsArgs, Format, GlobalOptions};
use crate::commands::known::known_container_ids;
use crate::connect::connect;
use crate::error::CliError;
use crate::output::{print_json, write_stdout};

/// How often the known containers are listed again, so new ones are followed too.
const RESCAN_INTERVAL: Duration = Duration::from_millis(250);

/// A backend that prints each event on one line, as text or JSON.
struct PrintEvents {
    format: Format,
    filter: BTreeSet<String>,
}

#[keel::async_trait]
impl Backend for PrintEvents {
    async fn handle_event(&self, event: ContainerEvent) {
        if !self.filter.is_empty() && !self.filter.contains(event.container_id.as_str()) {
            return;
        }
        let printed = match self.format {
            Format::Json => print_json(&event),
            Format::Table => write_stdout(&event_line(&event)),
        };
        if let Err(error) = printed {
            tracing::warn!(%error, "failed to print event");
        }
    }
}

/// Prints events until SIGINT or SIGTERM.
///
/// keel delivers the events of the containers a client tracks, so this loads every known
/// container (or those named) and loads new ones as they appear. The events of a container
/// created after the command started begin when it is found, at most a quarter second later,
/// so its `created` and `started` events can be missed.
pub async fn events(global: &GlobalOptions, args: EventsArgs) -> Result<(), CliError> {
    let filter: BTreeSet<String> = args.ids.iter().cloned().collect();
    let backend = PrintEvents {
        format: global.format,
        filter: filter.clone(),
    };
    let session = connect(global, backend).await?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|error| CliError::io("listen for", "SIGINT", error))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|error| CliError::io("listen for", "SIGTERM", error))?;
    let mut followed = BTreeSet::new();
    let mut rescan = tokio::time::interval(RESCAN_INTERVAL);
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = rescan.tick() => {
                for id in known_container_ids(&session.paths, &global.namespace) {
                    let wanted = filter.is_empty() || filter.contains(&id);
                    if wanted && !followed.contains(&id) && session.client.load_container(&id).await.is_ok() {
                        followed.insert(id);
                    }
                }
            }
        }
    }
    session.close().await;
    Ok(())
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
        Event::Deleted { pid } => format!("deleted pid={pid}"),
        other => format!("{other:?}"),
    };
    format!(
        "{}  {}  {what}\n",
        rfc3339(event.timestamp),
        event.container_id
    )
}

/// Formats a time as RFC 3339 in UTC with milliseconds, such as `2026-01-02T03:04:05.678Z`.
fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let days = i64::try_from(seconds / 86_400).unwrap_or_default();
    let (year, month, day) = civil_from_days(days);
    let second_of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_with_millis() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_251_200_123);
        assert_eq!(rfc3339(time), "2024-03-01T00:00:00.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
