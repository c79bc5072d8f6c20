//! Copying a guest disk from one form into another: the work of
//! `vhd convert`, as library code.
//!
//! A [`Source`] is a guest disk to read (an [`Image`] with its chain, or a
//! raw file); a [`Sink`] is where the guest bytes go (an [`Image`] open for
//! writing, or a raw file). [`copy`] moves the bytes in chunks aligned to
//! the sink's blocks, jumps over stretches the source says hold no data,
//! and writes only the 64 KiB pieces that are not all zeros, so what is
//! unallocated in the source stays unallocated (or a hole) in the output.

use crate::error::{Error, Result};
use crate::image::Image;
use crate::storage::Storage;

/// Bytes read per step (at least; a larger output block is one step).
pub const CHUNK: u64 = 2 * 1024 * 1024;
/// The unit in which zeros are skipped when writing.
const PIECE: usize = 64 * 1024;

/// A guest disk to read from.
pub trait Source {
    /// The guest size in bytes.
    fn size(&self) -> u64;
    /// The first offset at or after `offset` where the disk may hold data;
    /// `None` when only zeros follow.
    fn next_data(&mut self, offset: u64) -> Result<Option<u64>>;
    /// Reads guest bytes at `offset` (inside the disk).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Reads `buf.len()` bytes at `offset`, touching only what may hold
    /// data. Returns whether any of it may hold data (if not, `buf` is all
    /// zeros).
    fn read_sparse(&mut self, offset: u64, buf: &mut [u8]) -> Result<bool> {
        let end = offset + buf.len() as u64;
        if self.next_data(offset)?.is_none_or(|d| d >= end) {
            buf.fill(0);
            return Ok(false);
        }
        self.read_at(offset, buf)?;
        Ok(true)
    }
}

impl Source for Image {
    fn size(&self) -> u64 {
        Image::size(self)
    }

    fn next_data(&mut self, offset: u64) -> Result<Option<u64>> {
        Image::next_data(self, offset)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        Image::read_at(self, offset, buf)
    }
}

/// A raw disk: the bytes of a storage are the guest bytes. Holes of the
/// storage (where it knows them) are not read.
pub struct RawSource {
    storage: Box<dyn Storage>,
    len: u64,
    name: String,
}

impl std::fmt::Debug for RawSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSource")
            .field("name", &self.name)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl RawSource {
    /// The raw disk in `storage`; `name` is used in messages.
    pub fn new(storage: Box<dyn Storage>, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let len = storage
            .len()
            .map_err(|e| Error::io(format!("reading the length of {name}"), e))?;
        Ok(RawSource { storage, len, name })
    }
}

impl Source for RawSource {
    fn size(&self) -> u64 {
        self.len
    }

    fn next_data(&mut self, offset: u64) -> Result<Option<u64>> {
        Ok(self
            .storage
            .next_data(offset)
            .map_err(|e| Error::io(format!("mapping {}", self.name), e))?
            .map(|(start, _)| start.max(offset))
            .filter(|&start| start < self.len))
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.storage
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(format!("reading {} at offset {offset}", self.name), e))
    }

    /// Reads only the data ranges of the storage; its holes become zeros.
    fn read_sparse(&mut self, offset: u64, buf: &mut [u8]) -> Result<bool> {
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        let mut any = false;
        while pos < end {
            let next = self
                .storage
                .next_data(pos)
                .map_err(|e| Error::io(format!("mapping {}", self.name), e))?;
            let (start, stop) = next.map_or((end, end), |(s, e)| {
                (s.max(pos).min(end), e.min(end).min(self.len).max(pos))
            });
            let at = |o: u64| (o - offset) as usize;
            buf[at(pos)..at(start)].fill(0);
            if start < stop {
                self.read_at(start, &mut buf[at(start)..at(stop)])?;
                any = true;
            }
            pos = stop.max(start);
        }
        Ok(any)
    }
}

/// Where the guest bytes go.
pub trait Sink {
    /// Writes `data` at guest `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// The unit writes are best aligned to (a block of a dynamic image).
    fn unit(&self) -> u64 {
        CHUNK
    }
}

impl Sink for Image {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        Image::write_at(self, offset, data)
    }

    fn unit(&self) -> u64 {
        self.block_size().map_or(CHUNK, u64::from)
    }
}

