//! Stores an older version filled read as they did once migrated.

use herald::analytics::latency_quantile;
use herald::storage::Storage;

use crate::common::{Fixture, secs, t0};

/// Rollups as a version before V20 (the 1-2-5 buckets) wrote them, in
/// the minute `minute` (the backend's literal): 10 deliveries, 4 of at
/// most 10 ms and 6 in (100, 250] ms, the longest 240 ms, and 10 queue
/// waits in (1, 5] s.
fn rollups_before_v20(minute: &str) -> String {
    format!(
        "INSERT INTO metrics_minutely (minute, transport, channel, category, sent,
             latency_count, latency_sum_ms, latency_max_ms, le_10, le_50, le_100,
             le_250, le_500, le_1000, le_2500, le_5000, le_10000,
             wait_count, wait_sum_ms, wait_max_ms, wait_le_1000, wait_le_5000,
             wait_le_15000, wait_le_60000, wait_le_300000, wait_le_900000,
             wait_le_3600000)
         VALUES ({minute}, 'mail', 'email', '', 10, 10, 1000, 240, 4, 4, 4, 10, 10, 10,
             10, 10, 10, 10, 30000, 4000, 0, 10, 10, 10, 10, 10, 10)"
    )
}

async fn rollups_before_the_finer_buckets_read_as_before(storage: &dyn Storage) {
    let rows = storage
        .minute_metrics(t0(), t0() + secs(3600))
        .await
        .expect("metrics");
    let [row] = rows.as_slice() else {
        panic!("{rows:?}")
    };
    assert_eq!(row.minute, t0() + secs(60));
    // A new bound takes the old bucket's count by its share of the width.
    assert_eq!(row.latency_le, [0, 0, 2, 4, 4, 4, 4, 8, 10, 10, 10, 10, 10]);
    assert_eq!(row.wait_le[9..12], [0, 2, 10]);
    assert_eq!(row.wait_le[20], 10);
    // The median was estimated inside (100, 250]: still 125 ms.
    assert_eq!(latency_quantile(row, 0.5), Some(125.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rollups_before_the_finer_buckets_read_as_before() {
    let minute = (t0() + secs(60)).timestamp_millis().to_string();
    let f = Fixture::sqlite_from(19, &rollups_before_v20(&minute)).await;
    rollups_before_the_finer_buckets_read_as_before(f.storage.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rollups_before_the_finer_buckets_read_as_before() {
    let minute = format!("TIMESTAMPTZ '{}'", (t0() + secs(60)).to_rfc3339());
    let f = Fixture::postgres_from(19, &rollups_before_v20(&minute)).await;
    rollups_before_the_finer_buckets_read_as_before(f.storage.as_ref()).await;
}
