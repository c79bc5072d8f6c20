//! The storage of an open image, with its failed state.
//!
//! On Linux a failed `fsync` may have dropped the dirty pages it was
//! writing, and a later `fsync` can then succeed without them (what
//! database developers learned the hard way in 2018). So after one failed sync nothing that was
//! written since the last successful sync can be trusted to be durable,
//! and a later "successful" flush would be a lie. This wrapper remembers
//! the first failed sync and from then on fails every write, `set_len`
//! and sync, so the image can only be reopened (which reads what really
//! reached the disk). Reads still work.
//!
//! A failed *write* does not enter the failed state: the data that did
//! not reach the file is still in the caller's hands (data) or dirty in
//! memory (metadata), and writing it again is safe.

use std::io;

use crate::storage::{SharedWrite, Storage};

/// A storage that enters a failed state on the first failed sync.
pub(crate) struct Guarded {
    inner: Box<dyn Storage>,
    failed: Option<String>,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Guarded {
    pub(crate) fn new(inner: Box<dyn Storage>) -> Self {
        Guarded {
            inner,
            failed: None,
        }
    }

    /// The error of the failed sync, if one failed.
    pub(crate) fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub(crate) fn into_inner(self) -> Box<dyn Storage> {
        self.inner
    }

    fn refuse(&self) -> io::Result<()> {
        match &self.failed {
            Some(cause) => Err(io::Error::other(format!(
                "refused: an earlier sync failed ({cause}); reopen the image"
            ))),
            None => Ok(()),
        }
    }
}

impl Storage for Guarded {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.refuse()?;
        self.inner.write_all_at(buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.refuse()?;
        self.inner.set_len(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.refuse()?;
        self.inner.sync().inspect_err(|e| {
            self.failed = Some(e.to_string());
        })
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        self.inner.next_data(offset)
    }

    /// None once a sync has failed: then every write must be refused,
    /// and the handle of the storage below would not refuse it.
    fn shared_writer(&self) -> Option<&dyn SharedWrite> {
        match self.failed {
            Some(_) => None,
            None => self.inner.shared_writer(),
        }
    }
}
