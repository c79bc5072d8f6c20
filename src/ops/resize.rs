//! Resize: change the size of a fixed or dynamic disk.
//!
//! The new `current_size` follows the image's size rule (given, or read
//! from the image: a geometry that describes the size exactly means the
//! `chs` rule, anything else `exact`), `original_size` stays, and the
//! geometry is computed for the new size by that rule. A differencing
//! image keeps its parent's size and is refused; a shrink needs
//! [`ResizeOptions::shrink`] and is refused when it would drop data.
//!
//! # Write order, dynamic image
//!
//! Growing:
//! 1. in the last block, the data past the old end is zeroed and the bits
//!    of sectors wholly past it are cleared, sync (nobody reads there yet;
//!    afterwards the new sectors read zeros in every reader);
//! 2. allocated BAT entries between the old and the new number of blocks
//!    are released, sync (they lie past the disk, nobody reads them);
//! 3. if the table is too short, it grows in place
//!    ([`Image::grow_table`](crate::Image)): blocks where it grows move
//!    past the end (footer first, copy, sync, switch, sync), the new
//!    entries are written unallocated, sync, then `max_table_entries`
//!    (one sector), sync;
//! 4. the trailing footer with the new size (one sector: the switch),
//!    sync, then the footer copy, sync.
//!
//! Shrinking: the bits of sectors past the new end are cleared (they read
//! zeros either way, or the shrink is refused), sync; then step 4; then
//! `max_table_entries` becomes the new number of blocks (one sector),
//! sync, and if the table's freed tail (or a block of an entry past the
//! new table) leaves a hole a block span long, the last blocks move into
//! it and the file is cut, as compact does.
//!
//! # Write order, fixed image
//!
//! The footer sits right after the data, so it moves with it. Growing:
//! the old footer is copied to the new end and synced (the file grows and
//! still ends with a footer, now after some slack), the new space is
//! zeroed and synced, then the new footer replaces the copy (one sector),
//! sync. Shrinking (only over zeros): the new footer replaces the old one
//! in place (the cut-off part is now slack), sync, then it is written at
//! the new end, synced, and the file is cut after it, synced.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::bat::UNALLOCATED;
use crate::format::geometry::{MAX_CHS_SECTORS, chs_rounded};
use crate::format::{DiskType, FOOTER_SIZE, Footer, Geometry, SECTOR_SIZE, bitmap};
use crate::image::maintenance::{cut_to, footer_bytes_keeping, sector_ceil, write_zeros};
use crate::image::{CreateOptions, Image, OpenOptions, SizeRule};
use crate::storage::Storage;

use super::{WINDOW, is_zero};

/// What to resize to.
#[derive(Debug, Clone)]
pub struct ResizeOptions {
    size: u64,
    shrink: bool,
    size_rule: Option<SizeRule>,
}

impl ResizeOptions {
    /// Resize to `size` bytes (rounded by the size rule).
    pub fn new(size: u64) -> Self {
        ResizeOptions {
            size,
            shrink: false,
            size_rule: None,
        }
    }

    /// Allow a smaller size (refused anyway when data would be lost).
    #[must_use]
    pub fn shrink(mut self, yes: bool) -> Self {
        self.shrink = yes;
        self
    }

    /// Use this size rule instead of the image's own.
    #[must_use]
    pub fn size_rule(mut self, rule: SizeRule) -> Self {
        self.size_rule = Some(rule);
        self
    }
}

