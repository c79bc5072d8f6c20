//! The block allocation table: big-endian u32 sector offsets of blocks,
//! `0xFFFFFFFF` for a block not allocated, padded to a whole sector.

use crate::format::SECTOR_SIZE;

/// The BAT entry of a block that is not allocated.
pub const UNALLOCATED: u32 = u32::MAX;

/// Bytes the BAT of `entries` entries occupies on disk, padded to a sector.
pub fn bat_size_on_disk(entries: u32) -> u64 {
    (u64::from(entries) * 4).div_ceil(SECTOR_SIZE) * SECTOR_SIZE
}

/// The cookie of Xen's batmap header, the sector right after the BAT
/// that `vhd-util` writes (not in the VHD spec).
pub const BATMAP_COOKIE: &[u8; 8] = b"tdbatmap";

/// The bytes of the batmap header that say where the map is.
pub const BATMAP_HEAD_LEN: usize = 20;

/// Reads Xen's batmap header from its first [`BATMAP_HEAD_LEN`] bytes:
/// `None` without the cookie, else `Some(map)` where `map` is the byte
/// range of the map itself (its offset as a big-endian u64, its size in
/// sectors as a u32) when that range lies after the leading footer copy
/// and ends by `limit`, and `None` when it does not.
pub fn parse_batmap_head(head: &[u8; BATMAP_HEAD_LEN], limit: u64) -> Option<Option<(u64, u64)>> {
    if &head[..8] != BATMAP_COOKIE {
        return None;
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&head[8..16]);
    let offset = u64::from_be_bytes(offset);
    let mut sectors = [0u8; 4];
    sectors.copy_from_slice(&head[16..20]);
    let sectors = u64::from(u32::from_be_bytes(sectors));
    let map = sectors
        .checked_mul(SECTOR_SIZE)
        .and_then(|n| offset.checked_add(n))
        .filter(|&end| end <= limit && offset >= super::FOOTER_SIZE as u64)
        .map(|end| (offset, end));
    Some(map)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(cookie: [u8; 8], offset: u64, sectors: u32) -> [u8; BATMAP_HEAD_LEN] {
        let mut h = [0u8; BATMAP_HEAD_LEN];
        h[..8].copy_from_slice(&cookie);
        h[8..16].copy_from_slice(&offset.to_be_bytes());
        h[16..20].copy_from_slice(&sectors.to_be_bytes());
        h
    }

    #[test]
    fn a_batmap_head_gives_the_map_range_only_when_it_fits() {
        assert_eq!(
            parse_batmap_head(&head(*b"tdbatmaq", 4096, 1), 1 << 20),
            None
        );
        assert_eq!(
            parse_batmap_head(&head(*BATMAP_COOKIE, 4096, 2), 1 << 20),
            Some(Some((4096, 5120)))
        );
        // Ends past the limit, starts inside the leading footer copy, or
        // overflows: the header counts, the map does not.
        assert_eq!(
            parse_batmap_head(&head(*BATMAP_COOKIE, 4096, 2), 5119),
            Some(None)
        );
        assert_eq!(
            parse_batmap_head(&head(*BATMAP_COOKIE, 511, 1), 1 << 20),
            Some(None)
        );
        assert_eq!(
            parse_batmap_head(&head(*BATMAP_COOKIE, u64::MAX - 100, 1), u64::MAX),
            Some(None)
        );
    }
}
