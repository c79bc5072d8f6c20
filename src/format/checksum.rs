//! The checksum of footers and dynamic headers.

/// Ones' complement of the byte sum of `bytes`, with the four bytes of the
/// checksum field at `field` counted as zero.
pub fn checksum(bytes: &[u8], field: usize) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |acc, (_, b)| acc.wrapping_add(u32::from(*b)));
    !sum
}
