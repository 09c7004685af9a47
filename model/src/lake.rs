//! The lake's layout: `events/<table>/date=YYYY-MM-DD/<writer-id>-<ulid>.parquet`.

use chrono::NaiveDate;

/// Folder of all event tables, relative to the lake root.
pub const EVENTS_DIR: &str = "events";

/// `events/<table>`.
pub fn table_dir(table: &str) -> String {
    format!("{EVENTS_DIR}/{table}")
}

/// `events/<table>/date=YYYY-MM-DD`.
pub fn partition_dir(table: &str, date: NaiveDate) -> String {
    format!("{EVENTS_DIR}/{table}/date={}", date.format("%Y-%m-%d"))
}

/// `events/<table>/date=YYYY-MM-DD/<file_stem>.parquet`.
pub fn data_file(table: &str, date: NaiveDate, file_stem: &str) -> String {
    format!("{}/{file_stem}.parquet", partition_dir(table, date))
}

/// Parses the date of a `date=YYYY-MM-DD` path segment.
pub fn parse_partition(segment: &str) -> Option<NaiveDate> {
    let d = segment.strip_prefix("date=")?;
    NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()
}

/// A writer id must be safe in a file name and must not contain `-` runs that could
/// be confused with the ulid suffix: ASCII letters, digits and `_`.
pub fn valid_writer_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let d = NaiveDate::from_ymd_opt(2026, 3, 9).expect("date");
        assert_eq!(
            data_file("sends", d, "w1-01ABC"),
            "events/sends/date=2026-03-09/w1-01ABC.parquet"
        );
        assert_eq!(parse_partition("date=2026-03-09"), Some(d));
        assert_eq!(parse_partition("date=2026-3-9x"), None);
        assert!(valid_writer_id("node_1"));
        assert!(!valid_writer_id("a/b"));
    }
}
