//! The ingest pipeline on real files: flush failures, retries and restarts never lose or
//! duplicate a row.

use chatlake_ingest::lake::Lake;
use chatlake_ingest::{IngestOptions, Ingestor, Normalizer, generic};
use chatlake_model::{Event, Table, Ts};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

fn events(table: Table, json: &str) -> Vec<Event> {
    let norm = Normalizer::new("k", &Default::default(), "1");
    let recs = generic::split_records(json.as_bytes(), false).expect("records");
    generic::parse(table, &recs, &norm, Ts::now())
        .expect("parse")
        .events
}

fn rows_and_files(lake: &Path, table: &str) -> (usize, usize) {
    let mut rows = 0;
    let mut files = 0;
    let dir = lake.join("events").join(table);
    for part in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(part.path()).expect("part").flatten() {
            if f.path().extension().is_some_and(|e| e == "parquet") {
                files += 1;
                let r = ParquetRecordBatchReaderBuilder::try_new(
                    std::fs::File::open(f.path()).expect("open"),
                )
                .expect("parquet")
                .build()
                .expect("reader");
                rows += r.map(|b| b.expect("batch").num_rows()).sum::<usize>();
            }
        }
    }
    (rows, files)
}

#[tokio::test]
async fn a_flush_that_fails_part_way_is_retried_without_duplicates() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake_dir = dir.path().join("lake");
    let wal = dir.path().join("wal");
    let ing = Ingestor::open(Lake::local(&lake_dir), &wal, "w1", IngestOptions::default())
        .await
        .expect("open");
    let sends = r#"[{"message_id":"a","ts":1767600000,"phone":"+5511987654321","campaign_id":"c","template":"t","category":"marketing"},
                    {"message_id":"b","ts":1767600001,"phone":"+5511987654321","campaign_id":"c","template":"t","category":"marketing"}]"#;
    let statuses =
        r#"[{"message_id":"a","status":"read","ts":1767600000,"phone":"+5511987654321"}]"#;
    ing.submit(events(Table::Sends, sends))
        .await
        .expect("submit");
    ing.submit(events(Table::Statuses, statuses))
        .await
        .expect("submit");
    // `sends` is written first; `statuses` then fails.
    std::fs::create_dir_all(lake_dir.join("events")).expect("mkdir");
    std::fs::write(lake_dir.join("events/statuses"), b"blocked").expect("block");
    assert!(ing.flush().await.is_err());
    assert_eq!(
        rows_and_files(&lake_dir, "sends"),
        (2, 1),
        "the first file of the failed attempt exists"
    );
    // More events arrive, then the lake recovers.
    let more = r#"[{"message_id":"c","ts":1767600002,"phone":"+5511987654321","campaign_id":"c","template":"t","category":"marketing"}]"#;
    ing.submit(events(Table::Sends, more))
        .await
        .expect("submit");
    std::fs::remove_file(lake_dir.join("events/statuses")).expect("unblock");
    ing.flush().await.expect("flush");
    assert_eq!(
        rows_and_files(&lake_dir, "sends"),
        (3, 1),
        "the retry overwrote the partial file"
    );
    assert_eq!(rows_and_files(&lake_dir, "statuses"), (1, 1));
    ing.shutdown().await.expect("shutdown");
    // A restart replays nothing that already reached Parquet.
    let ing = Ingestor::open(Lake::local(&lake_dir), &wal, "w1", IngestOptions::default())
        .await
        .expect("reopen");
    assert_eq!(ing.buffered_rows(), 0);
    ing.flush().await.expect("flush");
    assert_eq!(rows_and_files(&lake_dir, "sends"), (3, 1));
}

#[tokio::test]
async fn an_interrupted_flush_is_finished_at_start_up() {
    let dir = tempfile::tempdir().expect("tmp");
    let lake_dir = dir.path().join("lake");
    let wal = dir.path().join("wal");
    let ing = Ingestor::open(Lake::local(&lake_dir), &wal, "w1", IngestOptions::default())
        .await
        .expect("open");
    let sends = r#"[{"message_id":"a","ts":1767600000,"phone":"+5511987654321","campaign_id":"c","template":"t","category":"marketing"}]"#;
    ing.submit(events(Table::Sends, sends))
        .await
        .expect("submit");
    let statuses =
        r#"[{"message_id":"a","status":"read","ts":1767600000,"phone":"+5511987654321"}]"#;
    ing.submit(events(Table::Statuses, statuses))
        .await
        .expect("submit");
    std::fs::create_dir_all(lake_dir.join("events")).expect("mkdir");
    std::fs::write(lake_dir.join("events/statuses"), b"blocked").expect("block");
    assert!(ing.flush().await.is_err());
    drop(ing); // like a crash: intent written, one file written, no checkpoint
    std::fs::remove_file(lake_dir.join("events/statuses")).expect("unblock");
    let ing = Ingestor::open(Lake::local(&lake_dir), &wal, "w1", IngestOptions::default())
        .await
        .expect("reopen");
    assert_eq!(
        ing.buffered_rows(),
        0,
        "the intent's records were written at start-up"
    );
    assert_eq!(rows_and_files(&lake_dir, "sends"), (1, 1));
    assert_eq!(rows_and_files(&lake_dir, "statuses"), (1, 1));
}
