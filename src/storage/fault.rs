//! A storage in memory that records every change and fails on request:
//! the one fault-injecting backend of the crate, used by the crash tests,
//! the I/O-error and retry tests and the fuzz targets.
//!
//! It keeps two versions of the bytes: what a reader of the file sees now
//! (every write applied, like the page cache) and what is durable. A sync
//! that succeeds makes the changes since the last sync durable; between
//! syncs lie the pending changes, any subset of which a power loss may
//! keep. A sync that fails makes nothing durable and drops the pending
//! changes from the write-back for good, as Linux does with the dirty
//! pages of a failed `fsync`: a later sync succeeds without them.
//!
//! A write past the end of the bytes leaves the gap holding stale,
//! non-zero bytes ([`stale`]), while `set_len` extends with zeros: a driver
//! that reads space it never wrote is caught.
//!
//! Faults are planned per kind of operation: "the third write fails with
//! `ENOSPC`", "the first sync fails with `EIO`", "the fifth write is torn
//! after 1024 bytes", "after the tenth change the machine stops". Each
//! planned fault fires once.
//!
//! ```
//! use vhdref::storage::{Fault, FaultStorage, Op, Storage};
//! let mut s = FaultStorage::new();
//! s.plan(Op::Write, 1, Fault::NoSpace);
//! s.write_all_at(b"first", 0)?;
//! assert!(s.write_all_at(b"second", 5).is_err());
//! assert_eq!(s.bytes(), b"first");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{SharedWrite, Storage};

/// One change made to the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// `data` written at `offset`.
    Write {
        /// Where.
        offset: u64,
        /// What.
        data: Vec<u8>,
    },
    /// Truncated or extended (with zeros) to this length.
    SetLen(u64),
    /// A barrier: everything before it is durable.
    Sync,
}

impl Mutation {
    /// Applies the change to `bytes` (a write past the end leaves
    /// [`stale`] bytes in the gap; `SetLen` extends with zeros).
    pub fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Mutation::Write { offset, data } => write_into(bytes, *offset, data),
            Mutation::SetLen(len) => bytes.resize(usize::try_from(*len).unwrap_or(usize::MAX), 0),
            Mutation::Sync => {}
        }
    }

    /// Applies only the first `keep` bytes of a write (a write torn by a
    /// crash); other changes are applied whole.
    pub fn apply_torn(&self, bytes: &mut Vec<u8>, keep: u64) {
        match self {
            Mutation::Write { offset, data } => {
                let keep = usize::try_from(keep).unwrap_or(usize::MAX).min(data.len());
                if keep > 0 {
                    write_into(bytes, *offset, &data[..keep]);
                }
            }
            other => other.apply(bytes),
        }
    }

    /// Applies a write torn at the file offset `at`: the bytes before it
    /// land, the rest do not. Other changes are applied whole.
    pub fn apply_torn_at(&self, bytes: &mut Vec<u8>, at: u64) {
        match self {
            Mutation::Write { offset, .. } => self.apply_torn(bytes, at.saturating_sub(*offset)),
            other => other.apply(bytes),
        }
    }

    /// The 512-byte sector boundaries strictly inside a write, where a
    /// crash can tear it: all of them when there are at most `most` (or
    /// five), else the first two, the middle one and the last two. Empty for other
    /// changes.
    pub fn tear_points(&self, most: usize) -> Vec<u64> {
        const SECTOR: u64 = 512;
        let Mutation::Write { offset, data } = self else {
            return Vec::new();
        };
        let end = offset.saturating_add(data.len() as u64);
        let first = (offset / SECTOR + 1) * SECTOR;
        let all: Vec<u64> = (first..end).step_by(SECTOR as usize).collect();
        if all.len() <= most.max(5) {
            return all;
        }
        let n = all.len();
        vec![all[0], all[1], all[n / 2], all[n - 2], all[n - 1]]
    }
}

/// Which of `n` pending writes a power loss keeps, as bit masks (bit `i`:
/// write `i` landed): every subset when `n <= every_up_to`, else the empty
/// and full sets, each single write, each set missing one write, and
/// `random` pseudo-random others (the same ones on every call). At most
/// 63 writes are told apart; the rest are kept whenever the last is.
pub fn power_loss_subsets(n: usize, every_up_to: usize, random: usize) -> Vec<u64> {
    let n = n.min(63);
    if n <= every_up_to.min(16) {
        return (0..1u64 << n).collect();
    }
    let full = (1u64 << n) - 1;
    let mut out = vec![0, full];
    for i in 0..n {
        out.push(1 << i);
        out.push(full & !(1 << i));
    }
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..random {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push(state & full);
    }
    out
}

