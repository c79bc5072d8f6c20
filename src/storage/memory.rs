//! An in-memory storage, for tests and for building images in memory.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{SharedWrite, Storage};

/// Bytes in memory. Clones share the same bytes, so a test can keep a
/// handle and look at (or reopen) what an image wrote.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl MemStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// A storage holding `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        MemStorage {
            bytes: Arc::new(Mutex::new(bytes)),
        }
    }

    /// A copy of the current bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A poisoned lock only means another thread panicked mid-test; the
        // bytes are still the bytes.
        self.bytes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn range(offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
    let start =
        usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let end = start
        .checked_add(len)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    Ok(start..end)
}

impl Storage for MemStorage {
    fn len(&self) -> io::Result<u64> {
        Ok(self.lock().len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let bytes = self.lock();
        let r = range(offset, buf.len())?;
        let src = bytes
            .get(r)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_shared(buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.lock().resize(len, 0);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn shared_writer(&self) -> Option<&dyn SharedWrite> {
        Some(self)
    }
}

impl SharedWrite for MemStorage {
    fn write_shared(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut bytes = self.lock();
        let r = range(offset, buf.len())?;
        if bytes.len() < r.end {
            bytes.resize(r.end, 0);
        }
        if let Some(dst) = bytes.get_mut(r) {
            dst.copy_from_slice(buf);
        }
        Ok(())
    }
}
