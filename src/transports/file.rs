//! The `file` transport: each email written as an `.eml` file into a
//! directory (lettre's file transport). The default for local runs: what
//! would have been sent can be opened in any mail reader.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use lettre::{AsyncFileTransport, AsyncTransport, Tokio1Executor};

use crate::domain::Message;

use super::email::build_email;
use super::{Delivery, Transport, TransportError};

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
        })
    }
}
