//! Compact: give back the space of a dynamic or differencing image that
//! holds nothing the guest reads.
//!
//! * A block whose sectors all read as zeros is released (its BAT entry
//!   becomes unallocated, so it reads as zeros still). In a differencing
//!   image a block is released only where the parent also reads zeros
//!   under every sector the block holds: a zero sector in a child hides
//!   the parent's data, and releasing it would show that data.
//! * Blocks that BAT entries past the end of the disk point at are
//!   released too (no reader looks at them).
//! * Leaked space (blocks written by a writer killed before it wrote the
//!   BAT entry, the space of released blocks) is filled with the blocks
//!   from the end of the file, highest first, each into the lowest hole
//!   that takes it; then the file is cut after the last block.
//!
//! # Write order
//!
//! 1. the released entries (all at once; each alone keeps the contents),
//!    sync;
//! 2. the blocks that move: footer first if the file grows (it never does
//!    here), every copy into a hole, sync, every BAT entry switched to its
//!    copy, sync (the driver's `relocate_blocks`);
//! 3. zeros after the last structure up to the next sector boundary, then
//!    the footer there, sync, the file cut after it, sync.
//!
//! Every hole a block moves into is free before the moves start (leaked
//! space, or a block released and synced in step 1), and every block moves
//! down, so one round of copies does it all. The contents never change.
//! An image with Xen's batmap keeps its blocks (the batmap would claim a
//! released block is still full); its leaks are still dropped.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::{DiskType, SECTOR_SIZE, bitmap};
use crate::image::maintenance::{Region, Use, sector_ceil};
use crate::image::{Image, OpenOptions};

use super::{WINDOW, is_zero};

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompactReport {
    /// The image.
    pub path: String,
    /// Length of the file before.
    pub file_size_before: u64,
    /// Length of the file after.
    pub file_size_after: u64,
    /// Bytes the file shrank by.
    pub bytes_reclaimed: u64,
    /// Blocks released because they read as zeros.
    pub blocks_released: u64,
    /// Blocks of a differencing image that hold only zeros but were kept,
    /// because the parent's data under them is not zeros.
    pub zero_blocks_kept: u64,
    /// Allocated BAT entries past the end of the disk that were released.
    pub entries_past_disk_released: u64,
    /// Blocks moved down into holes.
    pub blocks_moved: u64,
    /// Bytes of the file that nothing referenced before (leaked space).
    pub leaked_bytes: u64,
    /// The image has Xen's batmap, so no block was released.
    pub batmap_kept: bool,
}

/// Compacts the dynamic or differencing image at `path`, opened with
/// `options` (for writing; a differencing image's parent is read to judge
/// its zero blocks).
pub fn compact(path: impl AsRef<Path>, options: OpenOptions) -> Result<CompactReport> {
    let mut img = options.write(true).open(path.as_ref())?;
    let report = compact_image(&mut img)?;
    img.close()?;
    Ok(report)
}

/// Compacts an image open for writing (with its parent, for a
/// differencing image). See the module documentation for what and in
/// which order.
pub fn compact_image(img: &mut Image) -> Result<CompactReport> {
    if img.disk_type() == DiskType::Fixed {
        return Err(Error::InvalidArgument(
            "a fixed image: all of its space is the disk, there is nothing to compact".into(),
        ));
    }
    img.prepare_maintenance()?;
    let file_size_before = img.file_len()?;
    let before = img.layout_regions()?;
    let leaked_bytes = unreferenced_bytes(&before, img.footer_offset());
    let batmap_kept = img.has_batmap()?;

    // Step 1: release what reads as zeros, and what lies past the disk.
    let mut releases: Vec<(usize, u32)> = Vec::new();
    let mut zero_blocks_kept = 0;
    let mut entries_past_disk_released = 0;
    if !batmap_kept {
        for block in allocated(img) {
            match zero_block(img, block)? {
                Zero::Yes => releases.push((block, crate::format::UNALLOCATED)),
                Zero::OverParentData => zero_blocks_kept += 1,
                Zero::No => {}
            }
        }
        for (index, _) in img.entries_past_disk()? {
            releases.push((index, crate::format::UNALLOCATED));
            entries_past_disk_released += 1;
        }
    }
    let blocks_released = releases.len() as u64 - entries_past_disk_released;
    if !releases.is_empty() {
        img.write_bat_entries(&releases)?;
    }

    let blocks_moved = fill_holes_and_cut(img)?;
    let file_size_after = img.file_len()?;
    Ok(CompactReport {
        path: img.name().to_string(),
        file_size_before,
        file_size_after,
        bytes_reclaimed: file_size_before.saturating_sub(file_size_after),
        blocks_released,
        zero_blocks_kept,
        entries_past_disk_released,
        blocks_moved,
        leaked_bytes,
        batmap_kept,
    })
}