/// A raw output: guest bytes at the same offsets in a storage (which the
/// caller has sized; unwritten ranges stay holes).
pub struct RawSink {
    storage: Box<dyn Storage>,
    name: String,
}

impl std::fmt::Debug for RawSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RawSink {
    /// A raw output in `storage`; `name` is used in messages.
    pub fn new(storage: Box<dyn Storage>, name: impl Into<String>) -> Self {
        RawSink {
            storage,
            name: name.into(),
        }
    }

    /// Makes everything written durable and gives the storage back.
    pub fn finish(mut self) -> Result<Box<dyn Storage>> {
        self.storage
            .sync()
            .map_err(|e| Error::io(format!("syncing {}", self.name), e))?;
        Ok(self.storage)
    }
}

impl Sink for RawSink {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.storage
            .write_all_at(data, offset)
            .map_err(|e| Error::io(format!("writing {} at offset {offset}", self.name), e))
    }
}

/// Which side of a copy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Reading the source.
    Source,
    /// Writing the sink.
    Sink,
}

/// An error of [`copy`], with the side it came from.
#[derive(Debug)]
pub struct CopyError {
    /// Which side failed.
    pub side: Side,
    /// The error.
    pub error: Error,
}

/// What a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyStats {
    /// Bytes written to the sink (pieces that were not all zeros).
    pub written: u64,
}

/// Copies the guest bytes of `source` into `sink`, whose disk is
/// `out_size` bytes (at least the source's size; the rest reads as zeros
/// and is not written). `progress` is told how many bytes of the output
/// each step covered.
pub fn copy(
    source: &mut dyn Source,
    sink: &mut dyn Sink,
    out_size: u64,
    progress: &mut dyn FnMut(u64),
) -> std::result::Result<CopyStats, CopyError> {
    let src = |error| CopyError {
        side: Side::Source,
        error,
    };
    let size = source.size();
    let chunk = CHUNK.max(sink.unit());
    let mut buf = vec![0u8; usize::try_from(chunk).unwrap_or(usize::MAX)];
    let mut stats = CopyStats::default();
    let mut offset = 0u64;
    while offset < out_size {
        // Jump over stretches with no data, staying chunk-aligned.
        let next = source
            .next_data(offset)
            .map_err(src)?
            .map_or(out_size, |d| d - d % chunk);
        if next > offset {
            let skip = next.min(out_size) - offset;
            progress(skip);
            offset += skip;
            continue;
        }
        let n = chunk.min(out_size - offset) as usize;
        let readable = size.saturating_sub(offset).min(n as u64) as usize;
        let data = &mut buf[..n];
        let any = source
            .read_sparse(offset, &mut data[..readable])
            .map_err(src)?;
        data[readable..].fill(0);
        if any {
            stats.written += write_nonzero(sink, offset, data).map_err(|error| CopyError {
                side: Side::Sink,
                error,
            })?;
        }
        offset += n as u64;
        progress(n as u64);
    }
    Ok(stats)
}

/// Writes the pieces of `data` that are not all zeros, joining neighbours
/// into one write; returns the bytes written.
fn write_nonzero(sink: &mut dyn Sink, offset: u64, data: &[u8]) -> Result<u64> {
    let mut written = 0u64;
    let mut run: Option<usize> = None;
    let mut pos = 0usize;
    while pos <= data.len() {
        let end = (pos + PIECE).min(data.len());
        let nonzero = pos < data.len() && !is_zero(&data[pos..end]);
        match (nonzero, run) {
            (true, None) => run = Some(pos),
            (false, Some(start)) => {
                sink.write_at(offset + start as u64, &data[start..pos])?;
                written += (pos - start) as u64;
                run = None;
            }
            _ => {}
        }
        if pos == data.len() {
            break;
        }
        pos = end;
    }
    Ok(written)
}

/// Whether `buf` is all zeros (fast: compares against a zero block).
pub fn is_zero(buf: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    buf.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection_sees_a_single_set_byte() {
        let mut buf = vec![0u8; 10_000];
        assert!(is_zero(&buf));
        buf[9_999] = 1;
        assert!(!is_zero(&buf));
        assert!(is_zero(&[]));
    }
}
