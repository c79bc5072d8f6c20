//! Maintenance primitives of the driver, for the operations of
//! [`crate::ops`] (repair, resize, compact, rebase): where everything in a
//! dynamic or differencing file lies, and writes that change the layout of
//! an open image without ever leaving it invalid.
//!
//! # The promise every primitive keeps
//!
//! After each single write, and after any subset of the writes made since
//! the last sync (what a power loss may keep), the file is a valid image
//! that reads as it did before the primitive or as it does after it. Three
//! facts make that possible:
//!
//! * a write inside one sector is atomic (disks promise it; the crash tests
//!   tear writes only at sector boundaries), so a BAT entry, a footer at a
//!   sector boundary, or header fields that share a sector with the header
//!   checksum switch at once;
//! * space that nothing references can be written freely: a block is
//!   copied to free space and synced, and only then does its BAT entry
//!   switch to the copy (the old place is then free space);
//! * the file always ends with a valid footer: a footer is written (and
//!   synced) at a new end of file before anything is written between the
//!   old end and the new one, and a file is cut only after a footer was
//!   written (and synced) where the cut leaves the end.
//!
//! Every primitive starts from an image with no dirty metadata (see
//! [`Image::prepare_maintenance`]) and updates the image in memory only
//! after its last sync succeeded. After an error the image in memory may
//! not match the file: drop it and reopen.

use crate::error::{Error, Result};
use crate::format::bat::{BATMAP_HEAD_LEN, UNALLOCATED, bat_size_on_disk, parse_batmap_head};
use crate::format::checksum::checksum;
use crate::format::{
    BLOCK_DATA_ALIGN, DYN_HEADER_SIZE, DiskType, DynHeader, FOOTER_SIZE, Footer, SECTOR_SIZE,
    block_data_aligned, block_slot,
};
use crate::storage::Storage;

use super::{Image, Layout, sparse::Sparse};

/// Bytes moved per read and write when blocks are copied or space is zeroed.
const COPY_CHUNK: u64 = 4 * 1024 * 1024;
/// Offset of the data offset field in the footer.
const FOOTER_DATA_OFFSET: usize = 16;
/// Offset of the checksum field in the footer.
const FOOTER_CHECKSUM: usize = crate::format::footer::CHECKSUM_OFFSET;
/// Offset of the checksum field in the dynamic header.
const HEADER_CHECKSUM: usize = crate::format::dyn_header::CHECKSUM_OFFSET;
/// Footer bytes from here on are reserved (a writer's private marks, such
/// as Xen's hidden flag, live there): kept when a footer is rewritten.
const FOOTER_RESERVED: usize = crate::format::footer::RESERVED_OFFSET;
/// The reserved ranges of the dynamic header, kept when it is rewritten.
const HEADER_RESERVED: [(usize, usize); 2] = [(60, 64), (768, DYN_HEADER_SIZE)];

/// What a region of a dynamic or differencing file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// The footer copy, the dynamic header, the BAT (padded to a sector),
    /// a parent locator's data, or Xen's batmap.
    Metadata(&'static str),
    /// An allocated block of the disk (bitmap and data).
    Block(usize),
    /// A block that a BAT entry past the end of the disk points at.
    BeyondDisk(usize),
}

/// A byte range of the file `start..end` and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) what: Use,
}

