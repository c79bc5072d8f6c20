//! What an export serves: a [`Backend`] (read, write, flush, allocation
//! map), and [`ImageBackend`], the one over an [`Image`] that both `serve`
//! and `mount` use.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};
use crate::image::{Extent, Image};

/// A run of guest bytes and whether any image holds data there (`false`:
/// it reads as zeros and is not allocated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Guest offset.
    pub offset: u64,
    /// Bytes.
    pub length: u64,
    /// Some image of the chain holds data here.
    pub data: bool,
}

/// The disk behind an export. Offsets and lengths are checked by the
/// caller against [`Backend::size`]; a backend still fails cleanly (with
/// an error) on a bad range.
pub trait Backend: Send {
    /// The disk size in bytes.
    fn size(&self) -> u64;
    /// Whether writes are allowed.
    fn writable(&self) -> bool;
    /// Fills `buf` from `offset`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes `data` at `offset` (durable after [`Backend::flush`]).
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// Makes every write so far durable.
    fn flush(&mut self) -> Result<()>;
    /// Up to `limit` (at least 1) spans from `offset` on, alternating
    /// between data and zeros, the first starting at `offset`; the spans
    /// cover at least `length` bytes unless `limit` or the end of the disk
    /// stops them first (the last may reach past `offset + length`).
    fn spans(&mut self, offset: u64, length: u64, limit: usize) -> Result<Vec<Span>>;

    /// Makes `length` bytes at `offset` read as zeros. Skips what already
    /// reads as zeros unless `allocate` asks for every byte to be written.
    fn write_zeroes(&mut self, offset: u64, length: u64, allocate: bool) -> Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(length) as usize];
        let end = offset.saturating_add(length);
        let mut pos = offset;
        while pos < end {
            let mut n = (end - pos).min(CHUNK);
            if !allocate {
                // Only what holds data needs zeros written over it.
                let span = self.spans(pos, n, 1)?;
                if let Some(s) = span.first().filter(|s| s.offset == pos) {
                    let stop = (s.offset + s.length).min(end);
                    if !s.data {
                        pos = stop;
                        continue;
                    }
                    n = n.min(stop - pos);
                }
            }
            self.write(pos, &zeros[..n as usize])?;
            pos += n;
        }
        Ok(())
    }
}

/// The allocation map of a disk, computed once and shared by everyone
/// reading the same image, dropped on every write.
pub type MapCache = Arc<Mutex<Option<Arc<Vec<Span>>>>>;

/// An [`Image`] as a backend. Several backends may share one image (the
/// clients of a writable export: the first may write, the others read)
/// or only the map cache (the clients of a read-only export, each with
/// its own image and shared lock).
#[derive(Debug, Clone)]
pub struct ImageBackend {
    image: Arc<Mutex<Image>>,
    map: MapCache,
    size: u64,
    writable: bool,
}

impl ImageBackend {
    /// A backend over `image`; writes are allowed if `writable` (and the
    /// image was opened for writing).
    pub fn new(image: Arc<Mutex<Image>>, map: MapCache, writable: bool) -> Self {
        let size = lock(&image).size();
        ImageBackend {
            image,
            map,
            size,
            writable,
        }
    }

    /// A backend that owns `image` alone.
    pub fn single(image: Image, writable: bool) -> Self {
        Self::new(Arc::new(Mutex::new(image)), MapCache::default(), writable)
    }

    /// The shared image (to close it when every backend is gone).
    pub fn image(&self) -> &Arc<Mutex<Image>> {
        &self.image
    }

    /// The map, computed under the image's lock so that no write can slip
    /// between computing it and caching it (locks: image, then map).
    fn cached_map(&mut self) -> Result<Arc<Vec<Span>>> {
        let mut image = lock(&self.image);
        if let Some(m) = lock(&self.map).as_ref() {
            return Ok(Arc::clone(m));
        }
        let map = Arc::new(allocation_map(&mut image)?);
        *lock(&self.map) = Some(Arc::clone(&map));
        Ok(map)
    }
}

/// The allocation map of the whole disk, data and zero runs merged. The
/// only call to [`Image::map`] in `serve` and `mount`: when the map
/// streams, this is what changes.
fn allocation_map(image: &mut Image) -> Result<Vec<Span>> {
    let extents: Vec<Extent> = image.map()?;
    let mut out: Vec<Span> = Vec::new();
    for e in extents.into_iter().filter(|e| e.length > 0) {
        match out.last_mut() {
            Some(last) if last.data == e.data && last.offset + last.length == e.offset => {
                last.length += e.length;
            }
            _ => out.push(Span {
                offset: e.offset,
                length: e.length,
                data: e.data,
            }),
        }
    }
    Ok(out)
}