/// Writes `data` at `offset`. A write that starts past the end leaves the
/// gap holding [`stale`] bytes, not zeros: space nobody wrote may hold
/// anything after a crash (a VHD on a logical volume, as Xen keeps them,
/// or blocks a file system allocated just before a power loss), so only
/// what a driver wrote itself may ever read as guest data.
fn write_into(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let end = start.saturating_add(data.len());
    if bytes.len() < start {
        let gap = bytes.len() as u64..offset;
        bytes.extend(gap.map(stale));
    }
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    if let Some(dst) = bytes.get_mut(start..end) {
        dst.copy_from_slice(data);
    }
}

/// What the never-written byte at `offset` holds: never zero and varying
/// inside every sector, so it equals no sector a test writes.
pub fn stale(offset: u64) -> u8 {
    (offset.wrapping_mul(0x9E37_79B9) >> 13) as u8 | 0x01
}

/// A kind of operation, to plan a fault on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `write_all_at`.
    Write,
    /// `sync`.
    Sync,
    /// `set_len`.
    SetLen,
    /// Any of the three.
    Any,
}

/// What a planned fault does to its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails with `EIO`, changing nothing.
    Eio,
    /// Fails with `ENOSPC`, changing nothing.
    NoSpace,
    /// A write: applies its first `keep` bytes, then fails with `EIO`
    /// (other operations just fail).
    Tear {
        /// Bytes of the write that reach the storage.
        keep: u64,
    },
    /// The machine stops: this operation and every later one (reads
    /// included) fails, and nothing more changes.
    Stop,
}

#[derive(Debug, Default)]
struct State {
    bytes: Vec<u8>,
    durable: Vec<u8>,
    log: Vec<Mutation>,
    /// Changes since the last successful sync.
    pending: Vec<Mutation>,
    writes: u64,
    syncs: u64,
    set_lens: u64,
    reads: u64,
    read_bytes: u64,
    plan: Vec<(Op, u64, Fault)>,
    stopped: bool,
}

impl State {
    /// The planned fault for this operation, if any (consumed).
    fn fault_for(&mut self, op: Op) -> Option<Fault> {
        let (n, any) = match op {
            Op::Write => (self.writes, self.writes + self.syncs + self.set_lens),
            Op::Sync => (self.syncs, self.writes + self.syncs + self.set_lens),
            Op::SetLen => (self.set_lens, self.writes + self.syncs + self.set_lens),
            Op::Any => return None,
        };
        let i = self
            .plan
            .iter()
            .position(|&(o, at, _)| (o == op && at == n) || (o == Op::Any && at == any))?;
        Some(self.plan.remove(i).2)
    }

    fn count(&mut self, op: Op) {
        match op {
            Op::Write => self.writes += 1,
            Op::Sync => self.syncs += 1,
            Op::SetLen => self.set_lens += 1,
            Op::Any => {}
        }
    }

