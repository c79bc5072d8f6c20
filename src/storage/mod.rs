//! Where image bytes live. The driver decides what goes where; a storage
//! only moves bytes. All I/O of the driver goes through [`Storage`], so a
//! fault-injecting backend can stand in for crash tests.

mod fault;
mod file;
mod memory;

pub use fault::{Fault, FaultStorage, Mutation, Op, power_loss_subsets, stale};
#[cfg(test)]
pub(crate) use file::disk_tempdir;
/// The test suite's skip report (`SKIP: ...` on stderr and in
/// `VHDREF_SKIP_LOG`; a failure under `VHDREF_REQUIRE_PEERS=1`), for unit
/// tests that cannot run on every machine.
#[cfg(test)]
#[path = "../../tests/common/skip.rs"]
pub(crate) mod test_skip;
pub use file::{
    DIRECT_ALIGN, DirectBuf, DirectFile, FileStorage, LockMode, OpenError, PendingFile, WRITE_PIECE,
};
pub use memory::MemStorage;

use std::io;

/// Positioned I/O on the bytes of one image file.
#[allow(clippy::len_without_is_empty)] // an image file is never asked whether it is empty
pub trait Storage: Send {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; an error if the storage ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the storage if needed.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends (with zeros) to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes every completed write durable: the only barrier the driver uses.
    fn sync(&mut self) -> io::Result<()>;
    /// The next range `(start, end)` at or after `offset` that may hold
    /// data; what lies between `offset` and `start` is a hole that reads
    /// as zeros. `None` when only holes follow. The default says "data
    /// everywhere": the whole rest of the storage.
    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        let len = self.len()?;
        Ok((offset < len).then_some((offset, len)))
    }
    /// A handle through which several threads may write at once, each at
    /// its own offsets, where the storage allows it: a file, whose writes
    /// are positional and need no state of ours. A write through it puts
    /// the bytes where [`Storage::write_all_at`] would. `None` (the
    /// default) where writing needs `&mut self`.
    fn shared_writer(&self) -> Option<&dyn SharedWrite> {
        None
    }
}

/// Positioned writes through a shared reference (see
/// [`Storage::shared_writer`]).
pub trait SharedWrite: Sync {
    /// Writes all of `buf` at `offset`, as [`Storage::write_all_at`] does.
    fn write_shared(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Whether the bulk of the writes go around the page cache (direct
    /// I/O). Only then do several threads writing at once pay: through
    /// the page cache, writes to one file take its lock in turn, and a
    /// waiting writer spins on it (see `convert::Mode::Auto`).
    fn around_page_cache(&self) -> bool {
        false
    }
}

impl<S: Storage + ?Sized> Storage for Box<S> {
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_all_at(buf, offset)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        (**self).next_data(offset)
    }
    fn shared_writer(&self) -> Option<&dyn SharedWrite> {
        (**self).shared_writer()
    }
}
