//! The connection pool: one authenticated russh connection per host and user, shared
//! by every step of a run, carrying a bounded number of channels at once.

use crate::auth::authenticate;
use crate::hostkey::{HostKeyPolicy, preferred_algorithms, verify};
use crate::resident::Resident;
use crate::{SshError, SshTarget};
use russh::client::{self, Handle, Msg};
use russh::keys::PublicKeyOrCertificate;
use russh::{Channel, Disconnect};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Tries to open a channel that the server refused (see [`Connection::open_session`]).
const OPEN_ATTEMPTS: u32 = 8;

/// Bounds and liveness settings of a pool.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// TCP connect plus SSH handshake (and host-key check).
    pub connect_timeout: Duration,
    /// User authentication.
    pub auth_timeout: Duration,
    /// A keepalive is sent after this long without traffic from the server.
    pub keepalive_interval: Duration,
    /// The connection is dropped after this many unanswered keepalives.
    pub keepalive_max: usize,
    /// Channels open at once on one connection. OpenSSH's `MaxSessions` defaults to 10;
    /// staying below it leaves room for an interactive login next to a run.
    pub max_channels: usize,
    /// Run commands without stdin and without a remote timeout in resident shells (one
    /// bash per channel that stays up between commands, see `resident.rs`): a command
    /// then costs the host a fork instead of a new SSH session and login shell.
    pub resident_shells: bool,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(20),
            auth_timeout: Duration::from_secs(20),
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
            max_channels: 8,
            resident_shells: true,
        }
    }
}

/// SSH connections of one run: at most one per (host, port, user, host-key policy),
/// opened on first use, reopened on the next call after it drops.
///
/// Cloning is cheap and shares the connections.
#[derive(Clone, Default)]
pub struct SshPool {
    inner: Arc<PoolInner>,
}

#[derive(Default)]
struct PoolInner {
    options: PoolOptions,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    next_id: AtomicU64,
}

/// One host's place in the pool.
#[derive(Default)]
struct Slot {
    /// Held while connecting, so that concurrent first calls share one connection.
    gate: tokio::sync::Mutex<()>,
    current: Mutex<Option<Arc<Connection>>>,
}

impl Slot {
    fn live(&self) -> Option<Arc<Connection>> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().filter(|c| !c.is_closed()).cloned()
    }
}

/// What [`Connection::acquire`] found.
pub(crate) enum Acquired {
    /// An idle resident shell to reuse.
    Shell(Resident),
    /// Room for a new channel.
    Permit(OwnedSemaphorePermit),
}

/// An authenticated connection and its channel budget.
pub(crate) struct Connection {
    pub(crate) id: u64,
    /// `user@host:port`.
    pub(crate) label: String,
    /// The login user.
    pub(crate) user: String,
    handle: Handle<ClientHandler>,
    channels: Arc<Semaphore>,
    resident_shells: bool,
    /// Idle resident shells, each holding a channel permit.
    idle: Mutex<Vec<Resident>>,
    /// Wakes callers of [`Connection::acquire`] when a shell goes idle.
    idle_ready: tokio::sync::Notify,
    /// The jump host's connection this one tunnels through, kept alive with it.
    _via: Option<Arc<Connection>>,
}

impl Connection {
    pub(crate) fn is_closed(&self) -> bool {
        self.handle.is_closed() || self._via.as_ref().is_some_and(|v| v.is_closed())
    }

    pub(crate) fn lost(&self, reason: impl Into<String>) -> SshError {
        SshError::ConnectionLost {
            host: self.label.clone(),
            reason: reason.into(),
        }
    }

    /// Whether commands may run in resident shells.
    pub(crate) fn residents_enabled(&self) -> bool {
        self.resident_shells
    }

