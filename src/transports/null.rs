//! The `null` transport: accepts every message and sends nothing, so
//! benchmarks measure Herald itself rather than a provider.

use async_trait::async_trait;

use crate::domain::Message;

use super::{Delivery, Transport, TransportError};

/// Delivers every message instantly, nowhere.
pub struct NullTransport {
    name: String,
}

impl NullTransport {
    pub fn new(name: impl Into<String>) -> Self {
        NullTransport { name: name.into() }
    }
}

#[async_trait]
impl Transport for NullTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "null"
    }

    async fn deliver(&self, _message: &Message) -> Result<Delivery, TransportError> {
        Ok(Delivery {
            transport: self.name.clone(),
            detail: None,
        })
    }
}
