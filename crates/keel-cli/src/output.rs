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
    humantime::format_rfc3339_millis(time).to_string()
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
