//! On-disk structures only: plain types that parse (checking their own
//! rules) and serialize. No I/O happens here.

pub mod bat;
pub mod bitmap;
pub mod checksum;
pub mod dyn_header;
pub mod footer;
pub mod geometry;
pub mod locator;
pub mod timestamp;

/// Bytes in a sector, the unit of every offset in the format.
pub const SECTOR_SIZE: u64 = 512;
/// Bytes in a footer.
pub const FOOTER_SIZE: usize = 512;
/// Bytes in the dynamic header.
pub const DYN_HEADER_SIZE: usize = 1024;
/// Block offsets are 32-bit sector numbers: no block can start at or past
/// this byte offset (2 TiB).
pub const MAX_BLOCK_FILE_OFFSET: u64 = (u32::MAX as u64) * SECTOR_SIZE;
/// The largest disk Microsoft's tools make in this format (2040 GiB); the
/// limit `create` enforces for every type.
pub const MAX_DISK_SIZE: u64 = 2040 * 1024 * 1024 * 1024;
/// The most blocks a dynamic disk may have (2^26, a 256 MiB BAT).
pub const MAX_BLOCKS: u64 = 1 << 26;
/// The boundary the data of a new block starts on when blocks are at least
/// [`ALIGNED_BLOCKS_FROM`] (as Windows lays blocks out): 4 KiB, the page
/// size and the physical sector of 512e and 4Kn disks.
pub const BLOCK_DATA_ALIGN: u64 = 4096;
/// The smallest block size whose new blocks get their data aligned to
/// [`BLOCK_DATA_ALIGN`] (512 KiB, the smallest block `create` makes): the
/// padding, at most 3.5 KiB per block, is then under 0.7% of the file.
/// Smaller blocks (only foreign images have them) are packed.
pub const ALIGNED_BLOCKS_FROM: u64 = 512 * 1024;

/// The first place at or after `pos` (rounded up to a sector) where a
/// block with a bitmap of `bitmap` bytes may start so that its data starts
/// on a multiple of `align` (itself a multiple of a sector). Saturates
/// instead of overflowing (for offsets read from hostile files).
pub fn block_slot(pos: u64, bitmap: u64, align: u64) -> u64 {
    let data = pos
        .div_ceil(SECTOR_SIZE)
        .saturating_mul(SECTOR_SIZE)
        .saturating_add(bitmap)
        .div_ceil(align)
        .saturating_mul(align);
    data.saturating_sub(bitmap)
}

/// Whether the block of BAT entry `entry` (a sector number), with a bitmap
/// of `bitmap` bytes, has its data on a [`BLOCK_DATA_ALIGN`] boundary.
pub fn block_data_aligned(entry: u32, bitmap: u64) -> bool {
    (u64::from(entry) * SECTOR_SIZE + bitmap).is_multiple_of(BLOCK_DATA_ALIGN)
}

pub use bat::UNALLOCATED;
pub use dyn_header::DynHeader;
pub use footer::{DiskType, Footer};
pub use geometry::Geometry;
pub use locator::{LocatorEntry, Platform};
pub use timestamp::Timestamp;
