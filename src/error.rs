//! One error type for the whole pipeline. Each error carries a kind (which decides the exit
//! code) and a message that already says what failed, where, and what to do next.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The package is unreadable, malformed, or its metadata is invalid.
    Package,
    /// A blob's bytes do not match its digest or size, or a blob is missing from the package.
    Integrity,
    /// The registry refused or failed a request (after retries).
    Registry,
    /// The registry refused our credentials.
    Auth,
    /// The registry could not be reached (connection refused, DNS, TLS handshake).
    Unreachable,
    /// The platform (its Kubernetes API) refused or failed a request: a resource could not be
    /// read or written, a permission is missing, the cluster is unknown.
    Platform,
    /// The command line is inconsistent (flags that need each other, a bad address).
    Usage,
    /// The run was interrupted by a signal.
    Interrupted,
    /// Anything else (a bug, an I/O error on the local machine).
    Internal,
}

impl ErrorKind {
    /// Exit codes, documented in README.md ("Exit codes").
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Internal => 1,
            ErrorKind::Package | ErrorKind::Integrity => 3,
            ErrorKind::Registry => 4,
            ErrorKind::Auth => 5,
            ErrorKind::Unreachable => 6,
            ErrorKind::Platform => 7,
            ErrorKind::Usage => 2,
            ErrorKind::Interrupted => 130,
        }
    }

    /// When several things failed, the exit code names the one the operator must fix first.
    pub fn severity(self) -> u8 {
        match self {
            ErrorKind::Usage => 9,
            ErrorKind::Interrupted => 8,
            ErrorKind::Unreachable => 7,
            ErrorKind::Auth => 6,
            ErrorKind::Platform => 5,
            ErrorKind::Internal => 4,
            ErrorKind::Registry => 3,
            ErrorKind::Integrity => 2,
            ErrorKind::Package => 1,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// A transient failure (connection reset, timeout, 5xx, 429): worth trying again.
    pub retryable: bool,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            retryable: false,
        }
    }
    pub fn package(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Package, message)
    }
    pub fn integrity(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Integrity, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn retryable(mut self, yes: bool) -> Self {
        self.retryable = yes;
        self
    }
    /// Prefixes the message with where it happened ("package x: image y: ...").
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

pub type Result<T> = std::result::Result<T, Error>;
