//! The `file` transport: each email written as an `.eml` file into a
//! directory (lettre's file transport). The default for local runs: what
//! would have been sent can be opened in any mail reader.
//!
//! It owns its kind's part of the config: the `[transports.<name>]` keys
//! it takes, their checks, and the transport built from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use lettre::{AsyncFileTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use crate::config::{KindTable, TransportSettings};
use crate::domain::{Channel, Message};
use crate::time::Clock;

use super::email::build_email;
use super::{Delivery, Gated, KindSpec, Transport, TransportError, TransportKind};

// Registered in `super::KINDS`; unregistered, it would be dead code.
pub(super) const KIND: KindSpec = KindSpec {
    name: "file",
    keys: &["path"],
    channels: &[Channel::Email],
    native: &[],
    configure,
};

/// The `file` kind's keys of `[transports.<name>]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    /// Directory the .eml files go to. Required.
    path: Option<String>,
}

/// A file transport's settings.
#[derive(Debug, Clone)]
pub struct FileSettings {
    pub path: PathBuf,
}

fn configure(table: &mut KindTable<'_>) -> Option<Arc<dyn TransportKind>> {
    let keys: FileKeys = table.keys()?;
    match keys.path.filter(|p| !p.is_empty()) {
        Some(path) => Some(Arc::new(FileSettings {
            path: PathBuf::from(path),
        })),
        None => {
            table.problem("path", "a file transport needs the directory to write to");
            None
        }
    }
}

impl TransportKind for FileSettings {
    fn name(&self) -> &'static str {
        "file"
    }

    fn build(
        &self,
        settings: &TransportSettings,
        _members: Vec<Gated>,
        _clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn Transport>, TransportError> {
        Ok(Arc::new(FileTransport::new(
            settings.name.clone(),
            &self.path,
        )?))
    }
}

/// Writes emails into one directory.
pub struct FileTransport {
    name: String,
    directory: PathBuf,
    writer: AsyncFileTransport<Tokio1Executor>,
}

impl FileTransport {
    /// Creates the directory if it is missing, so a fresh checkout runs
    /// without set-up; a directory that cannot be created is reported now
    /// rather than on every delivery.
    pub fn new(name: impl Into<String>, directory: &Path) -> Result<Self, TransportError> {
        let name = name.into();
        std::fs::create_dir_all(directory).map_err(|e| {
            TransportError::Local(format!(
                "transport `{name}`: cannot create {}: {e}",
                directory.display()
            ))
        })?;
        Ok(FileTransport {
            name,
            directory: directory.to_owned(),
            writer: AsyncFileTransport::new(directory),
        })
    }
}

#[async_trait]
impl Transport for FileTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "file"
    }

    async fn deliver(&self, message: &Message) -> Result<Delivery, TransportError> {
        let email = build_email(message)?;
        // The directory may have been removed since start-up (a cleaned
        // outbox); recreating it is cheap and saves a failed attempt.
        tokio::fs::create_dir_all(&self.directory)
            .await
            .map_err(|e| {
                TransportError::Local(format!("cannot create {}: {e}", self.directory.display()))
            })?;
        let id = self.writer.send(email).await.map_err(|e| {
            TransportError::Local(format!("cannot write to {}: {e}", self.directory.display()))
        })?;
        let file = self.directory.join(format!("{id}.eml"));
        Ok(Delivery {
            transport: self.name.clone(),
            detail: Some(serde_json::json!({ "file": file.display().to_string() })),
            provider_message_id: None,
        })
    }
}
