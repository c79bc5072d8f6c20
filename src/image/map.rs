//! Where the guest bytes of a disk come from, streamed: extents are handed
//! to a callback one at a time (neighbours of the same kind joined), so a
//! map of any disk, however fragmented its bitmaps, takes bounded memory.

use crate::error::{Error, Result};
use crate::format::{DiskType, UNALLOCATED};
use crate::storage::Storage;

use super::sparse::Source;
use super::{Extent, Image, Layout, RUN_WINDOW};

/// Joins neighbouring extents of the same kind before handing them on.
struct Coalescer<'f> {
    pending: Option<Extent>,
    sink: &'f mut dyn FnMut(Extent) -> Result<()>,
}

impl Coalescer<'_> {
    fn push(&mut self, e: Extent) -> Result<()> {
        if e.length == 0 {
            return Ok(());
        }
        if let Some(last) = &mut self.pending {
            let contiguous_file = match (last.file_offset, e.file_offset) {
                (Some(a), Some(b)) => a + last.length == b,
                (None, None) => true,
                _ => false,
            };
            if last.offset + last.length == e.offset
                && last.data == e.data
                && last.depth == e.depth
                && contiguous_file
            {
                last.length += e.length;
                return Ok(());
            }
        }
        match self.pending.replace(e) {
            Some(done) => (self.sink)(done),
            None => Ok(()),
        }
    }

    fn finish(mut self) -> Result<()> {
        match self.pending.take() {
            Some(done) => (self.sink)(done),
            None => Ok(()),
        }
    }
}

fn zero(offset: u64, length: u64) -> Extent {
    Extent {
        offset,
        length,
        data: false,
        depth: None,
        file_offset: None,
    }
}

impl Image {
    /// The extents of the whole disk, collected. Its length grows with the
    /// number of runs; [`Image::map_each`] streams them instead.
    pub fn map(&mut self) -> Result<Vec<Extent>> {
        let mut out = Vec::new();
        let size = self.size();
        self.map_each(0, size, &mut |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with each extent of guest bytes `offset..offset + len`,
    /// in order, neighbours of the same kind joined: data (with the layer
    /// of the chain and the offset in its file) or zeros. Memory stays
    /// bounded whatever the number of extents; an error from `f` stops the
    /// walk and is returned.
    pub fn map_each(
        &mut self,
        offset: u64,
        len: u64,
        f: &mut dyn FnMut(Extent) -> Result<()>,
    ) -> Result<()> {
        self.check_range(offset, len)?;
        let mut c = Coalescer {
            pending: None,
            sink: f,
        };
        self.map_into(offset, len, 0, &mut c)?;
        c.finish()
    }

    fn map_into(&mut self, offset: u64, len: u64, depth: usize, c: &mut Coalescer) -> Result<()> {
        let end = offset + len;
        let Layout::Sparse(sparse) = &mut self.layout else {
            // A fixed image: the holes of its file read as zeros, so a
            // sparse fixed image maps (and converts) without reading them.
            let mut pos = offset;
            while pos < end {
                let next = self
                    .storage
                    .next_data(pos)
                    .map_err(|e| Error::io(format!("mapping {}", self.name), e))?;
                let Some((start, stop)) = next.filter(|&(s, _)| s < end) else {
                    return c.push(zero(pos, end - pos));
                };
                let stop = stop.min(end);
                c.push(zero(pos, start.saturating_sub(pos)))?;
                let start = start.max(pos);
                c.push(Extent {
                    offset: start,
                    length: stop - start,
                    data: true,
                    depth: Some(depth),
                    file_offset: Some(start),
                })?;
                pos = stop;
            }
            return Ok(());
        };
        let block_size = sparse.block_size;
        let mut pos = offset;
        while pos < end {
            let n = (block_size - pos % block_size)
                .min(RUN_WINDOW)
                .min(end - pos);
            for (o, l, s) in sparse.runs(&mut self.storage, pos, n)? {
                match s {
                    Source::File(at) => c.push(Extent {
                        offset: o,
                        length: l,
                        data: true,
                        depth: Some(depth),
                        file_offset: Some(at),
                    })?,
                    Source::Absent => match &mut self.parent {
                        Some(p) => p.map_into(o, l, depth + 1, c)?,
                        None if self.footer.disk_type == DiskType::Differencing => {
                            return Err(Error::ParentNotFound {
                                of: None,
                                tried: format!("{} was opened without its parent", self.name),
                            });
                        }
                        None => c.push(zero(o, l))?,
                    },
                }
            }
            pos += n;
        }
        Ok(())
    }

    /// The first guest offset at or after `offset` where some image of the
    /// chain may hold data (an allocated block, or data in a fixed image's
    /// file); `None` when everything from `offset` on reads as zeros. Lets
    /// a copy jump over empty stretches of a huge disk: a walk forward
    /// through the disk costs one pass over each BAT in all.
    pub fn next_data(&mut self, offset: u64) -> Result<Option<u64>> {
        let size = self.size();
        if offset >= size {
            return Ok(None);
        }
        let own = match &mut self.layout {
            Layout::Fixed => self
                .storage
                .next_data(offset)
                .map_err(|e| Error::io(format!("mapping {}", self.name), e))?
                .map(|(start, _)| start.max(offset))
                .filter(|&start| start < size),
            Layout::Sparse(sparse) => sparse
                .next_allocated(offset)
                .map(|block| (block as u64 * sparse.block_size).max(offset)),
        };
        let inherited = match &mut self.parent {
            Some(p) => p.next_data(offset)?,
            None => None,
        };
        Ok(match (own, inherited) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}

impl super::sparse::Sparse {
    /// The first allocated block that covers guest bytes at or after
    /// `offset`. Remembers its last answer, so asking again for a later
    /// offset (up to the block found) costs nothing.
    pub(crate) fn next_allocated(&mut self, offset: u64) -> Option<usize> {
        let first = usize::try_from(offset / self.block_size).unwrap_or(usize::MAX);
        if let Some((from, found)) = self.next_hint
            && from <= first
            && found.is_none_or(|b| first <= b)
        {
            return found;
        }
        let found = self
            .bat
            .get(first..)
            .unwrap_or_default()
            .iter()
            .position(|&e| e != UNALLOCATED)
            .map(|i| first + i);
        self.next_hint = Some((first, found));
        found
    }
}