/// What a resize did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResizeReport {
    /// The image.
    pub path: String,
    /// Its type.
    pub disk_type: DiskType,
    /// The size asked for.
    pub requested: u64,
    /// `current_size` before.
    pub old_size: u64,
    /// `current_size` after.
    pub new_size: u64,
    /// The size rule used: `exact` or `chs`.
    pub size_rule: &'static str,
    /// Whether the rule was read from the image (not given).
    pub size_rule_inferred: bool,
    /// Geometry before, `[cylinders, heads, sectors per track]`.
    pub old_geometry: [u32; 3],
    /// Geometry after.
    pub new_geometry: [u32; 3],
    /// Length of the file before.
    pub file_size_before: u64,
    /// Length of the file after.
    pub file_size_after: u64,
    /// `max_table_entries` before and after, when the table grew.
    pub table_grown: Option<(u32, u32)>,
    /// Blocks moved: to make room for a growing table, or into the space a
    /// shrinking one left.
    pub blocks_moved: u64,
    /// Allocated BAT entries past the old end that were released (their
    /// blocks are now leaked space, which compact reclaims).
    pub entries_released: u64,
}

fn geometry_triple(g: Geometry) -> [u32; 3] {
    [
        u32::from(g.cylinders),
        u32::from(g.heads),
        u32::from(g.sectors_per_track),
    ]
}

fn rule_name(rule: SizeRule) -> &'static str {
    match rule {
        SizeRule::Exact => "exact",
        SizeRule::Chs => "chs",
    }
}

fn refused(reason: impl Into<String>) -> Error {
    Error::Refused {
        operation: "resize".into(),
        reason: reason.into(),
    }
}

/// The size rule an image was made with, as far as its footer tells: the
/// `chs` rule when its geometry describes its size exactly (Virtual PC
/// and QEMU make such images, and their readers size the disk from the
/// geometry), else `exact`.
pub fn inferred_size_rule(footer: &Footer) -> SizeRule {
    if footer.disk_geometry.capacity() == footer.current_size
        && footer.disk_geometry.total_sectors() < MAX_CHS_SECTORS
    {
        SizeRule::Chs
    } else {
        SizeRule::Exact
    }
}

/// The new size and geometry for `requested` under `rule`, with the
/// limits of the format (and of the block size) checked.
fn new_size_and_geometry(img: &Image, requested: u64, rule: SizeRule) -> Result<(u64, Geometry)> {
    let (size, geometry) = match rule {
        SizeRule::Exact => {
            if !requested.is_multiple_of(SECTOR_SIZE) {
                return Err(Error::InvalidArgument(format!(
                    "size {requested} is not a multiple of 512 bytes"
                )));
            }
            (requested, Geometry::for_size(requested))
        }
        SizeRule::Chs => chs_rounded(requested).ok_or_else(|| Error::SizeLimit {
            requested,
            limit: MAX_CHS_SECTORS * SECTOR_SIZE,
            reason: "the image's chs size rule can only describe 65535 x 16 x 255 sectors (resize with the exact rule instead)".into(),
        })?,
    };
    let mut limits = CreateOptions::new(img.disk_type(), size);
    if let Some(bs) = img.block_size() {
        limits = limits.block_size(bs);
    }
    limits.effective_size()?;
    Ok((size, geometry))
}

/// Resizes the image at `path` (opened for writing with `open`).
pub fn resize(
    path: impl AsRef<Path>,
    open: OpenOptions,
    options: &ResizeOptions,
) -> Result<ResizeReport> {
    let mut img = open.write(true).skip_parent(true).open(path.as_ref())?;
    let report = resize_image(&mut img, options)?;
    img.close()?;
    Ok(report)
}

