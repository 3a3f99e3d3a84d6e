//! Printing results: aligned columns for people, JSON for scripts.

use std::io::Write as _;
use std::time::SystemTime;

use serde::Serialize;

use crate::cli::Format;
use crate::error::CliError;

/// Rows with a header, printed as aligned columns or as a JSON array of objects.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    records: Vec<serde_json::Value>,
}

impl Table {
    /// Starts a table with these column names.
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            ..Self::default()
        }
    }

    /// Adds a row: `cells` for the table and `record` for JSON.
    pub fn push(&mut self, cells: Vec<String>, record: serde_json::Value) {
        self.rows.push(cells);
        self.records.push(record);
    }

    /// Prints the table to stdout in `format`.
    pub fn print(&self, format: Format) -> Result<(), CliError> {
        match format {
            Format::Table => write_stdout(&self.render()),
            Format::Json => print_json(&self.records),
        }
    }

    /// Renders the rows as columns separated by at least three spaces, like ctr's tables.
    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|name| name.len()).collect();
        for row in &self.rows {
            for (index, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(index) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let header: Vec<String> = self.header.iter().map(|name| (*name).to_owned()).collect();
        let mut text = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (index, cell) in row.iter().enumerate() {
                let is_last = index + 1 == row.len();
                if is_last {
                    line.push_str(cell);
                } else {
                    let width = widths.get(index).copied().unwrap_or_default();
                    line.push_str(&format!("{cell:<width$}   "));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Prints `value` as one line of JSON on stdout.
pub fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string(value)
        .map_err(|error| CliError::io("encode JSON for", "stdout", error.into()))?;
    write_stdout(&format!("{text}\n"))
}

/// Writes `text` to stdout and flushes it, so lines reach a pipe at once.
pub fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|error| CliError::io("write to", "stdout", error))
}

/// Formats a time as RFC 3339 in UTC with milliseconds, such as `2026-01-02T03:04:05.678Z`.
pub fn rfc3339(time: SystemTime) -> String {
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
    use std::time::Duration;

    use super::*;

    #[test]
    fn columns_align_to_widest_cell() {
        let mut table = Table::new(&["CONTAINER", "PID", "STATUS"]);
        table.push(
            vec!["a".to_owned(), "12345".to_owned(), "running".to_owned()],
            serde_json::Value::Null,
        );
        table.push(
            vec![
                "longer-name".to_owned(),
                "7".to_owned(),
                "stopped".to_owned(),
            ],
            serde_json::Value::Null,
        );
        let expected = "CONTAINER     PID     STATUS\n\
                        a             12345   running\n\
                        longer-name   7       stopped\n";
        assert_eq!(table.render(), expected);
    }

    #[test]
    fn rfc3339_formats_utc_with_millis() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_251_200_123);
        assert_eq!(rfc3339(time), "2024-03-01T00:00:00.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
