//! The sector bitmap in front of each block: one bit per sector of the
//! block, most significant bit first, padded to a whole sector. A set bit
//! means the sector holds data in this image.

use crate::format::SECTOR_SIZE;

/// Bytes of the bitmap of a block of `block_size` bytes, padded to sectors.
pub fn bitmap_size(block_size: u32) -> u64 {
    let bits = u64::from(block_size) / SECTOR_SIZE;
    bits.div_ceil(8).div_ceil(SECTOR_SIZE) * SECTOR_SIZE
}

/// Whether bit `sector` is set; bits past the end read as clear.
pub fn get(bitmap: &[u8], sector: u64) -> bool {
    let Ok(byte) = usize::try_from(sector / 8) else {
        return false;
    };
    bitmap
        .get(byte)
        .is_some_and(|b| b & (0x80 >> (sector % 8)) != 0)
}

/// Sets bits `start..end`; returns whether any bit changed. Bits past the
/// end of the bitmap are ignored.
pub fn set_range(bitmap: &mut [u8], start: u64, end: u64) -> bool {
    let mut changed = false;
    for sector in start..end {
        let Ok(byte) = usize::try_from(sector / 8) else {
            break;
        };
        if let Some(b) = bitmap.get_mut(byte) {
            let mask = 0x80 >> (sector % 8);
            if *b & mask == 0 {
                *b |= mask;
                changed = true;
            }
        }
    }
    changed
}

/// Length of the run of bits equal to bit `start`, from `start` up to `end`.
pub fn run_length(bitmap: &[u8], start: u64, end: u64) -> u64 {
    let value = get(bitmap, start);
    let mut n = start;
    while n < end {
        // Skip whole bytes that are all set or all clear.
        if n.is_multiple_of(8) && n + 8 <= end {
            let byte = usize::try_from(n / 8)
                .ok()
                .and_then(|i| bitmap.get(i))
                .copied()
                .unwrap_or(0);
            if (value && byte == 0xFF) || (!value && byte == 0) {
                n += 8;
                continue;
            }
        }
        if get(bitmap, n) != value {
            break;
        }
        n += 1;
    }
    n - start
}
