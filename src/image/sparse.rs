//! The block layer of dynamic and differencing images: the BAT held in
//! memory, the cache of sector bitmaps, and allocation.
//!
//! # Write order
//!
//! Guest writes to a block go straight to the file. Metadata waits in
//! memory until [`Sparse::flush`], which writes it behind barriers:
//!
//! 1. allocating a block writes the footer at the block's new end of file
//!    first, so the file always ends with a valid footer; then zeros over
//!    the old footer, unless the new block's bitmap (written at flush)
//!    covers it. (A new block starts where the used space ends, or up to
//!    3.5 KiB later so that its data starts on a 4 KiB boundary; see
//!    [`Sparse::slot`]. The old footer lies in that padding.)
//! 2. guest data is written into the block's data area;
//! 3. flush: `sync` (data and footers durable), then the dirty bitmaps,
//!    then `sync`, then the dirty BAT entries, then `sync`.
//!
//! So at any cut the BAT on disk points only at blocks whose bitmap is on
//! disk, and a bitmap bit is set only for sectors whose data is on disk: a
//! sector reads either its old or its new contents. A block allocated but
//! never flushed is leaked space, which the checker reports. The crash
//! tests cut every write sequence at every point to prove this.
//!
//! # Failures
//!
//! Metadata stays dirty in memory until its write succeeded: a bitmap is
//! marked clean, and a BAT entry leaves the dirty set, only after its own
//! write returned `Ok`, so a flush that failed on a write is done again in
//! full by the next flush. A failed *sync* puts the image in a failed
//! state instead (see `super::guarded`): nothing is reported durable after
//! it.

use std::collections::{BTreeSet, HashMap};

use crate::error::{Error, Result};
use crate::format::bat::UNALLOCATED;
use crate::format::{
    ALIGNED_BLOCKS_FROM, BLOCK_DATA_ALIGN, DynHeader, MAX_BLOCK_FILE_OFFSET, SECTOR_SIZE, bitmap,
    block_slot,
};
use crate::storage::Storage;

/// Bytes of bitmaps kept in memory by default (bounded memory); when the
/// cache is full it is written out (as a flush does) and emptied.
pub const DEFAULT_BITMAP_CACHE_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Debug)]
struct CachedBitmap {
    bits: Vec<u8>,
    dirty: bool,
}

/// Where the sectors of one guest range come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Data in this image's file at this byte offset.
    File(u64),
    /// Not in this image: zeros (dynamic) or the parent (differencing).
    Absent,
}

/// The in-memory state of a dynamic or differencing image.
#[derive(Debug)]
pub(crate) struct Sparse {
    pub(crate) header: DynHeader,
    pub(crate) header_offset: u64,
    /// Entries for the blocks that cover `current_size` (the table on disk
    /// may be longer; entries past the disk are never touched).
    pub(crate) bat: Vec<u32>,
    pub(crate) block_size: u64,
    pub(crate) bitmap_size: u64,
    /// Where the next block goes: the offset of the trailing footer.
    pub(crate) next_free: u64,
    dirty_bat: BTreeSet<usize>,
    bitmaps: HashMap<usize, CachedBitmap>,
    /// Most bytes of bitmaps to keep in memory (at least one bitmap).
    cache_limit: u64,
    /// The last answer of `next_allocated`: from which block it looked,
    /// and what it found (reset when a block is allocated).
    pub(crate) next_hint: Option<(usize, Option<usize>)>,
}

impl Sparse {
    pub(crate) fn new(
        header: DynHeader,
        header_offset: u64,
        bat: Vec<u32>,
        next_free: u64,
        cache_limit: u64,
    ) -> Self {
        let block_size = u64::from(header.block_size);
        let bitmap_size = header.bitmap_size();
        Sparse {
            header,
            header_offset,
            bat,
            block_size,
            bitmap_size,
            next_free,
            dirty_bat: BTreeSet::new(),
            bitmaps: HashMap::new(),
            cache_limit,
            next_hint: None,
        }
    }

    /// Number of allocated blocks.
    pub(crate) fn allocated_blocks(&self) -> usize {
        self.bat.iter().filter(|&&e| e != UNALLOCATED).count()
    }

    /// Whether metadata is waiting for a flush.
    pub(crate) fn is_dirty(&self) -> bool {
        !self.dirty_bat.is_empty() || self.bitmaps.values().any(|b| b.dirty)
    }

    fn entry(&self, block: usize) -> u32 {
        self.bat.get(block).copied().unwrap_or(UNALLOCATED)
    }

    fn bitmap(&mut self, storage: &mut dyn Storage, block: usize) -> Result<&mut CachedBitmap> {
        if !self.bitmaps.contains_key(&block) {
            self.make_room(storage)?;
            let entry = self.entry(block);
            let mut bits = vec![0u8; usize::try_from(self.bitmap_size).unwrap_or(0)];
            storage
                .read_exact_at(&mut bits, u64::from(entry) * SECTOR_SIZE)
                .map_err(|e| Error::io(format!("reading the bitmap of block {block}"), e))?;
            self.bitmaps
                .insert(block, CachedBitmap { bits, dirty: false });
        }
        self.bitmaps
            .get_mut(&block)
            .ok_or_else(|| Error::InvalidArgument("bitmap cache lost an entry".into()))
    }

