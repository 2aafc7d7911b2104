//! Delivery feedback against real servers: each provider's webhook
//! verified and read through [`herald::feedback::FeedbackSource::accept`],
//! built from config text as the server builds it; and the whole loop,
//! from a send through the engine to the provider's signed events posted
//! to the route.

#[path = "../common/mod.rs"]
mod common;
mod e2e;
mod ses;