/// Resizes an image open for writing. See the module documentation.
pub fn resize_image(img: &mut Image, options: &ResizeOptions) -> Result<ResizeReport> {
    if img.disk_type() == DiskType::Differencing {
        return Err(refused(
            "a differencing image has the size of its parent and cannot change size apart from it (resize the base, then make new children)",
        ));
    }
    img.prepare_maintenance()?;
    let old = img.footer().clone();
    let (rule, inferred) = match options.size_rule {
        Some(r) => (r, false),
        None => (inferred_size_rule(&old), true),
    };
    let (size, geometry) = new_size_and_geometry(img, options.size, rule)?;
    if size < old.current_size && !options.shrink {
        return Err(refused(format!(
            "{size} bytes is smaller than the disk ({} bytes); shrinking needs --shrink",
            old.current_size
        )));
    }
    let file_size_before = img.file_len()?;
    let mut report = ResizeReport {
        path: img.name().to_string(),
        disk_type: old.disk_type,
        requested: options.size,
        old_size: old.current_size,
        new_size: size,
        size_rule: rule_name(rule),
        size_rule_inferred: inferred,
        old_geometry: geometry_triple(old.disk_geometry),
        new_geometry: geometry_triple(geometry),
        file_size_before,
        file_size_after: file_size_before,
        table_grown: None,
        blocks_moved: 0,
        entries_released: 0,
    };
    if size == old.current_size && geometry == old.disk_geometry {
        return Ok(report);
    }
    let new = Footer {
        current_size: size,
        disk_geometry: geometry,
        ..old.clone()
    };
    if old.disk_type == DiskType::Fixed {
        resize_fixed(img, &old, &new)?;
    } else {
        resize_dynamic(img, &old, &new, &mut report)?;
    }
    report.file_size_after = img.file_len()?;
    Ok(report)
}

// ----------------------------------------------------------- dynamic

fn resize_dynamic(
    img: &mut Image,
    old: &Footer,
    new: &Footer,
    report: &mut ResizeReport,
) -> Result<()> {
    let block_size = u64::from(img.block_size().unwrap_or(1));
    let new_blocks = new.current_size.div_ceil(block_size);
    // Xen's batmap (a bit per block: "fully allocated") stays valid as
    // long as it has a bit for every block; a table that must grow over
    // its header is refused by the table's growth.
    if let Some(covered) = img.batmap_blocks()?
        && covered < new_blocks
    {
        return Err(refused(format!(
            "Xen's batmap has bits for {covered} blocks, and the disk would have {new_blocks} (use vhd-util resize)"
        )));
    }
    if new.current_size < old.current_size {
        shrink_dynamic(img, new, new_blocks, report)
    } else {
        grow_dynamic(img, old, new, new_blocks, report)
    }
}

/// Steps 1 to 4 of growing (see the module documentation).
fn grow_dynamic(
    img: &mut Image,
    old: &Footer,
    new: &Footer,
    new_blocks: u64,
    report: &mut ResizeReport,
) -> Result<()> {
    clear_past_end(img, old.current_size)?;
    let max = img
        .dyn_header()
        .map_or(0, |h| u64::from(h.max_table_entries));
    let stale: Vec<(usize, u32)> = img
        .entries_past_disk()?
        .into_iter()
        .filter(|&(i, _)| (i as u64) < new_blocks)
        .map(|(i, _)| (i, UNALLOCATED))
        .collect();
    report.entries_released = stale.len() as u64;
    img.write_bat_entries(&stale)?;
    if new_blocks > max {
        let before = img.bat().map(<[u32]>::to_vec).unwrap_or_default();
        let entries = u32::try_from(new_blocks)
            .map_err(|_| Error::InvalidArgument(format!("{new_blocks} blocks do not fit a BAT")))?;
        img.grow_table(entries)?;
        let after = img.bat().unwrap_or_default();
        report.blocks_moved = before.iter().zip(after).filter(|(a, b)| a != b).count() as u64;
        report.table_grown = Some((u32::try_from(max).unwrap_or(u32::MAX), entries));
    }
    img.write_footer(new)
}

/// Shrinking (see the module documentation).
fn shrink_dynamic(
    img: &mut Image,
    new: &Footer,
    new_blocks: u64,
    report: &mut ResizeReport,
) -> Result<()> {
    check_nothing_past(img, new.current_size)?;
    clear_past_end(img, new.current_size)?;
    img.write_footer(new)?;
    // The table shrinks with the disk (7-Zip refuses a BAT longer than the
    // disk needs); the space it leaves, and any block of an entry it
    // drops, is filled by the last blocks, as compact does.
    let mut header = img
        .dyn_header()
        .cloned()
        .ok_or_else(|| Error::InvalidArgument("a dynamic image has a header".into()))?;
    let entries = u32::try_from(new_blocks).unwrap_or(u32::MAX);
    // With Xen's batmap right after the table, the table keeps its length:
    // the batmap is found where the table ends.
    if header.max_table_entries > entries && !img.has_batmap()? {
        header.max_table_entries = entries;
        img.write_header(&header)?;
        report.blocks_moved = super::compact::fill_holes_and_cut(img)?;
    }
    Ok(())
}

