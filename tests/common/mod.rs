//! Test fixtures shared by the test binaries: an isolated store per test
//! (a fresh SQLite file, or a fresh PostgreSQL schema that is dropped
//! afterwards) and message builders.
#![allow(dead_code)] // each test binary uses a different part

pub mod keys;
pub mod proxy;
pub mod smtp;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use herald::domain::{
    Channel, EnqueuePolicy, EnqueueRequest, Message, NewMessage, Priority, Status, TransportIntake,
};
use herald::storage::{self, Storage, StorageOptions};

/// Where the PostgreSQL tests connect; `HERALD_TEST_DATABASE_URL` overrides.
pub fn postgres_base_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `host:port` of the test database, for tests that put a proxy in front.
pub fn postgres_host_port() -> String {
    let url = url::Url::parse(&postgres_base_url()).expect("a PostgreSQL URL");
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    )
}

/// Adds `options=-csearch_path=<schema>` to a PostgreSQL URL, and names
/// its sessions after the schema so that cleanup can find them.
pub fn with_search_path(base: &str, schema: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-csearch_path%3D{schema}&application_name={schema}")
}

/// Drops a test schema. Its own sessions are ended first: a test's drop
/// blocks the thread its pool's connection tasks run on, so a transaction
/// they left open (a ROLLBACK still queued, a background task stopped
/// mid-statement) would otherwise hold the DROP's locks forever.
pub async fn drop_schema(client: &tokio_postgres::Client, schema: &str) {
    let _ = client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&schema],
        )
        .await;
    let _ = client
        .batch_execute(&format!(
            "SET lock_timeout = '30s'; DROP SCHEMA {schema} CASCADE"
        ))
        .await;
}

/// An isolated, migrated store that removes itself when dropped.
pub struct Fixture {
    pub storage: Arc<dyn Storage>,
    pub options: StorageOptions,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(tempfile::TempDir),
    Schema(String),
}

mod sqlite_migrations {
    refinery::embed_migrations!("sql/sqlite");
}

mod postgres_migrations {
    refinery::embed_migrations!("sql/postgres");
}

impl Fixture {
    /// A SQLite store that migration `version` left, holding what
    /// `written` (SQL) wrote there, then opened and migrated: a store an
    /// older version filled, upgraded.
    pub async fn sqlite_from(version: i32, written: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("herald.db");
        let mut conn = rusqlite::Connection::open(&path).expect("open the file");
        sqlite_migrations::migrations::runner()
            .set_target(refinery::Target::Version(version))
            .run(&mut conn)
            .expect("migrate to the older version");
        conn.execute_batch(written)
            .expect("write as the older version");
        drop(conn);
        let options = StorageOptions {
            pool_size: 2,
            ..StorageOptions::new(format!("sqlite://{}", path.display()))
        };
        let storage = open_migrated(&options).await;
        Fixture {
            storage,
            options,
            cleanup: Cleanup::Dir(dir),
        }
    }

