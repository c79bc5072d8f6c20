//! The block allocation table: big-endian u32 sector offsets of blocks,
//! `0xFFFFFFFF` for a block not allocated, padded to a whole sector.

use crate::format::SECTOR_SIZE;

/// The BAT entry of a block that is not allocated.
pub const UNALLOCATED: u32 = u32::MAX;

/// Bytes the BAT of `entries` entries occupies on disk, padded to a sector.
pub fn bat_size_on_disk(entries: u32) -> u64 {
    (u64::from(entries) * 4).div_ceil(SECTOR_SIZE) * SECTOR_SIZE
}

/// Decodes BAT bytes into entries (a trailing partial entry is ignored).
pub fn parse_bat(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Encodes entries as BAT bytes, padded with `0xFF` to a whole sector.
pub fn serialize_bat(entries: &[u32]) -> Vec<u8> {
    let len = entries.len() as u64 * 4;
    let padded = len.div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
    let mut out: Vec<u8> = entries.iter().flat_map(|e| e.to_be_bytes()).collect();
    out.resize(usize::try_from(padded).unwrap_or(out.len()), 0xFF);
    out
}