/// The bitmap bits and data past `end` in the block that holds `end`:
/// data bytes after `end` are zeroed and bits of sectors wholly past it
/// cleared, each write synced. Nobody reads past the end of the disk.
fn clear_past_end(img: &mut Image, end: u64) -> Result<()> {
    let block_size = u64::from(img.block_size().unwrap_or(1));
    let in_block = end % block_size;
    if in_block == 0 {
        return Ok(());
    }
    let block = usize::try_from(end / block_size).unwrap_or(usize::MAX);
    let Some(start) = img.block_offset(block)? else {
        return Ok(());
    };
    let data = start + img.bitmap_bytes()?;
    let mut pos = in_block;
    let mut buf = Vec::new();
    while pos < block_size {
        let n = (block_size - pos).min(WINDOW);
        buf.resize(n as usize, 0);
        img.read_file_at(&mut buf, data + pos)?;
        if !is_zero(&buf) {
            buf.fill(0);
            img.write_unreferenced(data + pos, &buf, Some(block))?;
        }
        pos += n;
    }
    let mut bits = img.read_bitmap(block)?;
    let first_past = in_block.div_ceil(SECTOR_SIZE);
    for s in first_past..block_size / SECTOR_SIZE {
        if let Some(byte) = bits.get_mut((s / 8) as usize) {
            *byte &= !(0x80u8 >> (s % 8));
        }
    }
    img.rewrite_bitmap(block, &bits)
}

/// Refuses a shrink to `end` that would drop data: a block wholly past
/// the new end that is allocated, or a sector past it (in the block that
/// holds it) whose bit is set over data that is not zeros.
fn check_nothing_past(img: &mut Image, end: u64) -> Result<()> {
    let block_size = u64::from(img.block_size().unwrap_or(1));
    let size = img.size();
    let first_whole = end.div_ceil(block_size);
    let bat = img.bat().map(<[u32]>::to_vec).unwrap_or_default();
    let allocated: Vec<usize> = bat
        .iter()
        .enumerate()
        .skip(usize::try_from(first_whole).unwrap_or(usize::MAX))
        .filter(|&(_, &e)| e != UNALLOCATED)
        .map(|(i, _)| i)
        .collect();
    if let Some(&first) = allocated.first() {
        let from = first as u64 * block_size;
        return Err(refused(format!(
            "{} past the new end hold data: block {first} (guest bytes {from}..{}){}; they would be lost (if they hold only zeros, vhd compact releases them)",
            crate::error::count(
                allocated.len() as u64,
                "allocated block",
                "allocated blocks"
            ),
            (from + block_size).min(size),
            if allocated.len() > 1 { " and more" } else { "" }
        )));
    }
    let in_block = end % block_size;
    let block = usize::try_from(end / block_size).unwrap_or(usize::MAX);
    if in_block == 0 {
        return Ok(());
    }
    let Some(start) = img.block_offset(block)? else {
        return Ok(());
    };
    let bits = img.read_bitmap(block)?;
    let data = start + img.bitmap_bytes()?;
    let base = block as u64 * block_size;
    let visible_end = size.saturating_sub(base).min(block_size);
    let mut buf = vec![0u8; SECTOR_SIZE as usize];
    let mut s = in_block / SECTOR_SIZE;
    while s * SECTOR_SIZE < visible_end {
        if bitmap::get(&bits, s) {
            let from = (s * SECTOR_SIZE).max(in_block);
            let to = ((s + 1) * SECTOR_SIZE).min(visible_end);
            let chunk = &mut buf[..(to - from) as usize];
            img.read_file_at(chunk, data + from)?;
            if let Some(k) = chunk.iter().position(|&b| b != 0) {
                return Err(refused(format!(
                    "guest byte {} past the new end holds data; it would be lost",
                    base + from + k as u64
                )));
            }
        }
        s += 1;
    }
    Ok(())
}

