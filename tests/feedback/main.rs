//! The feedback sources against real servers: each provider's webhook
//! verified and read through [`herald::feedback::FeedbackSource::accept`],
//! built from config text as the server builds it.

#[path = "../common/mod.rs"]
mod common;
mod ses;