impl Region {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

/// `offset` rounded up to a whole sector.
pub(crate) fn sector_ceil(offset: u64) -> u64 {
    offset.div_ceil(SECTOR_SIZE) * SECTOR_SIZE
}

/// The footer `footer` as bytes, with the reserved bytes of `old` kept and
/// the checksum computed over the result.
pub(crate) fn footer_bytes_keeping(footer: &Footer, old: &[u8; FOOTER_SIZE]) -> [u8; FOOTER_SIZE] {
    let mut bytes = footer.to_bytes();
    bytes[FOOTER_RESERVED..].copy_from_slice(&old[FOOTER_RESERVED..]);
    set_checksum(&mut bytes, FOOTER_CHECKSUM);
    bytes
}

/// The header `header` as bytes, with the reserved fields of `old` kept and
/// the checksum computed over the result.
pub(crate) fn header_bytes_keeping(
    header: &DynHeader,
    old: &[u8; DYN_HEADER_SIZE],
) -> [u8; DYN_HEADER_SIZE] {
    let mut bytes = header.to_bytes();
    for (from, to) in HEADER_RESERVED {
        bytes[from..to].copy_from_slice(&old[from..to]);
    }
    set_checksum(&mut bytes, HEADER_CHECKSUM);
    bytes
}

/// Writes the checksum of `bytes` into its field at `field`.
pub(crate) fn set_checksum(bytes: &mut [u8], field: usize) {
    let sum = checksum(bytes, field);
    if let Some(slot) = bytes.get_mut(field..field + 4) {
        slot.copy_from_slice(&sum.to_be_bytes());
    }
}

/// Footer bytes `footer` with the data offset field set to `offset`.
fn with_data_offset(footer: &[u8; FOOTER_SIZE], offset: u64) -> [u8; FOOTER_SIZE] {
    let mut bytes = *footer;
    bytes[FOOTER_DATA_OFFSET..FOOTER_DATA_OFFSET + 8].copy_from_slice(&offset.to_be_bytes());
    set_checksum(&mut bytes, FOOTER_CHECKSUM);
    bytes
}

/// Moves the trailing footer of a file to `to` (and cuts the file there),
/// keeping a valid footer at the end at every step: `footer` is written
/// where the cut will leave the end, synced, then the file is cut and
/// synced. When the new place overlaps the current trailing footer (which
/// starts at `current`, in a file `len` bytes long), a copy is first
/// written after it, so the end never holds half a footer. Nothing that
/// is referenced may lie in `to..current`; the caller sees to that.
pub(crate) fn cut_to(
    storage: &mut dyn Storage,
    footer: &[u8; FOOTER_SIZE],
    current: u64,
    len: u64,
    to: u64,
    name: &str,
) -> Result<()> {
    let io = |what: &str| {
        let what = format!("{what} of {name}");
        move |e| Error::io(what, e)
    };
    if to + FOOTER_SIZE as u64 > current {
        // The new place overlaps the trailing footer: first a footer
        // after it, at a sector boundary past the end.
        let beyond = sector_ceil(len.max(to + FOOTER_SIZE as u64));
        storage
            .write_all_at(footer, beyond)
            .map_err(io("writing a footer past the end"))?;
        storage.sync().map_err(io("syncing the footer"))?;
    }
    storage
        .write_all_at(footer, to)
        .map_err(io("writing the footer at the new end"))?;
    storage.sync().map_err(io("syncing the footer"))?;
    storage
        .set_len(to + FOOTER_SIZE as u64)
        .map_err(io("cutting the file"))?;
    storage.sync().map_err(io("syncing the cut"))
}

/// Writes `len` zero bytes at `offset`, a chunk at a time.
pub(crate) fn write_zeros(
    storage: &mut dyn Storage,
    offset: u64,
    len: u64,
    name: &str,
) -> Result<()> {
    let zeros = vec![0u8; usize::try_from(COPY_CHUNK.min(len)).unwrap_or(0)];
    let mut done = 0;
    while done < len {
        let n = COPY_CHUNK.min(len - done);
        storage
            .write_all_at(&zeros[..n as usize], offset + done)
            .map_err(|e| {
                Error::io(
                    format!("writing zeros into {name} at offset {}", offset + done),
                    e,
                )
            })?;
        done += n;
    }
    Ok(())
}

impl Image {
    fn sparse(&self) -> Result<&Sparse> {
        match &self.layout {
            Layout::Sparse(s) => Ok(s),
            Layout::Fixed => Err(Error::InvalidArgument(format!(
                "{} is a fixed image; this needs a dynamic or differencing one",
                self.name
            ))),
        }
    }

    fn sparse_mut(&mut self) -> Result<&mut Sparse> {
        let name = self.name.clone();
        match &mut self.layout {
            Layout::Sparse(s) => Ok(s),
            Layout::Fixed => Err(Error::InvalidArgument(format!(
                "{name} is a fixed image; this needs a dynamic or differencing one"
            ))),
        }
    }

    fn io_error(&self, what: &str) -> impl Fn(std::io::Error) -> Error {
        let what = format!("{what} of {}", self.name);
        move |e| Error::io(what.clone(), e)
    }