    fn record(&mut self, m: Mutation) {
        m.apply(&mut self.bytes);
        self.log.push(m.clone());
        self.pending.push(m);
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

fn stopped() -> io::Error {
    io::Error::other("the storage stopped (simulated crash)")
}

/// A storage in memory with recorded changes and planned faults. Clones
/// share everything, so a test keeps one while an image owns another.
#[derive(Debug, Clone, Default)]
pub struct FaultStorage {
    state: Arc<Mutex<State>>,
}

impl FaultStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// A storage holding `bytes`, all of them durable.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let state = State {
            durable: bytes.clone(),
            bytes,
            ..State::default()
        };
        FaultStorage {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-test; the
        // bytes are still the bytes.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Plans `fault` for the `nth` (from 0) operation of kind `op`,
    /// counted from the creation of the storage (`Op::Any` counts writes,
    /// syncs and `set_len` together). Each planned fault fires once.
    pub fn plan(&self, op: Op, nth: u64, fault: Fault) {
        self.state().plan.push((op, nth, fault));
    }

    /// Drops every planned fault that has not fired (a stop stays).
    pub fn clear_plan(&self) {
        self.state().plan.clear();
    }

    /// Whether a [`Fault::Stop`] fired.
    pub fn is_stopped(&self) -> bool {
        self.state().stopped
    }

    /// The bytes a reader sees now: every write that succeeded (or was
    /// torn) applied.
    pub fn bytes(&self) -> Vec<u8> {
        self.state().bytes.clone()
    }

    /// The bytes that survive a power loss now, with none of the pending
    /// changes: those of every sync that succeeded.
    pub fn durable(&self) -> Vec<u8> {
        self.state().durable.clone()
    }

    /// The changes made since the last sync that succeeded, in order: a
    /// power loss now keeps any subset of them on top of
    /// [`FaultStorage::durable`].
    pub fn pending(&self) -> Vec<Mutation> {
        self.state().pending.clone()
    }

    /// Every change made so far, syncs included, in order.
    pub fn log(&self) -> Vec<Mutation> {
        self.state().log.clone()
    }

    /// Operations attempted so far: writes, syncs, `set_len`s.
    pub fn counts(&self) -> (u64, u64, u64) {
        let s = self.state();
        (s.writes, s.syncs, s.set_lens)
    }

    /// Reads so far, and the bytes they asked for.
    pub fn reads(&self) -> (u64, u64) {
        let s = self.state();
        (s.reads, s.read_bytes)
    }
}

impl Storage for FaultStorage {
    fn len(&self) -> io::Result<u64> {
        let s = self.state();
        if s.stopped {
            return Err(stopped());
        }
        Ok(s.bytes.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut s = self.state();
        if s.stopped {
            return Err(stopped());
        }
        s.reads += 1;
        s.read_bytes += buf.len() as u64;
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| s.bytes.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_shared(buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.state();
        if s.stopped {
            return Err(stopped());
        }
        let fault = s.fault_for(Op::SetLen);
        s.count(Op::SetLen);
        match fault {
            None => {
                s.record(Mutation::SetLen(len));
                Ok(())
            }
            Some(Fault::NoSpace) => Err(enospc()),
            Some(Fault::Eio | Fault::Tear { .. }) => Err(eio()),
            Some(Fault::Stop) => {
                s.stopped = true;
                Err(stopped())
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.state();
        if s.stopped {
            return Err(stopped());
        }
        let fault = s.fault_for(Op::Sync);
        s.count(Op::Sync);
        let error = match fault {
            None => {
                s.log.push(Mutation::Sync);
                let State {
                    durable, pending, ..
                } = &mut *s;
                for m in pending.drain(..) {
                    m.apply(durable);
                }
                return Ok(());
            }
            Some(Fault::NoSpace) => enospc(),
            Some(Fault::Eio | Fault::Tear { .. }) => eio(),
            Some(Fault::Stop) => {
                s.stopped = true;
                return Err(stopped());
            }
        };
        // As on Linux: the pages the failed sync was writing are dropped
        // from the write-back (they still read back until evicted), so a
        // later sync that succeeds does not make them durable.
        s.pending.clear();
        Err(error)
    }

    fn shared_writer(&self) -> Option<&dyn SharedWrite> {
        Some(self)
    }
}

/// Writes from several threads go through the one state lock, in the
/// order they take it; faults count them as any other writes.
impl SharedWrite for FaultStorage {
    fn write_shared(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.state();
        if s.stopped {
            return Err(stopped());
        }
        let fault = s.fault_for(Op::Write);
        s.count(Op::Write);
        match fault {
            None => {
                s.record(Mutation::Write {
                    offset,
                    data: buf.to_vec(),
                });
                Ok(())
            }
            Some(Fault::Eio) => Err(eio()),
            Some(Fault::NoSpace) => Err(enospc()),
            Some(Fault::Tear { keep }) => {
                let keep = usize::try_from(keep).unwrap_or(usize::MAX).min(buf.len());
                if keep > 0 {
                    s.record(Mutation::Write {
                        offset,
                        data: buf[..keep].to_vec(),
                    });
                }
                Err(eio())
            }
            Some(Fault::Stop) => {
                s.stopped = true;
                Err(stopped())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planned_fault_fires_once_on_its_operation() {
        let mut s = FaultStorage::new();
        s.plan(Op::Write, 1, Fault::Eio);
        s.write_all_at(b"a", 0).unwrap();
        assert_eq!(s.write_all_at(b"b", 1).unwrap_err().raw_os_error(), Some(5));
        s.write_all_at(b"c", 1).unwrap();
        assert_eq!(s.bytes(), b"ac");
    }

    #[test]
    fn durable_bytes_follow_successful_syncs_only() {
        let mut s = FaultStorage::new();
        s.plan(Op::Sync, 1, Fault::Eio);
        s.write_all_at(b"a", 0).unwrap();
        s.sync().unwrap();
        s.write_all_at(b"b", 1).unwrap();
        assert_eq!(s.pending().len(), 1);
        assert!(s.sync().is_err());
        assert_eq!(s.durable(), b"a");
        assert_eq!(s.bytes(), b"ab");
        // The write the failed sync dropped never becomes durable.
        s.write_all_at(b"c", 2).unwrap();
        s.sync().unwrap();
        assert_eq!(s.durable(), [b'a', stale(1), b'c']);
    }

    #[test]
    fn a_torn_write_keeps_its_first_bytes_and_a_stop_stops_everything() {
        let mut s = FaultStorage::from_bytes(vec![0; 8]);
        s.plan(Op::Write, 0, Fault::Tear { keep: 2 });
        s.plan(Op::Any, 1, Fault::Stop);
        assert!(s.write_all_at(b"wxyz", 0).is_err());
        assert_eq!(s.bytes(), b"wx\0\0\0\0\0\0");
        assert!(s.durable().iter().all(|&b| b == 0));
        assert!(s.sync().is_err());
        assert!(s.is_stopped());
        assert!(s.len().is_err());
        let mut buf = [0u8; 1];
        assert!(s.read_exact_at(&mut buf, 0).is_err());
    }
}