/// Steps 2 and 3: the highest blocks into the lowest holes that take
/// them, then the file cut after the last structure. Returns how many
/// blocks moved. Also used by rebase, whose new locators can leave a hole
/// a block span long.
pub(crate) fn fill_holes_and_cut(img: &mut Image) -> Result<u64> {
    let moves = plan_moves(img)?;
    img.relocate_blocks(&moves)?;
    let regions = img.layout_regions()?;
    let last = regions.iter().map(|r| r.end).max().unwrap_or(0);
    let end = sector_ceil(last);
    if end < img.footer_offset() {
        if last < end {
            let zeros = vec![0u8; (end - last) as usize];
            img.write_unreferenced(last, &zeros, None)?;
        }
        img.set_data_end(end)?;
    }
    Ok(moves.len() as u64)
}

/// The allocated blocks of the disk.
fn allocated(img: &Image) -> Vec<usize> {
    img.bat()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|&(_, &e)| e != crate::format::UNALLOCATED)
        .map(|(i, _)| i)
        .collect()
}

/// Bytes between the footer copy and the trailing footer that no region
/// covers.
fn unreferenced_bytes(regions: &[Region], limit: u64) -> u64 {
    let mut covered = 0u64;
    let mut free = 0u64;
    for r in regions {
        if r.start > covered {
            free += r.start.min(limit) - covered.min(limit);
        }
        covered = covered.max(r.end);
    }
    free + limit.saturating_sub(covered)
}

/// Whether a block can be released.
enum Zero {
    /// Every sector it holds reads as zeros, and so does what is under
    /// them (zeros in a dynamic image, the parent in a differencing one).
    Yes,
    /// Its sectors are zeros but they hide the parent's data.
    OverParentData,
    /// It holds data.
    No,
}

/// Judges one allocated block: only the sectors inside the disk whose
/// bits are set count (a clear bit already reads as zeros or the parent).
fn zero_block(img: &mut Image, block: usize) -> Result<Zero> {
    let bits = img.read_bitmap(block)?;
    let Some(start) = img.block_offset(block)? else {
        return Ok(Zero::No);
    };
    let block_size = u64::from(img.block_size().unwrap_or(0));
    let data = start + img.bitmap_bytes()?;
    let guest = block as u64 * block_size;
    let in_disk = img.size().saturating_sub(guest).min(block_size);
    let sectors = in_disk.div_ceil(SECTOR_SIZE);
    let mut held: Vec<(u64, u64)> = Vec::new();
    let mut buf = Vec::new();
    let mut s = 0;
    while s < sectors {
        let run = bitmap::run_length(&bits, s, sectors);
        if bitmap::get(&bits, s) {
            let from = s * SECTOR_SIZE;
            let to = ((s + run) * SECTOR_SIZE).min(in_disk);
            let mut pos = from;
            while pos < to {
                let n = (to - pos).min(WINDOW);
                buf.resize(n as usize, 0);
                img.read_file_at(&mut buf, data + pos)?;
                if !is_zero(&buf) {
                    return Ok(Zero::No);
                }
                pos += n;
            }
            held.push((guest + from, to - from));
        }
        s += run;
    }
    let Some(parent) = img.parent_mut() else {
        return Ok(Zero::Yes);
    };
    for (offset, len) in held {
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(WINDOW);
            buf.resize(n as usize, 0);
            parent.read_at(offset + pos, &mut buf)?;
            if !is_zero(&buf) {
                return Ok(Zero::OverParentData);
            }
            pos += n;
        }
    }
    Ok(Zero::Yes)
}

/// The moves of step 2: the highest block into the lowest hole below it
/// that takes a block (with the data alignment the image keeps), until no
/// hole below the highest block is left. Holes lie after the metadata
/// that comes before the blocks and between everything referenced.
fn plan_moves(img: &Image) -> Result<Vec<(usize, u64)>> {
    let regions = img.layout_regions()?;
    let span = img.block_span()?;
    let align = img.data_alignment()?;
    let first_block = regions
        .iter()
        .filter(|r| !matches!(r.what, Use::Metadata(_)))
        .map(|r| r.start)
        .min();
    let Some(first_block) = first_block else {
        return Ok(Vec::new());
    };
    let base = regions
        .iter()
        .filter(|r| matches!(r.what, Use::Metadata(_)) && r.start < first_block)
        .map(|r| r.end)
        .max()
        .unwrap_or(0);
    // Holes: gaps between referenced regions, from `base` to the footer.
    let mut holes: Vec<(u64, u64)> = Vec::new();
    let mut covered = base;
    for r in &regions {
        if r.end <= base {
            continue;
        }
        if r.start > covered {
            holes.push((covered, r.start));
        }
        covered = covered.max(r.end);
    }
    let mut movable: Vec<(u64, usize)> = regions
        .iter()
        .filter_map(|r| match r.what {
            Use::Block(b) => Some((r.start, b)),
            _ => None,
        })
        .collect();
    movable.sort_unstable();
    let mut moves = Vec::new();
    while let Some(&(source, block)) = movable.last() {
        let mut found = None;
        for (i, &(lo, hi)) in holes.iter().enumerate() {
            let slot = img.slot_at_or_after(lo, align)?;
            if slot + span > source {
                break;
            }
            if slot + span <= hi {
                found = Some((i, slot));
                break;
            }
        }
        let Some((i, slot)) = found else { break };
        let (lo, hi) = holes[i];
        holes.splice(i..=i, [(lo, slot), (slot + span, hi)]);
        moves.push((block, slot));
        movable.pop();
    }
    Ok(moves)
}