    /// [`Fixture::sqlite_from`] on PostgreSQL.
    pub async fn postgres_from(version: i32, written: &str) -> Fixture {
        let base = postgres_base_url();
        let schema = format!(
            "herald_test_{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        connect(&base)
            .await
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create the test schema");
        let url = with_search_path(&base, &schema);
        let mut client = connect(&url).await;
        postgres_migrations::migrations::runner()
            .set_target(refinery::Target::Version(version))
            .run_async(&mut client)
            .await
            .expect("migrate to the older version");
        client
            .batch_execute(written)
            .await
            .expect("write as the older version");
        let options = StorageOptions {
            pool_size: 8,
            ..StorageOptions::new(url)
        };
        let storage = open_migrated(&options).await;
        Fixture {
            storage,
            options,
            cleanup: Cleanup::Schema(schema),
        }
    }

    pub async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("herald.db").display());
        let options = StorageOptions {
            pool_size: 2,
            ..StorageOptions::new(url)
        };
        let storage = open_migrated(&options).await;
        Fixture {
            storage,
            options,
            cleanup: Cleanup::Dir(dir),
        }
    }

    pub async fn postgres() -> Fixture {
        let base = postgres_base_url();
        let schema = format!(
            "herald_test_{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        connect(&base)
            .await
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create the test schema");
        let options = StorageOptions {
            pool_size: 8,
            ..StorageOptions::new(with_search_path(&base, &schema))
        };
        let storage = open_migrated(&options).await;
        Fixture {
            storage,
            options,
            cleanup: Cleanup::Schema(schema),
        }
    }

    /// Refreshes PostgreSQL's planner statistics, as autovacuum does in a
    /// running system; benchmarks call it after bulk-filling a fresh table
    /// so they measure the steady state. A no-op on SQLite.
    pub async fn analyze(&self) {
        if let Cleanup::Schema(schema) = &self.cleanup {
            connect(&postgres_base_url())
                .await
                .batch_execute(&format!(
                    "ANALYZE {schema}.messages; ANALYZE {schema}.message_events"
                ))
                .await
                .expect("ANALYZE");
        }
    }

    /// Vacuums and analyses the queue tables, as autovacuum does on a
    /// running server; a benchmark that churns a table for minutes calls
    /// it now and then, since the machine's PostgreSQL may run with
    /// autovacuum off. A no-op on SQLite.
    pub async fn vacuum(&self) {
        if let Cleanup::Schema(schema) = &self.cleanup {
            connect(&postgres_base_url())
                .await
                .batch_execute(&format!(
                    "VACUUM ANALYZE {schema}.messages, {schema}.message_events, \
                     {schema}.metrics_minutely, {schema}.failures_minutely"
                ))
                .await
                .expect("VACUUM");
        }
    }

    /// Events whose message is gone: none may outlive their message.
    pub async fn orphan_events(&self) -> i64 {
        self.count(
            "SELECT count(*) FROM message_events e
             WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = e.message_id)
               AND NOT EXISTS (SELECT 1 FROM finished_messages f WHERE f.id = e.message_id)",
        )
        .await
    }

    /// The answer of a `SELECT count(*) ...` asked of the store's database
    /// directly, beside the store: what a test must see in the tables
    /// themselves, the same SQL on both backends.
    pub async fn count(&self, sql: &str) -> i64 {
        match &self.cleanup {
            Cleanup::Schema(_) => connect(&self.options.url)
                .await
                .query_one(sql, &[])
                .await
                .expect("count")
                .get(0),
            Cleanup::Dir(_) => self
                .side_sqlite()
                .expect("a SQLite store")
                .query_row(sql, [], |row| row.get(0))
                .expect("count"),
        }
    }

    /// A plain connection to the store's PostgreSQL schema, for writing
    /// what the store's API cannot (rows as an older version left them);
    /// `None` on SQLite.
    pub async fn side_postgres(&self) -> Option<tokio_postgres::Client> {
        match &self.cleanup {
            Cleanup::Schema(_) => Some(connect(&self.options.url).await),
            Cleanup::Dir(_) => None,
        }
    }

    /// A second connection to the store's SQLite file, as
    /// [`Fixture::side_postgres`]; `None` on PostgreSQL.
    pub fn side_sqlite(&self) -> Option<rusqlite::Connection> {
        match &self.cleanup {
            Cleanup::Schema(_) => None,
            Cleanup::Dir(dir) => {
                Some(rusqlite::Connection::open(dir.path().join("herald.db")).expect("open"))
            }
        }
    }

    /// A second, independent handle on the same store (as after a restart).
    pub async fn reopen(&self) -> Arc<dyn Storage> {
        open_migrated(&self.options).await
    }
}

/// A plain PostgreSQL connection beside the store's pool.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} (set HERALD_TEST_DATABASE_URL): {e}"));
    tokio::spawn(connection);
    client
}

