//! The `null` transport: accepts every message and sends nothing, so
//! benchmarks measure Herald itself rather than a provider.
//!
//! It owns its kind's part of the config: the `[transports.<name>]` keys
//! it takes, their checks, and the transport built from them.

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{KindTable, TransportSettings};
use crate::domain::{Channel, Message};
use crate::time::Clock;

use super::{Delivery, Gated, KindSpec, Transport, TransportError, TransportKind};

// Registered in `super::KINDS`; unregistered, it would be dead code.
pub(super) const KIND: KindSpec = KindSpec {
    name: "null",
    keys: &[],
    channels: Channel::ALL,
    native: &[],
    configure,
};

/// A null transport has no settings of its own.
#[derive(Debug, Clone)]
pub struct NullSettings;

fn configure(_table: &mut KindTable<'_>) -> Option<Arc<dyn TransportKind>> {
    Some(Arc::new(NullSettings))
}

impl TransportKind for NullSettings {
    fn name(&self) -> &'static str {
        "null"
    }

    fn build(
        &self,
        settings: &TransportSettings,
        _members: Vec<Gated>,
        _clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        Ok(Arc::new(NullTransport::new(settings.name.clone())))
    }
}

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
        Ok(Delivery::by(&self.name))
    }
}