    /// An idle resident shell that is still alive: of the given flavour (`sudo` or not),
    /// or of any flavour when `sudo` is `None`.
    fn take_idle(&self, sudo: Option<bool>) -> Option<Resident> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(pos) = idle
            .iter()
            .rposition(|r| sudo.is_none_or(|s| r.sudo() == s))
        {
            let mut shell = idle.swap_remove(pos);
            if shell.alive() {
                return Some(shell);
            }
            tokio::spawn(shell.close());
        }
        None
    }

    /// Keeps a resident shell for the next command.
    pub(crate) fn put_idle(&self, shell: Resident) {
        if self.is_closed() {
            return;
        }
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(shell);
        self.idle_ready.notify_waiters();
    }

    /// Room for one more channel: an idle resident shell of the flavour `reuse` asks for
    /// (`Some(sudo)`), or a channel permit. Idle shells the caller cannot use are closed
    /// when they are what holds the budget, and a caller waiting for a permit also wakes
    /// when a shell goes idle (which keeps its permit).
    pub(crate) async fn acquire(&self, reuse: Option<bool>) -> Result<Acquired, SshError> {
        loop {
            let notified = self.idle_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(sudo) = reuse
                && let Some(shell) = self.take_idle(Some(sudo))
            {
                return Ok(Acquired::Shell(shell));
            }
            if let Ok(permit) = self.channels.clone().try_acquire_owned() {
                return Ok(Acquired::Permit(permit));
            }
            // Every permit is taken: free one an idle shell holds (of the other flavour
            // when the caller reuses shells; any of them otherwise).
            if let Some(shell) = self.take_idle(reuse.map(|s| !s)) {
                shell.close().await;
                continue;
            }
            tokio::select! {
                permit = self.channels.clone().acquire_owned() => {
                    return permit
                        .map(Acquired::Permit)
                        .map_err(|_| self.lost("the pool was closed"));
                }
                () = &mut notified => {}
            }
        }
    }

    /// Opens a session channel once the channel budget allows (see [`Connection::acquire`]).
    pub(crate) async fn open_session(
        &self,
    ) -> Result<(Channel<Msg>, OwnedSemaphorePermit), SshError> {
        let permit = match self.acquire(None).await? {
            Acquired::Permit(p) => p,
            Acquired::Shell(_) => unreachable!("acquire(None) never hands out a shell"),
        };
        self.open_with(permit).await
    }

    /// Opens a session channel with a permit already held.
    pub(crate) async fn open_with(
        &self,
        permit: OwnedSemaphorePermit,
    ) -> Result<(Channel<Msg>, OwnedSemaphorePermit), SshError> {
        let mut delay = Duration::from_millis(20);
        let mut attempt = 1;
        loop {
            match self.handle.channel_open_session().await {
                Ok(ch) => return Ok((ch, permit)),
                Err(e) if self.is_closed() || is_transport_error(&e) => {
                    return Err(self.lost(e.to_string()));
                }
                // OpenSSH frees a session slot only in a pass after it read our close, so
                // when several channels close at once and new ones open in the same batch
                // it briefly counts more than `MaxSessions` and refuses the open. That
                // race is the server's bookkeeping, not a failure: wait a moment and retry.
                Err(russh::Error::ChannelOpenFailure(_)) if attempt < OPEN_ATTEMPTS => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(250));
                    attempt += 1;
                }
                Err(e) => {
                    return Err(SshError::Channel {
                        host: self.label.clone(),
                        reason: e.to_string().to_lowercase(),
                    });
                }
            }
        }
    }
}

fn is_transport_error(e: &russh::Error) -> bool {
    matches!(
        e,
        russh::Error::SendError
            | russh::Error::Disconnect
            | russh::Error::HUP
            | russh::Error::IO(_)
            | russh::Error::KeepaliveTimeout
            | russh::Error::InactivityTimeout
    )
}

/// Receives the server's events; decides on the host key.
pub(crate) struct ClientHandler {
    host: String,
    port: u16,
    policy: HostKeyPolicy,
    /// Why the host key was refused, for the caller to report instead of russh's error.
    verdict: Arc<Mutex<Option<SshError>>>,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let result = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                verify(&self.policy, &self.host, self.port, key).await
            }
            PublicKeyOrCertificate::Certificate(_) => Err(SshError::InvalidInput(format!(
                "verify host key of {}:{}: it presented a certificate, which is not supported",
                self.host, self.port
            ))),
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) => {
                *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Ok(false)
            }
        }
    }
}

fn policy_tag(policy: &HostKeyPolicy) -> String {
    match policy {
        HostKeyPolicy::Strict { known_hosts } => format!("strict:{}", known_hosts.display()),
        HostKeyPolicy::AcceptNew { store } => {
            format!("accept-new:{:p}", Arc::as_ptr(store) as *const ())
        }
        HostKeyPolicy::Pinned { fingerprint } => format!("pinned:{fingerprint}"),
    }
}

fn pool_key(target: &SshTarget) -> String {
    let via = target
        .jump
        .as_ref()
        .map(|j| pool_key(j))
        .unwrap_or_default();
    format!(
        "{}|{}|{}|{}|via({via})",
        target.user,
        target.host,
        target.port,
        policy_tag(&target.host_key)
    )
}

