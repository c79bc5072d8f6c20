//! What an export serves: a [`Backend`] (read, write, flush, allocation
//! map), and [`ImageBackend`], the one over an [`Image`] that both `serve`
//! and `mount` use. The allocation map is asked of the image for the range
//! a request covers, never for the whole disk.

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

/// An [`Image`] as a backend. Several backends may share one image (the
/// clients of a writable export: the first may write, the others read).
#[derive(Debug, Clone)]
pub struct ImageBackend {
    image: Arc<Mutex<Image>>,
    size: u64,
    writable: bool,
}

impl ImageBackend {
    /// A backend over `image`; writes are allowed if `writable` (and the
    /// image was opened for writing).
    pub fn new(image: Arc<Mutex<Image>>, writable: bool) -> Self {
        let size = lock(&image).size();
        ImageBackend {
            image,
            size,
            writable,
        }
    }

    /// A backend that owns `image` alone.
    pub fn single(image: Image, writable: bool) -> Self {
        Self::new(Arc::new(Mutex::new(image)), writable)
    }

    /// The shared image (to close it when every backend is gone).
    pub fn image(&self) -> &Arc<Mutex<Image>> {
        &self.image
    }
}

/// Guest bytes mapped per step: a step holds at most this many bytes'
/// worth of extents, so a request costs bounded memory whatever the
/// bitmaps look like.
const MAP_WINDOW: u64 = 64 << 20;

/// Up to `limit` (at least 1) spans of `image` from `offset` on, data and
/// zero runs merged, covering `offset..offset + length` (clipped to the
/// disk) unless the limit stops them first. Stretches without data are
/// jumped over in one step ([`Image::next_data`]); the rest is mapped a
/// window at a time ([`Image::map_each`]), so only what is asked is looked
/// at and memory stays bounded.
pub fn image_spans(image: &mut Image, offset: u64, length: u64, limit: usize) -> Result<Vec<Span>> {
    let end = offset.saturating_add(length).min(image.size());
    let limit = limit.max(1);
    let mut out: Vec<Span> = Vec::new();
    let push = |out: &mut Vec<Span>, s: Span| match out.last_mut() {
        Some(last) if last.data == s.data && last.offset + last.length == s.offset => {
            last.length += s.length;
        }
        _ => out.push(s),
    };
    let mut pos = offset;
    while pos < end && out.len() <= limit {
        let next = image.next_data(pos)?.map_or(end, |d| d.min(end));
        if next > pos {
            push(
                &mut out,
                Span {
                    offset: pos,
                    length: next - pos,
                    data: false,
                },
            );
            pos = next;
            continue;
        }
        let n = (end - pos).min(MAP_WINDOW);
        let mut window = Vec::new();
        image.map_each(pos, n, &mut |e: Extent| {
            window.push(Span {
                offset: e.offset,
                length: e.length,
                data: e.data,
            });
            Ok(())
        })?;
        for s in window {
            push(&mut out, s);
        }
        pos += n;
    }
    out.truncate(limit);
    Ok(out)
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
        lock(&self.image).write_at(offset, data)
    }

    fn flush(&mut self) -> Result<()> {
        lock(&self.image).flush()
    }

    fn spans(&mut self, offset: u64, length: u64, limit: usize) -> Result<Vec<Span>> {
        image_spans(&mut lock(&self.image), offset, length, limit)
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
        let mut img = CreateOptions::new(DiskType::Dynamic, 8 << 20)
            .block_size(1 << 20)
            .create_in(Box::new(MemStorage::new()), "mem.vhd", None)
            .unwrap();
        img.write_at(3 << 20, &[1; 1024]).unwrap();
        img.write_at((3 << 20) + 4096, &[1; 512]).unwrap();
        assert_eq!(
            image_spans(&mut img, 10, 5, 8).unwrap(),
            vec![span(10, 5, false)]
        );
        assert_eq!(
            image_spans(&mut img, (3 << 20) - 1, 2, 8).unwrap(),
            vec![span((3 << 20) - 1, 1, false), span(3 << 20, 1, true)]
        );
        let all = image_spans(&mut img, 0, 8 << 20, 8).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[3], span((3 << 20) + 4096, 512, true));
        assert_eq!(image_spans(&mut img, 0, 8 << 20, 2).unwrap().len(), 2);
        assert_eq!(image_spans(&mut img, 8 << 20, 10, 8).unwrap(), vec![]);
    }

    #[test]
    fn spans_see_every_write() {
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