    /// Empties the bitmap cache if one more bitmap would overflow it,
    /// writing dirty bitmaps and BAT entries first (in the flush order).
    fn make_room(&mut self, storage: &mut dyn Storage) -> Result<()> {
        if !self.bitmaps.is_empty()
            && (self.bitmaps.len() as u64 + 1) * self.bitmap_size > self.cache_limit
        {
            self.write_metadata(storage)?;
            self.bitmaps.clear();
        }
        Ok(())
    }

    /// Splits `offset..offset+len` (inside one block) into runs that come
    /// from one source: `(guest_offset, len, source)` in order.
    pub(crate) fn runs(
        &mut self,
        storage: &mut dyn Storage,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(u64, u64, Source)>> {
        let block = usize::try_from(offset / self.block_size).unwrap_or(usize::MAX);
        let in_block = offset % self.block_size;
        let entry = self.entry(block);
        if entry == UNALLOCATED {
            return Ok(vec![(offset, len, Source::Absent)]);
        }
        let data_start = u64::from(entry) * SECTOR_SIZE + self.bitmap_size;
        let bits = &self.bitmap(storage, block)?.bits;
        let end = in_block + len;
        let last_sector = (end - 1) / SECTOR_SIZE;
        let mut out = Vec::new();
        let mut pos = in_block;
        while pos < end {
            let sector = pos / SECTOR_SIZE;
            let run_sectors = bitmap::run_length(bits, sector, last_sector + 1);
            let run_end = ((sector + run_sectors) * SECTOR_SIZE).min(end);
            let source = if bitmap::get(bits, sector) {
                Source::File(data_start + pos)
            } else {
                Source::Absent
            };
            out.push((offset - in_block + pos, run_end - pos, source));
            pos = run_end;
        }
        Ok(out)
    }

    /// Writes whole sectors `data` at guest `offset` (inside one block),
    /// allocating the block if needed; sets their bitmap bits (in memory).
    pub(crate) fn write_block(
        &mut self,
        storage: &mut dyn Storage,
        footer: &[u8; 512],
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        let block = usize::try_from(offset / self.block_size).unwrap_or(usize::MAX);
        let in_block = offset % self.block_size;
        let mut entry = self.entry(block);
        if entry == UNALLOCATED {
            entry = self.allocate(storage, footer, block)?;
        }
        let data_start = u64::from(entry) * SECTOR_SIZE + self.bitmap_size;
        storage
            .write_all_at(data, data_start + in_block)
            .map_err(|e| Error::io(format!("writing data of block {block}"), e))?;
        let first = in_block / SECTOR_SIZE;
        let last = (in_block + data.len() as u64).div_ceil(SECTOR_SIZE);
        let cached = self.bitmap(storage, block)?;
        if bitmap::set_range(&mut cached.bits, first, last) {
            cached.dirty = true;
        }
        Ok(())
    }

    /// Where a new block starts: at the end of the used space
    /// (`next_free`) when blocks are smaller than [`ALIGNED_BLOCKS_FROM`],
    /// else at the first place from there where its data starts on a
    /// [`BLOCK_DATA_ALIGN`] boundary, as long as that is a place a BAT
    /// entry can address (near the 2 TiB limit the block is packed, so
    /// that every disk `create` accepts can be filled).
    pub(crate) fn slot(&self) -> u64 {
        let packed = self.next_free;
        if self.block_size < ALIGNED_BLOCKS_FROM {
            return packed;
        }
        let aligned = block_slot(packed, self.bitmap_size, BLOCK_DATA_ALIGN);
        if aligned < MAX_BLOCK_FILE_OFFSET {
            aligned
        } else {
            packed
        }
    }

    /// Step 1 of the write order: a new block at the end of the file.
    fn allocate(
        &mut self,
        storage: &mut dyn Storage,
        footer: &[u8; 512],
        block: usize,
    ) -> Result<u32> {
        let start = self.slot();
        let end = start + self.bitmap_size + self.block_size;
        let sector = u32::try_from(start / SECTOR_SIZE)
            .ok()
            .filter(|&s| s != UNALLOCATED && start < MAX_BLOCK_FILE_OFFSET)
            .ok_or_else(|| Error::SizeLimit {
                requested: end,
                limit: MAX_BLOCK_FILE_OFFSET,
                reason: "a block would start past 2 TiB, which a 32-bit BAT entry cannot address"
                    .into(),
            })?;
        self.make_room(storage)?;
        storage
            .write_all_at(footer, end)
            .map_err(|e| Error::io("writing the footer after a new block", e))?;
        // The padding before the block: nothing references it, and it
        // would keep the old footer (a stale copy) for good.
        if start > self.next_free {
            let pad = vec![0u8; usize::try_from(start - self.next_free).unwrap_or(0)];
            storage
                .write_all_at(&pad, self.next_free)
                .map_err(|e| Error::io("writing zeros before a new block", e))?;
        }
        if let Some(slot) = self.bat.get_mut(block) {
            *slot = sector;
        }
        self.dirty_bat.insert(block);
        self.next_hint = None;
        let bits = vec![0u8; usize::try_from(self.bitmap_size).unwrap_or(0)];
        self.bitmaps
            .insert(block, CachedBitmap { bits, dirty: true });
        self.next_free = end;
        Ok(sector)
    }

    /// Step 3 of the write order: dirty bitmaps, then dirty BAT entries,
    /// each behind a sync.
    pub(crate) fn write_metadata(&mut self, storage: &mut dyn Storage) -> Result<()> {
        if !self.is_dirty() {
            return Ok(());
        }
        storage
            .sync()
            .map_err(|e| Error::io("syncing data before metadata", e))?;
        let mut dirty: Vec<usize> = self
            .bitmaps
            .iter()
            .filter(|(_, b)| b.dirty)
            .map(|(k, _)| *k)
            .collect();
        dirty.sort_unstable();
        for block in dirty {
            let entry = self.entry(block);
            if let Some(cached) = self.bitmaps.get_mut(&block) {
                storage
                    .write_all_at(&cached.bits, u64::from(entry) * SECTOR_SIZE)
                    .map_err(|e| Error::io(format!("writing the bitmap of block {block}"), e))?;
                cached.dirty = false;
            }
        }
        storage
            .sync()
            .map_err(|e| Error::io("syncing bitmaps before the BAT", e))?;
        // Entries leave the dirty set only once written: a failed write
        // leaves them (and everything after them) for the next flush.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &block in &self.dirty_bat {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == block => *last = block,
                _ => runs.push((block, block)),
            }
        }
        for (first, last) in runs {
            let bytes: Vec<u8> = (first..=last)
                .flat_map(|b| self.entry(b).to_be_bytes())
                .collect();
            let at = self.header.table_offset + first as u64 * 4;
            storage
                .write_all_at(&bytes, at)
                .map_err(|e| Error::io("writing the BAT", e))?;
            for block in first..=last {
                self.dirty_bat.remove(&block);
            }
        }
        Ok(())
    }

    /// The BAT entry of a block (for maps and the checker).
    pub(crate) fn bat_entry(&self, block: usize) -> u32 {
        self.entry(block)
    }

    /// Takes a BAT entry that a maintenance operation wrote itself (see
    /// `super::maintenance`): the entry in memory follows the file, its
    /// block's cached bitmap is dropped (it is read again from the new
    /// place when needed), and nothing becomes dirty. Only for an image
    /// with no dirty metadata.
    pub(crate) fn adopt_entry(&mut self, block: usize, entry: u32) {
        if let Some(slot) = self.bat.get_mut(block) {
            *slot = entry;
        }
        self.bitmaps.remove(&block);
        self.next_hint = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::dyn_header::{HEADER_VERSION, PARENT_NAME_SIZE};
    use crate::format::locator::LOCATOR_COUNT;
    use crate::format::{LocatorEntry, timestamp::Timestamp};

    /// The block layer of a dynamic image with blocks of `block_size`
    /// whose used space ends at `next_free`.
    fn sparse(block_size: u32, next_free: u64) -> Sparse {
        let header = DynHeader {
            data_offset: u64::MAX,
            table_offset: 1536,
            header_version: HEADER_VERSION,
            max_table_entries: 4,
            block_size,
            parent_unique_id: uuid::Uuid::nil(),
            parent_time_stamp: Timestamp(0),
            parent_unicode_name: [0; PARENT_NAME_SIZE],
            parent_locators: [LocatorEntry::default(); LOCATOR_COUNT],
        };
        Sparse::new(
            header,
            512,
            vec![UNALLOCATED; 4],
            next_free,
            DEFAULT_BITMAP_CACHE_BYTES,
        )
    }

    #[test]
    fn a_block_is_padded_to_aligned_data_unless_that_place_is_past_what_an_entry_can_name() {
        let tib2 = 1u64 << 41;
        // 512 KiB blocks, a bitmap of one sector: data at the next 4 KiB.
        assert_eq!(sparse(512 * 1024, 2048).slot(), 3584);
        assert_eq!(sparse(512 * 1024, 3584).slot(), 3584);
        assert_eq!(sparse(512 * 1024, 4096).slot(), 7680);
        // 16 MiB blocks, a bitmap of 4 KiB: the block itself on 4 KiB.
        assert_eq!(sparse(16 << 20, 2048).slot(), 4096);
        // Near 2 TiB: aligned while the place is one a BAT entry names
        // (below MAX_BLOCK_FILE_OFFSET, 2 TiB - 512), packed after.
        assert_eq!(sparse(512 * 1024, tib2 - 8192).slot(), tib2 - 4608);
        assert_eq!(sparse(512 * 1024, tib2 - 1536).slot(), tib2 - 1536);
        // Blocks under 512 KiB: packed.
        assert_eq!(sparse(256 * 1024, 2048).slot(), 2048);
    }
}
