//! How a dynamic or differencing image uses its file: FILE-LEAK,
//! FILE-TAIL and FILE-ORDER.
//!
//! The structures that reference space are the footer copy, the dynamic
//! header, the BAT (padded to a sector), the data space of each parent
//! locator that lies in the file, Xen's batmap (a `tdbatmap` header right
//! after the BAT and the map it points at, which blktap writes), and every
//! readable block (bitmap and data). A gap that one more block fits in,
//! laid out as the image lays out its blocks, is space nothing uses
//! (FILE-LEAK), such as a block appended by a writer that was killed
//! before it wrote the BAT entry. Shorter gaps are alignment padding:
//! Windows and vhdref put block data on 4 KiB boundaries, so in an image
//! whose every block has its data there, a block fits in a gap only from
//! its first 4 KiB boundary on (a gap can be up to 3.5 KiB longer than a
//! block span without one fitting: a block moved out from between two
//! aligned blocks leaves that); in other images a block fits in any gap
//! of a block span. Before the trailing footer, a gap no block fits in
//! must hold only zeros (FILE-TAIL).

use crate::error::{Error, Result, count};
use crate::format::bat::{BATMAP_HEAD_LEN, UNALLOCATED, bat_size_on_disk, parse_batmap_head};
use crate::format::{
    BLOCK_DATA_ALIGN, DYN_HEADER_SIZE, FOOTER_SIZE, SECTOR_SIZE, block_data_aligned, block_slot,
};
use crate::rules::{self, Finding, Rule};
use crate::storage::Storage;

use super::CheckOptions;
use super::layer::{Findings, SparseState};

/// Bytes read per step when a gap is scanned for data.
const WINDOW: u64 = 1 << 20;

/// The regions of metadata that reference space: `(start, end)`.
fn metadata(storage: &dyn Storage, state: &SparseState) -> Vec<(u64, u64)> {
    let h = &state.header;
    // Any offset: the checker goes on past HDR-TABLE-OFFSET.
    let bat_end = h
        .table_offset
        .saturating_add(bat_size_on_disk(h.max_table_entries));
    let mut regions = vec![
        (0, FOOTER_SIZE as u64),
        (
            state.header_offset,
            state.header_offset.saturating_add(DYN_HEADER_SIZE as u64),
        ),
        (h.table_offset, bat_end),
    ];
    for loc in h.parent_locators.iter().filter(|l| l.is_used()) {
        let start = loc.platform_data_offset;
        let len = loc
            .data_space_bytes()
            .max(u64::from(loc.platform_data_length));
        if let Some(end) = start.checked_add(len).filter(|&e| e <= state.footer_offset) {
            regions.push((start, end));
        }
    }
    regions.extend(batmap(storage, bat_end, state.footer_offset));
    regions
}

/// Xen's batmap: a sector with the cookie `tdbatmap` right after the BAT,
/// holding the map's offset (u64) and size in sectors (u32), big-endian.
fn batmap(storage: &dyn Storage, at: u64, limit: u64) -> Vec<(u64, u64)> {
    let mut head = [0u8; BATMAP_HEAD_LEN];
    if at.saturating_add(SECTOR_SIZE) > limit || storage.read_exact_at(&mut head, at).is_err() {
        return Vec::new();
    }
    let Some(map) = parse_batmap_head(&head, limit) else {
        return Vec::new();
    };
    let mut out = vec![(at, at + SECTOR_SIZE)];
    out.extend(map);
    out
}

/// Whether a block fits in `start..end`: from `start` on (at a sector)
/// when `aligned` is false, else from the first place at or after it
/// where the block's data starts on a [`BLOCK_DATA_ALIGN`] boundary.
fn holds_a_block(start: u64, end: u64, state: &SparseState, aligned: bool) -> bool {
    let block_start = if aligned {
        block_slot(start, state.header.bitmap_size(), BLOCK_DATA_ALIGN)
    } else {
        start
    };
    block_start.saturating_add(state.span) <= end
}

/// Whether the image keeps its block data on [`BLOCK_DATA_ALIGN`]
/// boundaries: it has blocks, and every one does.
fn keeps_aligned_data(blocks: impl Iterator<Item = u32>, bitmap: u64) -> bool {
    let mut any = false;
    blocks.filter(|&e| e != UNALLOCATED).all(|e| {
        any = true;
        block_data_aligned(e, bitmap)
    }) && any
}

