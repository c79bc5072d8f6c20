//! CHS disk geometry and the spec's algorithm that derives it from a size.

use crate::format::SECTOR_SIZE;

/// The largest number of sectors a geometry can describe: 65535 x 16 x 255
/// (about 127 GiB). Larger disks get this geometry and are sized by
/// `current_size` alone.
pub const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;

/// Cylinders, heads and sectors per track, as stored in the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub struct Geometry {
    /// Cylinders (16 bits on disk).
    pub cylinders: u16,
    /// Heads (8 bits on disk).
    pub heads: u8,
    /// Sectors per track (8 bits on disk).
    pub sectors_per_track: u8,
}

impl Geometry {
    /// The geometry the spec's algorithm gives for a disk of `total_sectors`
    /// sectors. Disks over [`MAX_CHS_SECTORS`] get the largest geometry.
    pub fn from_total_sectors(total_sectors: u64) -> Geometry {
        let total = total_sectors.min(MAX_CHS_SECTORS);
        let (spt, heads, cyl_times_heads): (u64, u64, u64);
        if total >= 65535 * 16 * 63 {
            spt = 255;
            heads = 16;
            cyl_times_heads = total / spt;
        } else {
            let mut s = 17;
            let mut cth = total / s;
            let mut h = cth.div_ceil(1024).max(4);
            if cth >= h * 1024 || h > 16 {
                s = 31;
                h = 16;
                cth = total / s;
            }
            if cth >= h * 1024 {
                s = 63;
                h = 16;
                cth = total / s;
            }
            spt = s;
            heads = h;
            cyl_times_heads = cth;
        }
        let cylinders = cyl_times_heads / heads;
        Geometry {
            // All three fit: cylinders <= 65535 by the bound above.
            cylinders: u16::try_from(cylinders).unwrap_or(u16::MAX),
            heads: u8::try_from(heads).unwrap_or(u8::MAX),
            sectors_per_track: u8::try_from(spt).unwrap_or(u8::MAX),
        }
    }

    /// The geometry for a disk of `size` bytes.
    pub fn for_size(size: u64) -> Geometry {
        Geometry::from_total_sectors(size / SECTOR_SIZE)
    }

    /// Sectors the geometry describes: C x H x S.
    pub fn total_sectors(self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors_per_track)
    }

    /// Bytes the geometry describes.
    pub fn capacity(self) -> u64 {
        self.total_sectors() * SECTOR_SIZE
    }
}

/// The size the `chs` size rule gives for a requested size: the smallest
/// size of at least `requested` bytes that a spec geometry describes exactly
/// (what `qemu-img create -f vpc` does without `force_size`). `None` when no
/// geometry is large enough (over about 127 GiB).
pub fn chs_rounded_size(requested: u64) -> Option<u64> {
    chs_rounded(requested).map(|(size, _)| size)
}

/// The `chs` rule with the geometry it found. The search tries the
/// algorithm for `n`, `n + 1`, ... sectors and stops at the first geometry
/// that covers the request; the size is what that geometry describes. Just
/// below each switch of the algorithm (sectors per track 17 -> 31 -> 63),
/// the algorithm run on the rounded size itself gives a smaller geometry,
/// so the geometry found is kept with the size, as QEMU keeps it: it
/// describes the size exactly (GEO-ALGORITHM accepts that).
pub fn chs_rounded(requested: u64) -> Option<(u64, Geometry)> {
    let wanted = requested.div_ceil(SECTOR_SIZE);
    if wanted > MAX_CHS_SECTORS {
        return None;
    }
    // The capacity of the geometry for n sectors trails n by less than one
    // cylinder (at most 16 x 255 sectors), so this search is short.
    let mut n = wanted;
    while n <= MAX_CHS_SECTORS {
        let geometry = Geometry::from_total_sectors(n);
        let capacity = geometry.total_sectors();
        if capacity >= wanted {
            return Some((capacity * SECTOR_SIZE, geometry));
        }
        n += 1;
    }
    None
}