    /// Makes the image ready for a maintenance primitive: open for
    /// writing, not failed, every dirty piece of metadata written and
    /// synced (so what is in memory is what is on disk), and, for a
    /// dynamic or differencing image, the trailing footer at a sector
    /// boundary (a footer elsewhere is moved up to the next boundary:
    /// one write inside one sector, then the bytes it leaves behind are
    /// zeroed).
    pub(crate) fn prepare_maintenance(&mut self) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                reason: format!("{} was opened read-only", self.name),
            });
        }
        self.flush()?;
        if matches!(self.layout, Layout::Fixed) {
            return Ok(());
        }
        // Blocks allocated since the image was opened moved the footer
        // (the driver keeps only `next_free` up to date): the trailing
        // footer is the last 512 bytes of the file.
        let at = self.file_len()?.saturating_sub(FOOTER_SIZE as u64);
        self.footer_offset = at;
        if at.is_multiple_of(SECTOR_SIZE) {
            return Ok(());
        }
        let up = sector_ceil(at);
        let footer = self.trailing_footer_raw()?;
        let name = self.name.clone();
        self.storage
            .write_all_at(&footer, up)
            .map_err(self.io_error("moving the footer to a sector boundary"))?;
        self.storage
            .sync()
            .map_err(self.io_error("syncing the footer"))?;
        write_zeros(&mut self.storage, at, up - at, &name)?;
        self.storage.sync().map_err(self.io_error("syncing"))?;
        self.footer_offset = up;
        self.sparse_mut()?.next_free = up;
        Ok(())
    }

    /// The 512 bytes of the trailing footer as they are in the file (for a
    /// fixed image with a 511-byte footer, the 511 and a zero).
    pub(crate) fn trailing_footer_raw(&self) -> Result<[u8; FOOTER_SIZE]> {
        let len = self
            .storage
            .len()
            .map_err(self.io_error("reading the length"))?;
        let n = usize::try_from(len.saturating_sub(self.footer_offset))
            .unwrap_or(FOOTER_SIZE)
            .min(FOOTER_SIZE);
        let mut buf = [0u8; FOOTER_SIZE];
        self.storage
            .read_exact_at(&mut buf[..n], self.footer_offset)
            .map_err(self.io_error("reading the footer"))?;
        Ok(buf)
    }

    /// The 1024 bytes of the dynamic header as they are in the file.
    pub(crate) fn header_raw(&self) -> Result<[u8; DYN_HEADER_SIZE]> {
        let offset = self.sparse()?.header_offset;
        let mut buf = [0u8; DYN_HEADER_SIZE];
        self.storage
            .read_exact_at(&mut buf, offset)
            .map_err(self.io_error("reading the dynamic header"))?;
        Ok(buf)
    }

    /// Reads file bytes (not guest bytes) at `offset`.
    pub(crate) fn read_file_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.storage
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(format!("reading {} at file offset {offset}", self.name), e))
    }

    /// The length of the file.
    pub(crate) fn file_len(&self) -> Result<u64> {
        self.storage
            .len()
            .map_err(self.io_error("reading the length"))
    }

    /// Bytes of one allocated block in the file: bitmap plus data.
    pub(crate) fn block_span(&self) -> Result<u64> {
        let s = self.sparse()?;
        Ok(s.bitmap_size + s.block_size)
    }

    /// Bytes of the sector bitmap in front of each block.
    pub(crate) fn bitmap_bytes(&self) -> Result<u64> {
        Ok(self.sparse()?.bitmap_size)
    }

    /// The parent of a differencing image, to read through.
    pub(crate) fn parent_mut(&mut self) -> Option<&mut Image> {
        self.parent.as_deref_mut()
    }

    /// Replaces the parent in memory (after a rebase switched the header).
    pub(crate) fn set_parent(&mut self, parent: Image, source: super::ParentSource) {
        self.parent = Some(Box::new(parent));
        self.parent_source = Some(source);
    }

    /// Every region of the file that something references, sorted by
    /// where it starts: the footer copy, the dynamic header, the BAT
    /// (padded to a sector), the data of every parent locator in use that
    /// lies in the file, Xen's batmap when there is one, and every
    /// allocated block (also those that BAT entries past the end of the
    /// disk point at). The BAT past the disk is read 64 KiB at a time and
    /// only its allocated entries are kept.
    pub(crate) fn layout_regions(&self) -> Result<Vec<Region>> {
        let s = self.sparse()?;
        let h = &s.header;
        let span = s.bitmap_size + s.block_size;
        let limit = self.footer_offset;
        let bat_end = h.table_offset + bat_size_on_disk(h.max_table_entries);
        let mut out = vec![
            Region {
                start: 0,
                end: FOOTER_SIZE as u64,
                what: Use::Metadata("the footer copy"),
            },
            Region {
                start: s.header_offset,
                end: s.header_offset + DYN_HEADER_SIZE as u64,
                what: Use::Metadata("the dynamic header"),
            },
            Region {
                start: h.table_offset,
                end: bat_end.min(limit),
                what: Use::Metadata("the BAT"),
            },
        ];
        for loc in h.parent_locators.iter().filter(|l| l.is_used()) {
            let start = loc.platform_data_offset;
            let len = loc
                .data_space_bytes()
                .max(u64::from(loc.platform_data_length));
            if let Some(end) = start
                .checked_add(len)
                .filter(|&e| e <= limit && start >= FOOTER_SIZE as u64 && len > 0)
            {
                out.push(Region {
                    start,
                    end,
                    what: Use::Metadata("a parent locator's data"),
                });
            }
        }
        out.extend(self.batmap_regions(bat_end)?);
        for (i, &e) in s.bat.iter().enumerate() {
            if e != UNALLOCATED {
                let start = u64::from(e) * SECTOR_SIZE;
                out.push(Region {
                    start,
                    end: start + span,
                    what: Use::Block(i),
                });
            }
        }
        for (i, e) in self.entries_past_disk()? {
            let start = u64::from(e) * SECTOR_SIZE;
            out.push(Region {
                start,
                end: start + span,
                what: Use::BeyondDisk(i),
            });
        }
        out.sort_by_key(|r| (r.start, r.end));
        Ok(out)
    }

    /// Xen's batmap: a header sector with the cookie `tdbatmap` right
    /// after the BAT, holding the map's offset (u64) and size in sectors
    /// (u32), and the map itself.
    fn batmap_regions(&self, bat_end: u64) -> Result<Vec<Region>> {
        let limit = self.footer_offset;
        if bat_end + SECTOR_SIZE > limit {
            return Ok(Vec::new());
        }
        let mut head = [0u8; BATMAP_HEAD_LEN];
        self.read_file_at(&mut head, bat_end)?;
        let Some(map) = parse_batmap_head(&head, limit) else {
            return Ok(Vec::new());
        };
        let mut out = vec![Region {
            start: bat_end,
            end: bat_end + SECTOR_SIZE,
            what: Use::Metadata("Xen's batmap header"),
        }];
        out.extend(map.map(|(start, end)| Region {
            start,
            end,
            what: Use::Metadata("Xen's batmap"),
        }));
        Ok(out)
    }

    /// Whether the file has Xen's batmap after its BAT.
    pub(crate) fn has_batmap(&self) -> Result<bool> {
        let h = &self.sparse()?.header;
        let bat_end = h.table_offset + bat_size_on_disk(h.max_table_entries);
        Ok(!self.batmap_regions(bat_end)?.is_empty())
    }

    /// How many blocks Xen's batmap has a bit for (eight per byte of its
    /// map), when the file has one.
    pub(crate) fn batmap_blocks(&self) -> Result<Option<u64>> {
        let h = &self.sparse()?.header;
        let bat_end = h.table_offset + bat_size_on_disk(h.max_table_entries);
        Ok(self
            .batmap_regions(bat_end)?
            .iter()
            .find(|r| r.what == Use::Metadata("Xen's batmap"))
            .map(|r| (r.end - r.start) * 8))
    }

    /// The allocated BAT entries past the end of the disk (the table may
    /// be longer than the disk needs), read 64 KiB at a time.
    pub(crate) fn entries_past_disk(&self) -> Result<Vec<(usize, u32)>> {
        const CHUNK: u64 = 16 * 1024;
        let s = self.sparse()?;
        let first = s.bat.len() as u64;
        let total = u64::from(s.header.max_table_entries);
        let mut out = Vec::new();
        let mut done = first;
        while done < total {
            let n = CHUNK.min(total - done);
            let entries =
                super::rules::read_bat(&self.storage, s.header.table_offset + done * 4, n)?;
            for (k, e) in entries.into_iter().enumerate() {
                if e != UNALLOCATED {
                    out.push((usize::try_from(done).unwrap_or(usize::MAX) + k, e));
                }
            }
            done += n;
        }
        Ok(out)
    }

    /// The alignment of block data the image keeps: 4096 when the data of
    /// every allocated block starts at a multiple of 4 KiB (as Windows
    /// lays blocks out), else a sector.
    pub(crate) fn data_alignment(&self) -> Result<u64> {
        let s = self.sparse()?;
        let mut any = false;
        for &e in &s.bat {
            if e == UNALLOCATED {
                continue;
            }
            any = true;
            if !block_data_aligned(e, s.bitmap_size) {
                return Ok(SECTOR_SIZE);
            }
        }
        Ok(if any { BLOCK_DATA_ALIGN } else { SECTOR_SIZE })
    }

    /// The first place at or after `pos` where a block may start so that
    /// its data has the alignment `align`.
    pub(crate) fn slot_at_or_after(&self, pos: u64, align: u64) -> Result<u64> {
        Ok(block_slot(pos, self.sparse()?.bitmap_size, align))
    }

    /// Moves the end of the data area (where the trailing footer starts)
    /// to `end`, a sector boundary.
    ///
    /// Further out: the footer is written at `end` and synced (the bytes
    /// between the old place and `end` are then unreferenced; the caller
    /// fills them). Further in: see [`cut_to`]; nothing referenced may lie
    /// past `end`.
    pub(crate) fn set_data_end(&mut self, end: u64) -> Result<()> {
        if !end.is_multiple_of(SECTOR_SIZE) {
            return Err(Error::InvalidArgument(format!(
                "set_data_end: {end} is not a sector boundary"
            )));
        }
        let current = self.footer_offset;
        if end == current {
            return Ok(());
        }
        let footer = self.trailing_footer_raw()?;
        if end > current {
            self.storage
                .write_all_at(&footer, end)
                .map_err(self.io_error("writing the footer at the new end"))?;
            self.storage
                .sync()
                .map_err(self.io_error("syncing the footer"))?;
        } else {
            if let Some(r) = self
                .layout_regions()?
                .iter()
                .find(|r| r.end > end && r.start < current)
            {
                return Err(Error::InvalidArgument(format!(
                    "set_data_end: {:?} at {:#x} lies past the new end {end:#x}",
                    r.what, r.start
                )));
            }
            let len = self.file_len()?;
            let name = self.name.clone();
            cut_to(&mut self.storage, &footer, current, len, end, &name)?;
        }
        self.footer_offset = end;
        self.sparse_mut()?.next_free = end;
        Ok(())
    }

    /// Writes `data` at file offset `offset`, into space that nothing
    /// references (or that no reader looks at, such as the data of
    /// sectors past the end of the disk), and syncs. Refuses a range that
    /// overlaps metadata or a block other than `inside` (the block whose
    /// unreferenced part is written, if any).
    pub(crate) fn write_unreferenced(
        &mut self,
        offset: u64,
        data: &[u8],
        inside: Option<usize>,
    ) -> Result<()> {
        let end = offset + data.len() as u64;
        if end > self.footer_offset {
            return Err(Error::InvalidArgument(format!(
                "write_unreferenced: {offset:#x}..{end:#x} reaches past the data area"
            )));
        }
        if let Some(r) = self.layout_regions()?.iter().find(|r| {
            r.overlaps(offset, end)
                && !matches!((r.what, inside), (Use::Block(b), Some(i)) if b == i)
        }) {
            return Err(Error::InvalidArgument(format!(
                "write_unreferenced: {offset:#x}..{end:#x} overlaps {:?}",
                r.what
            )));
        }
        self.storage
            .write_all_at(data, offset)
            .map_err(self.io_error("writing unreferenced space"))?;
        self.storage.sync().map_err(self.io_error("syncing"))
    }

    /// Writes BAT entries `(block, entry)` (each inside the table; runs of
    /// neighbours in one write), then syncs. Each entry is four bytes at a
    /// four-byte boundary of a sector-aligned table, so it switches at
    /// once; the caller makes sure every entry is valid on its own (a
    /// block copied and synced, or one whose data is no longer needed),
    /// so any subset of them that reaches the disk is a valid image.
    pub(crate) fn write_bat_entries(&mut self, changes: &[(usize, u32)]) -> Result<()> {
        let mut changes = changes.to_vec();
        changes.sort_unstable();
        changes.dedup_by_key(|c| c.0);
        let (table, max) = {
            let h = &self.sparse()?.header;
            (h.table_offset, h.max_table_entries as usize)
        };
        if let Some(&(b, _)) = changes.iter().find(|c| c.0 >= max) {
            return Err(Error::InvalidArgument(format!(
                "write_bat_entries: block {b} is past the table ({max} entries)"
            )));
        }
        let mut i = 0;
        while i < changes.len() {
            let mut j = i + 1;
            while j < changes.len() && changes[j].0 == changes[j - 1].0 + 1 {
                j += 1;
            }
            let bytes: Vec<u8> = changes[i..j]
                .iter()
                .flat_map(|c| c.1.to_be_bytes())
                .collect();
            self.storage
                .write_all_at(&bytes, table + changes[i].0 as u64 * 4)
                .map_err(self.io_error("writing the BAT"))?;
            i = j;
        }
        self.storage
            .sync()
            .map_err(self.io_error("syncing the BAT"))?;
        let sparse = self.sparse_mut()?;
        for &(block, entry) in &changes {
            sparse.adopt_entry(block, entry);
        }
        Ok(())
    }

    /// Moves blocks: each `(block, to)` gets a copy of its bitmap and data
    /// at file offset `to` (a sector boundary, in space nothing references
    /// and no other target takes), then its BAT entry points at the copy.
    ///
    /// Order: (1) if a copy reaches past the data area, the footer at the
    /// new end of file, sync; (2) every copy, sync; (3) every BAT entry
    /// (see [`Image::write_bat_entries`]), sync. Until (3) the copies are
    /// unreferenced; after it the old places are.
    pub(crate) fn relocate_blocks(&mut self, moves: &[(usize, u64)]) -> Result<()> {
        if moves.is_empty() {
            return Ok(());
        }
        let span = self.block_span()?;
        let regions = self.layout_regions()?;
        let mut targets: Vec<(u64, u64)> = Vec::with_capacity(moves.len());
        let mut sources = Vec::with_capacity(moves.len());
        for &(block, to) in moves {
            let entry = self.sparse()?.bat_entry(block);
            if entry == UNALLOCATED || !to.is_multiple_of(SECTOR_SIZE) {
                return Err(Error::InvalidArgument(format!(
                    "relocate_blocks: block {block} is not allocated or {to:#x} is not a sector boundary"
                )));
            }
            let entry_to = u32::try_from(to / SECTOR_SIZE)
                .ok()
                .filter(|&s| s != UNALLOCATED && to < crate::format::MAX_BLOCK_FILE_OFFSET)
                .ok_or_else(|| Error::SizeLimit {
                    requested: to + span,
                    limit: crate::format::MAX_BLOCK_FILE_OFFSET,
                    reason:
                        "a block would start past 2 TiB, which a 32-bit BAT entry cannot address"
                            .into(),
                })?;
            if let Some(r) = regions.iter().find(|r| r.overlaps(to, to + span)) {
                return Err(Error::InvalidArgument(format!(
                    "relocate_blocks: the target {to:#x} of block {block} overlaps {:?}",
                    r.what
                )));
            }
            if targets.iter().any(|&(s, e)| s < to + span && to < e) {
                return Err(Error::InvalidArgument(format!(
                    "relocate_blocks: two targets overlap at {to:#x}"
                )));
            }
            targets.push((to, to + span));
            sources.push((block, u64::from(entry) * SECTOR_SIZE, entry_to));
        }
        let new_end = targets.iter().map(|t| t.1).max().unwrap_or(0);
        if new_end > self.footer_offset {
            self.set_data_end(new_end)?;
        }
        let mut buf = vec![0u8; usize::try_from(COPY_CHUNK.min(span)).unwrap_or(0)];
        for (&(_, from, _), &(to, _)) in sources.iter().zip(&targets) {
            let mut done = 0;
            while done < span {
                let n = COPY_CHUNK.min(span - done) as usize;
                self.read_file_at(&mut buf[..n], from + done)?;
                self.storage
                    .write_all_at(&buf[..n], to + done)
                    .map_err(self.io_error("copying a block"))?;
                done += n as u64;
            }
        }
        self.storage
            .sync()
            .map_err(self.io_error("syncing the copied blocks"))?;
        let switches: Vec<(usize, u32)> = sources.iter().map(|&(b, _, e)| (b, e)).collect();
        self.write_bat_entries(&switches)
    }

    /// Makes `start..end` (sector boundaries) free for metadata: every
    /// block that overlaps it is moved past the end of the file (see
    /// [`Image::relocate_blocks`]), and if the range reaches past the data
    /// area the footer moves out to its end first. Metadata in the range
    /// is an error (it cannot move).
    pub(crate) fn make_room(&mut self, start: u64, end: u64) -> Result<()> {
        let regions = self.layout_regions()?;
        if let Some(r) = regions
            .iter()
            .find(|r| r.overlaps(start, end) && matches!(r.what, Use::Metadata(_)))
        {
            let Use::Metadata(what) = r.what else {
                unreachable!("filtered on metadata")
            };
            return Err(Error::InvalidArgument(format!(
                "{what} at {:#x} lies where the room is needed ({start:#x}..{end:#x})",
                r.start
            )));
        }
        let in_the_way: Vec<usize> = regions
            .iter()
            .filter(|r| r.overlaps(start, end))
            .filter_map(|r| match r.what {
                Use::Block(b) => Some(Ok(b)),
                Use::BeyondDisk(b) => Some(Err(b)),
                Use::Metadata(_) => None,
            })
            .collect::<std::result::Result<_, usize>>()
            .map_err(|b| {
                Error::InvalidArgument(format!(
                    "the block of BAT entry {b}, past the end of the disk, lies where the room is needed"
                ))
            })?;
        let span = self.block_span()?;
        let align = self.data_alignment()?;
        let mut at = self.slot_at_or_after(self.footer_offset.max(end), align)?;
        let mut moves = Vec::with_capacity(in_the_way.len());
        for block in in_the_way {
            moves.push((block, at));
            at = self.slot_at_or_after(at + span, align)?;
        }
        self.relocate_blocks(&moves)?;
        if end > self.footer_offset {
            self.set_data_end(end)?;
        }
        Ok(())
    }

    /// Grows the BAT to `entries` entries in place: the blocks that lie
    /// where it grows move past the end of the file ([`Image::make_room`]),
    /// the new entries (and the padding of the table's last sector) are
    /// written as unallocated and synced, and then the header's
    /// `max_table_entries` changes (one write inside the header's first
    /// sector) and is synced. Metadata in the way (Xen's batmap, locator
    /// data) is refused.
    pub(crate) fn grow_table(&mut self, entries: u32) -> Result<()> {
        let header = self.sparse()?.header.clone();
        let old = header.max_table_entries;
        if entries <= old {
            return Ok(());
        }
        let start = header.table_offset;
        let old_end = start + bat_size_on_disk(old);
        let new_end = start + bat_size_on_disk(entries);
        if new_end > old_end {
            self.make_room(old_end, new_end)?;
        }
        let unused_from = start + u64::from(old) * 4;
        let fill = vec![0xFFu8; usize::try_from(new_end - unused_from).unwrap_or(0)];
        self.storage
            .write_all_at(&fill, unused_from)
            .map_err(self.io_error("writing the new BAT entries"))?;
        self.storage
            .sync()
            .map_err(self.io_error("syncing the new BAT entries"))?;
        let mut grown = header;
        grown.max_table_entries = entries;
        self.write_header(&grown)
    }

    /// Writes a new dynamic header (its reserved fields kept) and syncs.
    ///
    /// When every byte that changes lies in one sector with the checksum
    /// (the table offset, `max_table_entries`, the parent's unique ID and
    /// time stamp all share the first sector), those bytes are written in
    /// place: one write inside one sector. Otherwise (a new parent name or
    /// new locators) the header moves through a copy, switched by the
    /// trailing footer, whose one sector switches at once:
    ///
    /// 1. the footer moves out by 1024 bytes (written at the new end, sync);
    /// 2. the new header goes where the footer was, sync;
    /// 3. the trailing footer's data offset points at it, sync (switched);
    /// 4. the new header is written at its own place, sync;
    /// 5. the trailing footer points there again, sync;
    /// 6. the copy is cut off ([`cut_to`]).
    ///
    /// The footer copy at offset 0 keeps pointing at the header's own
    /// place throughout; between steps 3 and 5 it differs from the
    /// trailing footer (FTR-COPY-MISMATCH, a warning).
    pub(crate) fn write_header(&mut self, header: &DynHeader) -> Result<()> {
        let offset = self.sparse()?.header_offset;
        let old = self.header_raw()?;
        let new = header_bytes_keeping(header, &old);
        let changed: Vec<usize> = (0..DYN_HEADER_SIZE).filter(|&i| old[i] != new[i]).collect();
        let (Some(&first), Some(&last)) = (changed.first(), changed.last()) else {
            return Ok(());
        };
        let lo = first.min(HEADER_CHECKSUM);
        let hi = last.max(HEADER_CHECKSUM + 3) + 1;
        let one_sector =
            (offset + lo as u64) / SECTOR_SIZE == (offset + hi as u64 - 1) / SECTOR_SIZE;
        if one_sector {
            self.storage
                .write_all_at(&new[lo..hi], offset + lo as u64)
                .map_err(self.io_error("writing the dynamic header"))?;
            self.storage
                .sync()
                .map_err(self.io_error("syncing the dynamic header"))?;
        } else {
            self.write_header_through_copy(offset, &new)?;
        }
        self.sparse_mut()?.header = header.clone();
        Ok(())
    }

    /// Steps 1 to 6 of [`Image::write_header`] for a change that spans
    /// sectors.
    fn write_header_through_copy(
        &mut self,
        offset: u64,
        new: &[u8; DYN_HEADER_SIZE],
    ) -> Result<()> {
        let scratch = self.footer_offset;
        let ends_at = scratch + DYN_HEADER_SIZE as u64;
        let footer = self.trailing_footer_raw()?;
        self.set_data_end(ends_at)?;
        self.storage
            .write_all_at(new, scratch)
            .map_err(self.io_error("writing the new header's copy"))?;
        self.storage
            .sync()
            .map_err(self.io_error("syncing the new header's copy"))?;
        self.storage
            .write_all_at(&with_data_offset(&footer, scratch), ends_at)
            .map_err(self.io_error("switching the footer to the new header"))?;
        self.storage
            .sync()
            .map_err(self.io_error("syncing the footer"))?;
        self.storage
            .write_all_at(new, offset)
            .map_err(self.io_error("writing the new header"))?;
        self.storage
            .sync()
            .map_err(self.io_error("syncing the new header"))?;
        self.storage
            .write_all_at(&with_data_offset(&footer, offset), ends_at)
            .map_err(self.io_error("switching the footer back"))?;
        self.storage
            .sync()
            .map_err(self.io_error("syncing the footer"))?;
        let len = self.file_len()?;
        let name = self.name.clone();
        cut_to(&mut self.storage, &footer, ends_at, len, scratch, &name)?;
        self.footer_offset = scratch;
        self.sparse_mut()?.next_free = scratch;
        Ok(())
    }

    /// Writes a new footer: the trailing footer in place (one sector: it
    /// switches at once), sync, then for a dynamic or differencing image
    /// the copy at offset 0, sync. The reserved bytes of the footer in the
    /// file are kept. For a fixed image the footer must be at a sector
    /// boundary and 512 bytes long (see `crate::ops::resize` for fixed
    /// images, whose footer moves with the data).
    pub(crate) fn write_footer(&mut self, footer: &Footer) -> Result<()> {
        let at = self.footer_offset;
        let len = self.file_len()?;
        if !at.is_multiple_of(SECTOR_SIZE) || len != at + FOOTER_SIZE as u64 {
            return Err(Error::InvalidArgument(format!(
                "the trailing footer at {at:#x} is not one whole sector at the end; repair the image first"
            )));
        }
        let old = self.trailing_footer_raw()?;
        let bytes = footer_bytes_keeping(footer, &old);
        self.storage
            .write_all_at(&bytes, at)
            .map_err(self.io_error("writing the footer"))?;
        self.storage
            .sync()
            .map_err(self.io_error("syncing the footer"))?;
        if footer.disk_type != DiskType::Fixed {
            self.storage
                .write_all_at(&bytes, 0)
                .map_err(self.io_error("writing the footer copy"))?;
            self.storage
                .sync()
                .map_err(self.io_error("syncing the footer copy"))?;
        }
        self.adopt_footer(footer.clone(), &bytes);
        Ok(())
    }

    /// Takes a footer a maintenance operation wrote itself: the footer in
    /// memory (and the bytes written after new blocks) follow it, and for
    /// a dynamic image whose size changed the BAT in memory covers the new
    /// disk (new entries unallocated, as the file has them).
    pub(crate) fn adopt_footer(&mut self, footer: Footer, bytes: &[u8; FOOTER_SIZE]) {
        let size = footer.current_size;
        self.footer = footer;
        self.footer_bytes = *bytes;
        if let Layout::Sparse(s) = &mut self.layout {
            let blocks = usize::try_from(size.div_ceil(s.block_size)).unwrap_or(usize::MAX);
            s.bat.resize(blocks, UNALLOCATED);
            s.next_hint = None;
        }
    }

    /// For a fixed image: where its data ends and its footer starts.
    pub(crate) fn set_fixed_footer_offset(&mut self, at: u64) {
        self.footer_offset = at;
    }

    /// Runs `f` on the storage of the image (for the fixed-image steps of
    /// `crate::ops::resize`, which move the footer with the data).
    pub(crate) fn with_storage<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Storage, &str) -> Result<T>,
    ) -> Result<T> {
        let name = self.name.clone();
        f(&mut self.storage, &name)
    }

    /// The sector bitmap of an allocated block, as it is in the file.
    pub(crate) fn read_bitmap(&self, block: usize) -> Result<Vec<u8>> {
        let s = self.sparse()?;
        let entry = s.bat_entry(block);
        if entry == UNALLOCATED {
            return Err(Error::InvalidArgument(format!(
                "read_bitmap: block {block} is not allocated"
            )));
        }
        let mut bits = vec![0u8; usize::try_from(s.bitmap_size).unwrap_or(0)];
        self.read_file_at(&mut bits, u64::from(entry) * SECTOR_SIZE)?;
        Ok(bits)
    }

    /// Where an allocated block starts in the file.
    pub(crate) fn block_offset(&self, block: usize) -> Result<Option<u64>> {
        let e = self.sparse()?.bat_entry(block);
        Ok((e != UNALLOCATED).then(|| u64::from(e) * SECTOR_SIZE))
    }

    /// Writes a block's bitmap bytes `bits` (the whole bitmap) where they
    /// differ from the file, then syncs; the block's cached bitmap is
    /// dropped. Only for changes no reader sees on its own: bits of
    /// sectors past the end of the disk, or bits of sectors that read the
    /// same either way.
    pub(crate) fn rewrite_bitmap(&mut self, block: usize, bits: &[u8]) -> Result<()> {
        let old = self.read_bitmap(block)?;
        let Some(start) = self.block_offset(block)? else {
            return Ok(());
        };
        let first = old.iter().zip(bits).position(|(a, b)| a != b);
        let last = old.iter().zip(bits).rposition(|(a, b)| a != b);
        if let (Some(first), Some(last)) = (first, last) {
            self.storage
                .write_all_at(&bits[first..=last], start + first as u64)
                .map_err(self.io_error("writing a bitmap"))?;
            self.storage
                .sync()
                .map_err(self.io_error("syncing a bitmap"))?;
        }
        let entry = self.sparse()?.bat_entry(block);
        self.sparse_mut()?.adopt_entry(block, entry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Geometry, Timestamp};

    fn footer() -> Footer {
        Footer {
            features: 2,
            file_format_version: 0x0001_0000,
            data_offset: 512,
            time_stamp: Timestamp(7),
            creator_application: *b"tap\0",
            creator_version: 1,
            creator_host_os: *b"Wi2k",
            original_size: 1 << 20,
            current_size: 1 << 20,
            disk_geometry: Geometry::for_size(1 << 20),
            disk_type: DiskType::Dynamic,
            unique_id: uuid::Uuid::from_u128(5),
            saved_state: false,
        }
    }

    #[test]
    fn a_rewritten_footer_keeps_the_writers_reserved_bytes_and_a_valid_checksum() {
        let mut old = footer().to_bytes();
        old[FOOTER_RESERVED] = 1; // Xen's hidden flag
        set_checksum(&mut old, FOOTER_CHECKSUM);
        let grown = Footer {
            current_size: 2 << 20,
            ..footer()
        };
        let bytes = footer_bytes_keeping(&grown, &old);
        assert_eq!(bytes[FOOTER_RESERVED], 1);
        let parsed = Footer::parse(&bytes).expect("the checksum holds");
        assert_eq!(parsed.current_size, 2 << 20);
    }

    #[test]
    fn a_data_offset_switch_keeps_the_footer_valid() {
        let bytes = with_data_offset(&footer().to_bytes(), 0x4000);
        assert_eq!(Footer::parse(&bytes).expect("valid").data_offset, 0x4000);
    }
}