// ------------------------------------------------------------- fixed

fn resize_fixed(img: &mut Image, old: &Footer, new: &Footer) -> Result<()> {
    let old_size = old.current_size;
    let new_size = new.current_size;
    let data_end = img.footer_offset();
    let raw = img.trailing_footer_raw()?;
    let old_bytes = raw;
    let new_bytes = footer_bytes_keeping(new, &raw);
    if new_size < old_size {
        check_zeros(img, new_size, old_size)?;
    }
    let at = img.with_storage(|storage, name| {
        if new_size >= data_end {
            // Grow past the footer: the old footer at the new end first.
            write_footer_at(storage, &old_bytes, new_size, name)?;
            write_zeros(storage, old_size, new_size - old_size, name)?;
            storage
                .sync()
                .map_err(|e| Error::io(format!("syncing the new space of {name}"), e))?;
            write_footer_at(storage, &new_bytes, new_size, name)?;
            Ok(new_size)
        } else {
            // The new end lies before the footer (a shrink, or a grow into
            // slack): zero the space that joins the disk, switch the size
            // in place, then cut.
            if new_size > old_size {
                write_zeros(storage, old_size, new_size - old_size, name)?;
                storage
                    .sync()
                    .map_err(|e| Error::io(format!("syncing the new space of {name}"), e))?;
            }
            let len = storage
                .len()
                .map_err(|e| Error::io(format!("reading the length of {name}"), e))?;
            let current = replace_fixed_footer(storage, &new_bytes, data_end, len, name)?;
            let len = storage
                .len()
                .map_err(|e| Error::io(format!("reading the length of {name}"), e))?;
            cut_to(storage, &new_bytes, current, len, new_size, name)?;
            Ok(new_size)
        }
    })?;
    img.set_fixed_footer_offset(at);
    img.adopt_footer(new.clone(), &new_bytes);
    Ok(())
}

/// Writes `bytes` at `at` and syncs.
fn write_footer_at(
    storage: &mut dyn Storage,
    bytes: &[u8; FOOTER_SIZE],
    at: u64,
    name: &str,
) -> Result<()> {
    storage
        .write_all_at(bytes, at)
        .map_err(|e| Error::io(format!("writing the footer of {name}"), e))?;
    storage
        .sync()
        .map_err(|e| Error::io(format!("syncing the footer of {name}"), e))
}

/// Replaces the trailing footer of a fixed image (at `at`, in a file of
/// `len` bytes) with `bytes` in one write inside one sector: in place when
/// it starts at a sector boundary, else at the next boundary past the end
/// (the old footer becomes slack). Returns where the footer is now.
fn replace_fixed_footer(
    storage: &mut dyn Storage,
    bytes: &[u8; FOOTER_SIZE],
    at: u64,
    len: u64,
    name: &str,
) -> Result<u64> {
    let to = if at.is_multiple_of(SECTOR_SIZE) {
        at
    } else {
        sector_ceil(len)
    };
    write_footer_at(storage, bytes, to, name)?;
    Ok(to)
}

/// Refuses a shrink of a fixed image over data that is not zeros.
fn check_zeros(img: &Image, from: u64, to: u64) -> Result<()> {
    let mut buf = Vec::new();
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(WINDOW);
        buf.resize(n as usize, 0);
        img.read_file_at(&mut buf, pos)?;
        if let Some(k) = buf.iter().position(|&b| b != 0) {
            return Err(refused(format!(
                "guest byte {} past the new end holds data; it would be lost",
                pos + k as u64
            )));
        }
        pos += n;
    }
    Ok(())
}