/// FILE-ORDER, FILE-LEAK and FILE-TAIL. `blocks` are the allocated entries
/// in ascending order (of the disk's blocks and those past it): every one
/// counts as using its block's span, broken or not (its error is its own
/// rule). `first_block` is where the first readable block starts.
pub(crate) fn judge_space(
    storage: &dyn Storage,
    state: &SparseState,
    blocks: impl Iterator<Item = u32> + Clone,
    first_block: Option<u64>,
    options: &CheckOptions,
    out: &mut Findings,
) -> Result<()> {
    let mut meta = metadata(storage, state);
    meta.sort_unstable();
    let span = state.span;
    let aligned = keeps_aligned_data(blocks.clone(), state.header.bitmap_size());
    if let (Some(first_start), Some(meta_end)) = (
        first_block,
        meta.iter().filter(|r| r.0 > 0).map(|r| r.1).max(),
    ) && first_start < meta_end
        && !rules::disabled(Rule::FileOrder)
    {
        out.push(
            Finding::new(
                Rule::FileOrder,
                format!(
                    "a block starts at {first_start:#x}, before the end of the metadata at {meta_end:#x}"
                ),
            )
            .at(first_start, span),
        );
    }
    // The end of the data area: the trailing footer, or (when only the
    // copy is valid) the place the damaged footer takes.
    let limit = if state.from_copy {
        state.len.saturating_sub(FOOTER_SIZE as u64)
    } else {
        state.footer_offset
    };
    let mut covered = 0u64;
    let mut leaks = 0u64;
    let mut note = |start: u64, end: u64, out: &mut Findings| {
        if end > start
            && holds_a_block(start, end, state, aligned)
            && !rules::disabled(Rule::FileLeak)
        {
            leaks += 1;
            out.push(
                Finding::new(
                    Rule::FileLeak,
                    format!(
                        "{} at {start:#x} {} referenced by nothing (a block span is {span} bytes)",
                        count(end - start, "byte", "bytes"),
                        if end - start == 1 { "is" } else { "are" }
                    ),
                )
                .at(start, end - start),
            );
        }
    };
    let mut mi = meta.iter().peekable();
    let mut bi = blocks.filter(|&e| e != UNALLOCATED).peekable();
    loop {
        let next = match (mi.peek(), bi.peek()) {
            (Some(&&(ms, me)), Some(&b)) => {
                let bs = u64::from(b) * SECTOR_SIZE;
                if ms <= bs {
                    mi.next();
                    (ms, me)
                } else {
                    bi.next();
                    (bs, bs + span)
                }
            }
            (Some(&&r), None) => {
                mi.next();
                r
            }
            (None, Some(&b)) => {
                bi.next();
                let bs = u64::from(b) * SECTOR_SIZE;
                (bs, bs + span)
            }
            (None, None) => break,
        };
        if next.0 > covered {
            note(covered, next.0.min(limit), out);
        }
        covered = covered.max(next.1);
    }
    if covered < limit {
        if holds_a_block(covered, limit, state, aligned) {
            note(covered, limit, out);
        } else if options.data_checks
            && !rules::disabled(Rule::FileTail)
            && let Some(at) = first_nonzero(storage, covered, limit)?
        {
            out.push(
                Finding::new(
                    Rule::FileTail,
                    format!(
                        "{} between the last structure (ending at {covered:#x}) and the trailing footer hold data, first at {at:#x}",
                        count(limit - covered, "byte", "bytes")
                    ),
                )
                .at(covered, limit - covered),
            );
        }
    }
    let _ = leaks;
    Ok(())
}

/// The offset of the first byte that is not zero in `start..end`.
fn first_nonzero(storage: &dyn Storage, start: u64, end: u64) -> Result<Option<u64>> {
    let mut buf = Vec::new();
    let mut pos = start;
    while pos < end {
        let n = (end - pos).min(WINDOW);
        buf.resize(usize::try_from(n).unwrap_or(0), 0);
        storage
            .read_exact_at(&mut buf, pos)
            .map_err(|e| Error::io("reading the space before the footer", e))?;
        if let Some(k) = buf.iter().position(|&b| b != 0) {
            return Ok(Some(pos + k as u64));
        }
        pos += n;
    }
    Ok(None)
}