/// Up to `limit` spans of `map` (sorted, merged) from `offset` on, the
/// first clipped to start at `offset`, covering at least `length` bytes
/// where the map goes that far. Offsets the map does not cover (there are
/// none in a map of the whole disk) read as data, the safe answer.
pub fn spans_from(map: &[Span], offset: u64, length: u64, limit: usize) -> Vec<Span> {
    let end = offset.saturating_add(length);
    let mut out = Vec::new();
    let first = map.partition_point(|s| s.offset + s.length <= offset);
    let mut pos = offset;
    for s in map.get(first..).unwrap_or_default() {
        if out.len() >= limit.max(1) || pos >= end {
            break;
        }
        if s.offset > pos {
            out.push(Span {
                offset: pos,
                length: s.offset - pos,
                data: true,
            });
            pos = s.offset;
            continue;
        }
        let stop = s.offset + s.length;
        out.push(Span {
            offset: pos,
            length: stop - pos,
            data: s.data,
        });
        pos = stop;
    }
    out.truncate(limit.max(1));
    out
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave an `Image` half-updated
    // in a way a later call would misread: its own state is consistent
    // between calls. Go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Backend for ImageBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn writable(&self) -> bool {
        self.writable
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        lock(&self.image).read_at(offset, buf)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                reason: "this connection may only read".into(),
            });
        }
        let mut image = lock(&self.image);
        *lock(&self.map) = None;
        image.write_at(offset, data)
    }

    fn flush(&mut self) -> Result<()> {
        lock(&self.image).flush()
    }

    fn spans(&mut self, offset: u64, length: u64, limit: usize) -> Result<Vec<Span>> {
        let map = self.cached_map()?;
        Ok(spans_from(&map, offset, length, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use crate::{CreateOptions, DiskType};

    fn span(offset: u64, length: u64, data: bool) -> Span {
        Span {
            offset,
            length,
            data,
        }
    }

    #[test]
    fn spans_start_at_the_offset_and_stop_at_the_limit() {
        let map = [
            span(0, 100, false),
            span(100, 50, true),
            span(150, 850, false),
        ];
        assert_eq!(spans_from(&map, 10, 5, 8), vec![span(10, 90, false)]);
        assert_eq!(
            spans_from(&map, 99, 2, 8),
            vec![span(99, 1, false), span(100, 50, true)]
        );
        assert_eq!(spans_from(&map, 0, 1000, 2).len(), 2);
        assert_eq!(spans_from(&map, 1000, 10, 8), vec![]);
    }

    #[test]
    fn writing_drops_the_cached_map() {
        let img = CreateOptions::new(DiskType::Dynamic, 8 << 20)
            .create_in(Box::new(MemStorage::new()), "mem.vhd", None)
            .unwrap();
        let mut b = ImageBackend::single(img, true);
        assert_eq!(
            b.spans(0, 8 << 20, 8).unwrap(),
            vec![span(0, 8 << 20, false)]
        );
        b.write(3 << 20, &[1; 512]).unwrap();
        let spans = b.spans(0, 8 << 20, 8).unwrap();
        assert!(
            spans.iter().any(|s| s.data && s.offset <= 3 << 20),
            "{spans:?}"
        );
    }

    #[test]
    fn write_zeroes_skips_what_reads_as_zeros_and_zeroes_the_rest() {
        let img = CreateOptions::new(DiskType::Dynamic, 8 << 20)
            .create_in(Box::new(MemStorage::new()), "mem.vhd", None)
            .unwrap();
        let mut b = ImageBackend::single(img, true);
        b.write(1 << 20, &[7; 4096]).unwrap();
        b.write_zeroes(0, 8 << 20, false).unwrap();
        let mut buf = vec![1u8; 4096];
        b.read(1 << 20, &mut buf).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        // Zeros were written only over the sectors that held data.
        let spans = b.spans(0, 8 << 20, 64).unwrap();
        let data: u64 = spans.iter().filter(|s| s.data).map(|s| s.length).sum();
        assert_eq!(data, 4096, "{spans:?}");
    }
}