impl SshPool {
    /// A pool with the given bounds.
    pub fn new(options: PoolOptions) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                options,
                ..PoolInner::default()
            }),
        }
    }

    /// The pool's settings.
    pub fn options(&self) -> &PoolOptions {
        &self.inner.options
    }

    /// How many connections are open right now (jump hosts included).
    pub fn open_connections(&self) -> usize {
        let slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.values().filter(|s| s.live().is_some()).count()
    }

    /// Disconnects every connection; the next call reconnects.
    pub async fn close_all(&self) {
        let conns: Vec<Arc<Connection>> = {
            let slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .values()
                .filter_map(|s| s.current.lock().unwrap_or_else(|p| p.into_inner()).take())
                .collect()
        };
        for c in conns {
            let _ = c
                .handle
                .disconnect(Disconnect::ByApplication, "siteflow run finished", "en")
                .await;
        }
    }

    fn slot(&self, target: &SshTarget) -> Arc<Slot> {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(pool_key(target)).or_default().clone()
    }

    /// Forgets a connection that an operation saw drop, so the next call reconnects.
    pub(crate) fn invalidate(&self, target: &SshTarget, id: u64) {
        let slot = self.slot(target);
        let mut current = slot.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|c| c.id == id) {
            *current = None;
        }
    }

    /// The live connection to `target`, connecting (through its jump host) if needed.
    pub(crate) async fn connection(&self, target: &SshTarget) -> Result<Arc<Connection>, SshError> {
        let slot = self.slot(target);
        if let Some(c) = slot.live() {
            return Ok(c);
        }
        // An async mutex held across the connect on purpose: concurrent first calls wait
        // for this one connection instead of each opening their own.
        let _gate = slot.gate.lock().await;
        if let Some(c) = slot.live() {
            return Ok(c);
        }
        let conn = Arc::new(self.connect(target).await?);
        *slot.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    async fn connect(&self, target: &SshTarget) -> Result<Connection, SshError> {
        let opts = &self.inner.options;
        let label = target.label();
        let via = match &target.jump {
            Some(jump) => Some(Box::pin(self.connection(jump)).await?),
            None => None,
        };
        let mut config = client::Config {
            keepalive_interval: Some(opts.keepalive_interval),
            keepalive_max: opts.keepalive_max,
            inactivity_timeout: None,
            nodelay: true,
            ..client::Config::default()
        };
        config.preferred.key =
            Cow::Owned(preferred_algorithms(&target.host_key, &target.host, target.port).await);
        let config = Arc::new(config);
        let verdict = Arc::new(Mutex::new(None));
        let handler = ClientHandler {
            host: target.host.clone(),
            port: target.port,
            policy: target.host_key.clone(),
            verdict: verdict.clone(),
        };
        let handshake = async {
            match &via {
                Some(jump) => {
                    let tunnel = jump
                        .handle
                        .channel_open_direct_tcpip(
                            target.host.clone(),
                            u32::from(target.port),
                            "127.0.0.1",
                            0,
                        )
                        .await
                        .map_err(|e| SshError::Connect {
                            host: label.clone(),
                            reason: format!("open a tunnel through {}: {e}", jump.label),
                        })?;
                    client::connect_stream(config, tunnel.into_stream(), handler).await
                }
                None => client::connect(config, (target.host.as_str(), target.port), handler).await,
            }
            .map_err(|e| {
                verdict
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or_else(|| SshError::Connect {
                        host: label.clone(),
                        reason: e.to_string().to_lowercase(),
                    })
            })
        };
        let mut handle = tokio::time::timeout(opts.connect_timeout, handshake)
            .await
            .map_err(|_| SshError::ConnectTimeout {
                host: label.clone(),
                after: opts.connect_timeout,
            })??;
        tokio::time::timeout(
            opts.auth_timeout,
            authenticate(&mut handle, &target.user, &target.auth, &label),
        )
        .await
        .map_err(|_| SshError::ConnectTimeout {
            host: label.clone(),
            after: opts.auth_timeout,
        })??;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target = %label, id, "ssh connection established");
        Ok(Connection {
            id,
            label,
            user: target.user.clone(),
            handle,
            channels: Arc::new(Semaphore::new(opts.max_channels.max(1))),
            resident_shells: opts.resident_shells,
            idle: Mutex::new(Vec::new()),
            idle_ready: tokio::sync::Notify::new(),
            _via: via,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_key_separates_policy_and_jump() {
        let a = SshTarget::new("h", "u").with_port(2222);
        let b = a
            .clone()
            .with_host_key(HostKeyPolicy::pinned("SHA256:abc").unwrap());
        let c = a.clone().via(SshTarget::new("bastion", "u"));
        assert_ne!(pool_key(&a), pool_key(&b));
        assert_ne!(pool_key(&a), pool_key(&c));
        assert_eq!(pool_key(&a), pool_key(&a.clone()));
    }
}
