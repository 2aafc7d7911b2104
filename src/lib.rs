//! Herald: a notification delivery and tracking engine.
//!
//! The life of one message, by module:
//!
//! 1. [`http`] receives `POST /api/messages`; [`domain`] validates the body
//!    into a [`domain::NewMessage`] with its stamp (ULID) and content
//!    fingerprint.
//! 2. [`storage`] writes it durably (PostgreSQL or SQLite) with a `queued`
//!    event before the client hears 202.
//! 3. The engine (a transport's actor) claims due messages in priority
//!    order under a lease and a claim token, delivers them through the
//!    transport, and reports outcomes.
//! 4. [`storage`] applies the outcomes in batches (sent, retry at a time, or
//!    dead), refusing any reported under a stale claim token, and records
//!    each step as an event under the same stamp.
//!
//! [`telemetry`] counts what happens on the way (requests, outcomes,
//! breaker transitions, storage calls) for `/metrics`.
//!
//! [`config`] turns `config.toml` and the environment into typed settings;
//! [`time`] is the one clock; [`app`] wires storage and HTTP together and
//! owns start-up and shutdown. [`bench`] is `herald bench`, the load
//! benchmark that drives a server through the HTTP API and verifies what
//! it measured. [`alerts`] watches the rollups, queue counts and breakers
//! against the configured rules and sends its notices as messages of its
//! own.

pub mod alerts;
pub mod analytics;
pub mod app;
pub mod bench;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod engine;
pub mod feedback;
pub mod http;
pub mod storage;
pub mod telemetry;
pub mod time;
pub mod transports;
