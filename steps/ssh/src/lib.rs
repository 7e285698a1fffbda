//! The siteflow SSH transport: a pool of russh connections (one per host and user,
//! several channels at once, keepalives, reconnect after a drop), key and agent
//! authentication, jump hosts, host-key policies, command execution with sudo and
//! remote timeouts, and SFTP uploads and downloads.
//!
//! Every operation returns [`SshError`], which converts into a classified
//! [`siteflow_step::StepError`] with a stable code.

mod auth;
mod command;
mod config;
mod error;
mod exec;
mod hostkey;
mod pool;
mod quote;
mod resident;
mod sftp;
pub mod steps;

pub use auth::AuthMethod;
pub use command::{ExecOutput, ExecRequest, LineSink};
pub use config::{SshConfigFile, SshTarget};
pub use error::SshError;
pub use hostkey::{
    HostKeyPolicy, HostKeyStore, MemoryHostKeyStore, RunStateHostKeyStore, fingerprint,
    line_fingerprint, store_key,
};
pub use pool::{PoolOptions, SshPool};
pub use quote::shell_quote;
pub use sftp::UploadSpec;
pub use steps::steps;

/// The russh key types used in this API (`PublicKey` for [`fingerprint`]).
pub use russh::keys::PublicKey;