async fn open_migrated(options: &StorageOptions) -> Arc<dyn Storage> {
    let storage = storage::open(options).await.expect("open the store");
    storage.migrate().await.expect("migrate");
    storage
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Cleanup::Schema(schema) = &self.cleanup {
            let schema = schema.clone();
            // Drop runs inside the test's runtime, which cannot block on
            // async work: do it on a thread of its own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(async move {
                        if let Ok((client, connection)) =
                            tokio_postgres::connect(&postgres_base_url(), tokio_postgres::NoTls)
                                .await
                        {
                            tokio::spawn(connection);
                            drop_schema(&client, &schema).await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// 2026-01-01T00:00:00Z: tests run on a fixed calendar.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid date")
}

/// The node id tests claim under.
pub const NODE: &str = "test-node";

/// A `dead_before` no node's heartbeat is older than: recovery then
/// returns expired leases only.
pub fn no_node_dead() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH
}

pub fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// Transports `mail` (email, 3 attempts) and `other` (email, 3 attempts).
pub fn policy() -> EnqueuePolicy {
    let intake = TransportIntake {
        channels: vec![Channel::Email],
        max_attempts: 3,
        allowed_url_hosts: None,
        native: Vec::new(),
    };
    EnqueuePolicy {
        transports: HashMap::from([
            ("mail".to_string(), intake.clone()),
            ("other".to_string(), intake),
        ]),
        routes: HashMap::from([(Channel::Email, "mail".to_string())]),
        default_priority: Priority::new(4).expect("4 is a priority"),
        category_priorities: BTreeMap::new(),
    }
}

/// Builds enqueue requests the way the API does.
pub struct Email {
    pub transport: &'static str,
    pub priority: i64,
    pub to: String,
    pub subject: String,
    pub idempotency_key: Option<String>,
    pub send_at: Option<DateTime<Utc>>,
    pub category: Option<&'static str>,
}

impl Default for Email {
    fn default() -> Self {
        Email {
            transport: "mail",
            priority: 4,
            to: "alice@example.com".into(),
            subject: "Hello".into(),
            idempotency_key: None,
            send_at: None,
            category: None,
        }
    }
}

impl Email {
    pub fn build(self, now: DateTime<Utc>) -> NewMessage {
        let request: EnqueueRequest = serde_json::from_value(serde_json::json!({
            "channel": "email",
            "transport": self.transport,
            "priority": self.priority,
            "idempotency_key": self.idempotency_key,
            "send_at": self.send_at,
            "category": self.category,
            "email": {
                "from": "shop@example.com",
                "to": [self.to],
                "subject": self.subject,
                "text": "Thanks for your order."
            }
        }))
        .expect("a valid request");
        request
            .into_new_message(&policy(), now)
            .expect("a valid message")
    }
}

/// `n` default emails to `mail` with distinct subjects.
pub fn emails(n: usize, now: DateTime<Utc>) -> Vec<NewMessage> {
    (0..n)
        .map(|i| {
            Email {
                subject: format!("Message {i}"),
                ..Email::default()
            }
            .build(now)
        })
        .collect()
}

/// Queued plus processing, from the store's own depth count.
pub async fn unfinished(storage: &dyn Storage) -> u64 {
    storage
        .queue_depth()
        .await
        .expect("depth")
        .iter()
        .map(|d| d.queued + d.processing)
        .sum()
}

/// `new` as the engine hands it to a transport: claimed, on its first
/// attempt.
pub fn as_claimed(new: NewMessage, now: DateTime<Utc>) -> Message {
    Message {
        id: new.id,
        channel: new.channel,
        transport: new.transport,
        category: new.category,
        status: Status::Processing,
        priority: new.priority,
        payload: serde_json::from_str(&new.payload).expect("payload JSON"),
        metadata: serde_json::from_str(&new.metadata).expect("metadata JSON"),
        fingerprint: new.fingerprint,
        idempotency_key: new.idempotency_key,
        attempts: 1,
        max_attempts: new.max_attempts,
        created_at: now,
        available_at: new.available_at,
        lease_until: None,
        claim_token: None,
        sent_at: None,
        last_error: None,
        updated_at: now,
        delivery: Default::default(),
    }
}
