//! Delivery policy: pure decisions that take `now` as input, so they can
//! be tested exactly. The engine asks; nothing here does I/O.

pub mod errors;
pub mod retry;
