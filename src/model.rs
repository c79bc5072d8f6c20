//! The pure model: what a disk *is*, stated as simply as possible so that
//! it is obviously right. The driver is checked against it by the
//! differential tests in `tests/model_vs_driver.rs` and the fuzz targets.
//!
//! Nothing here does I/O or shares code with the driver's fast paths.

use std::collections::BTreeMap;

/// Bytes per sector.
pub const SECTOR: u64 = 512;

/// The checksum of footers and headers, written out the long way: the
/// ones' complement of the sum of all bytes, the checksum field counted as 0.
pub fn checksum(bytes: &[u8], field_offset: usize) -> u32 {
    let mut sum: u32 = 0;
    for (i, byte) in bytes.iter().enumerate() {
        let in_field = i >= field_offset && i < field_offset + 4;
        if !in_field {
            sum = sum.wrapping_add(u32::from(*byte));
        }
    }
    !sum
}

/// The spec's geometry algorithm, transcribed: (cylinders, heads, sectors
/// per track) for a disk of `total_sectors` sectors.
pub fn geometry(total_sectors: u64) -> (u64, u64, u64) {
    let mut total = total_sectors;
    if total > 65535 * 16 * 255 {
        total = 65535 * 16 * 255;
    }
    let (mut spt, mut heads, mut cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        spt = 17;
        cth = total / spt;
        heads = cth.div_ceil(1024);
        if heads < 4 {
            heads = 4;
        }
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
    }
    (cth / heads, heads, spt)
}

/// Where a guest byte lives in the block structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Index of the block (BAT entry).
    pub block: u64,
    /// Sector within the block (bitmap bit).
    pub sector_in_block: u64,
    /// Byte within the sector.
    pub byte_in_sector: u64,
}

/// Guest byte offset to block, sector in block, byte in sector.
pub fn locate(offset: u64, block_size: u64) -> Location {
    Location {
        block: offset / block_size,
        sector_in_block: (offset % block_size) / SECTOR,
        byte_in_sector: offset % SECTOR,
    }
}

/// Bytes of a block's sector bitmap: one bit per sector, whole sectors.
pub fn bitmap_bytes(block_size: u64) -> u64 {
    let bits = block_size / SECTOR;
    let bytes = bits.div_ceil(8);
    bytes.div_ceil(SECTOR) * SECTOR
}

/// File offset of a guest byte in a block whose BAT entry is `bat_entry`.
pub fn file_offset(bat_entry: u32, block_size: u64, loc: Location) -> u64 {
    u64::from(bat_entry) * SECTOR
        + bitmap_bytes(block_size)
        + loc.sector_in_block * SECTOR
        + loc.byte_in_sector
}

/// Whether a block's bitmap says the sector holds data: bit 7 of byte 0 is
/// sector 0.
pub fn bitmap_bit(bitmap: &[u8], sector_in_block: u64) -> bool {
    let byte = bitmap
        .get((sector_in_block / 8) as usize)
        .copied()
        .unwrap_or(0);
    (byte >> (7 - sector_in_block % 8)) & 1 == 1
}

/// One layer of a disk: the sectors written to it. A sector absent from
/// the map has never been written in this layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    sectors: BTreeMap<u64, Vec<u8>>,
}

/// A disk as a stack of layers: the base at index 0, the writable top last.
/// A sector reads from the topmost layer that has it, else as zeros. A
/// fixed or dynamic disk is a one-layer disk; each differencing child adds
/// a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    size: u64,
    layers: Vec<Layer>,
}

impl Disk {
    /// An empty disk of `size` bytes (a multiple of 512) with one layer.
    pub fn new(size: u64) -> Disk {
        Disk {
            size,
            layers: vec![Layer::default()],
        }
    }

    /// Guest size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of layers (1 + depth of the chain).
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// What sector `n` reads as.
    pub fn sector(&self, n: u64) -> Vec<u8> {
        for layer in self.layers.iter().rev() {
            if let Some(data) = layer.sectors.get(&n) {
                return data.clone();
            }
        }
        vec![0; SECTOR as usize]
    }

    /// The bytes at `offset..offset + len`, which must lie inside the disk.
    pub fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        assert!(offset + len <= self.size, "model read past the end");
        let mut out = Vec::with_capacity(len as usize);
        for pos in offset..offset + len {
            let sector = self.sector(pos / SECTOR);
            out.push(sector[(pos % SECTOR) as usize]);
        }
        out
    }

    /// Writes `data` at `offset` into the top layer.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        assert!(
            offset + data.len() as u64 <= self.size,
            "model write past the end"
        );
        for (i, byte) in data.iter().enumerate() {
            let pos = offset + i as u64;
            let mut sector = self.sector(pos / SECTOR);
            sector[(pos % SECTOR) as usize] = *byte;
            let top = self.layers.last_mut().expect("a disk has a layer");
            top.sectors.insert(pos / SECTOR, sector);
        }
    }

    /// Adds an empty top layer: a differencing child.
    pub fn push_child(&mut self) {
        self.layers.push(Layer::default());
    }

    /// Merges the top layer into the one below (commit). The top layer
    /// keeps its sectors, which now equal the parent's, so the disk reads
    /// the same through the child and through the parent alone.
    pub fn commit_top(&mut self) {
        let n = self.layers.len();
        if n < 2 {
            return;
        }
        let top = self.layers[n - 1].clone();
        let below = &mut self.layers[n - 2];
        for (sector, data) in top.sectors {
            below.sectors.insert(sector, data);
        }
    }

    /// Drops the top layer, keeping what the parent reads as (the disk as
    /// seen through the parent after the child is discarded).
    pub fn pop_child(&mut self) {
        if self.layers.len() > 1 {
            self.layers.pop();
        }
    }

    /// Whether sector `n` was written in layer `layer` (0 is the base).
    pub fn written_in(&self, layer: usize, n: u64) -> bool {
        self.layers
            .get(layer)
            .is_some_and(|l| l.sectors.contains_key(&n))
    }
}
