//! A file on disk, locked for the life of the storage.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;

use super::Storage;

/// Which advisory lock to hold on the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Readers: many may hold it; no writer may.
    Shared,
    /// A writer: nobody else may hold any lock.
    Exclusive,
}

/// An image file, held open and locked until dropped.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    writable: bool,
}

/// Why opening a file storage failed.
#[derive(Debug)]
pub enum OpenError {
    /// The file could not be opened.
    Io(io::Error),
    /// Another process holds a conflicting lock.
    Locked(LockMode),
}

impl FileStorage {
    /// Opens an existing file, read-only (shared lock) or read-write
    /// (exclusive lock), without waiting for the lock.
    pub fn open(path: &Path, writable: bool) -> Result<Self, OpenError> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(OpenError::Io)?;
        Self::lock(file, writable)
    }

    /// Creates a new file (never overwriting one) with an exclusive lock.
    pub fn create_new(path: &Path) -> Result<Self, OpenError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(OpenError::Io)?;
        Self::lock(file, true)
    }

    /// Takes the lock without waiting for another holder, but retries for
    /// up to about 100 ms: when a thread of this process starts a program,
    /// the new process holds a copy of every open file (and so of every
    /// lock) until it has started, and a lock released just before must not
    /// look taken.
    fn lock(file: File, writable: bool) -> Result<Self, OpenError> {
        const TRIES: u32 = 20;
        let mode = if writable {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        for attempt in 1..=TRIES {
            let result = if writable {
                file.try_lock()
            } else {
                file.try_lock_shared()
            };
            match result {
                Ok(()) => return Ok(FileStorage { file, writable }),
                Err(TryLockError::WouldBlock) if attempt < TRIES => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => return Err(OpenError::Locked(mode)),
                Err(TryLockError::Error(e)) => return Err(OpenError::Io(e)),
            }
        }
        Err(OpenError::Locked(mode))
    }

    /// Whether the file was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }
}

impl Storage for FileStorage {
    fn len(&self) -> io::Result<u64> {
        let meta = self.file.metadata()?;
        if meta.is_file() {
            Ok(meta.len())
        } else {
            // A block device reports length 0 in its metadata.
            io::Seek::seek(&mut &self.file, io::SeekFrom::End(0))
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        pread(&self.file, buf, offset)
    }

    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        pwrite(&self.file, buf, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// From the file system's hole map (`SEEK_DATA`/`SEEK_HOLE`), where
    /// the system has one; else the whole rest of the file.
    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        let len = self.len()?;
        if offset >= len {
            return Ok(None);
        }
        Ok(seek_data(&self.file, offset, len).unwrap_or(Some((offset, len))))
    }
}

/// `Some(answer)` from `SEEK_DATA`/`SEEK_HOLE`, `None` when the system
/// cannot say.
#[cfg(target_os = "linux")]
fn seek_data(file: &File, offset: u64, len: u64) -> Option<Option<(u64, u64)>> {
    use rustix::fs::{SeekFrom, seek};
    let data = match seek(file, SeekFrom::Data(offset)) {
        Ok(d) => d,
        // ENXIO: no data at or after `offset`.
        Err(rustix::io::Errno::NXIO) => return Some(None),
        Err(_) => return None,
    };
    if data >= len {
        return Some(None);
    }
    let hole = seek(file, SeekFrom::Hole(data)).ok()?;
    (hole > data).then_some(Some((data, hole.min(len))))
}

#[cfg(not(target_os = "linux"))]
fn seek_data(_file: &File, _offset: u64, _len: u64) -> Option<Option<(u64, u64)>> {
    None
}

#[cfg(unix)]
fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(unix)]
fn pwrite(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(windows)]
fn pread(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(windows)]
fn pwrite(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, offset)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => {
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}
