//! Picking a free slot (subnet + name prefix) for a harness instance, guarded by `flock`.
//!
//! A slot is owned by whoever holds the exclusive `flock` on its lock file; a killed owner's
//! lock is released by the kernel, so a slot whose lock can be taken is free and anything
//! still named after it is a leftover that [`crate::cleanup::cleanup_slot`] may remove.

use std::fs::{File, OpenOptions};
use std::path::Path;

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};

use crate::command::run;
use crate::layout;

/// An owned slot; the slot is released when this is dropped.
#[derive(Debug)]
pub struct SlotLock {
    slot: u8,
    _lock: Flock<File>,
}

impl SlotLock {
    /// The slot number.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// Takes the lock of `slot` if nobody holds it.
    pub fn try_take(slot: u8) -> Result<Option<SlotLock>> {
        prepare_base()?;
        let file = open_lock(&layout::slot_lock(slot))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(SlotLock { slot, _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(e).context("flock on a slot lock"),
        }
    }

    /// Takes a free slot whose subnet is not used by anything else on this machine, after
    /// removing whatever an earlier, killed owner of that slot left behind.
    pub fn acquire() -> Result<SlotLock> {
        let used = addresses_in_use()?;
        let count = layout::SLOTS.count();
        let start = (std::process::id() as usize * 7919 + next_seq() * 31) % count;
        for k in 0..count {
            let slot = *layout::SLOTS.start() + ((start + k) % count) as u8;
            if let Some(lock) = Self::try_take(slot)? {
                crate::cleanup::cleanup_slot(slot);
                let prefix = format!("10.250.{slot}.");
                if used.iter().any(|a| a.starts_with(&prefix)) && subnet_still_used(&prefix)? {
                    continue;
                }
                return Ok(lock);
            }
        }
        bail!("no free test-host slot (all {count} subnets 10.250.x.0/24 are taken)")
    }
}

fn next_seq() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))
}

/// IPv4 addresses configured in the root namespace.
fn addresses_in_use() -> Result<Vec<String>> {
    let out = run("ip", ["-4", "-o", "addr", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            it.position(|w| w == "inet")?;
            it.next().map(|a| a.to_owned())
        })
        .collect())
}

fn subnet_still_used(prefix: &str) -> Result<bool> {
    Ok(addresses_in_use()?.iter().any(|a| a.starts_with(prefix)))
}

/// Creates the base directories and the private bind mount that holds namespace pins.
///
/// `unshare --mount=<file>` needs the pin file on a mount with private propagation.
pub(crate) fn prepare_base() -> Result<()> {
    std::fs::create_dir_all(layout::locks_dir())
        .with_context(|| format!("cannot create {}", layout::locks_dir().display()))?;
    let pins = layout::pins_dir();
    std::fs::create_dir_all(&pins)?;
    if is_mount_point(&pins)? {
        return Ok(());
    }
    let global = open_lock(&layout::locks_dir().join("global.lock"))?;
    let _guard = Flock::lock(global, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("flock on the global lock")?;
    if !is_mount_point(&pins)? {
        run(
            "mount",
            ["--bind".as_ref(), pins.as_os_str(), pins.as_os_str()],
        )?;
        run("mount", ["--make-private".as_ref(), pins.as_os_str()])?;
    }
    Ok(())
}

fn is_mount_point(path: &Path) -> Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let wanted = path.to_string_lossy();
    Ok(info
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(wanted.as_ref())))
}
