//! A small VHD writer for tests, independent of the library: it lays out
//! footers, the dynamic header, the BAT, locator data and blocks straight
//! from the byte tables of the spec and computes its own checksums, so a
//! bug in vhdref's serializers cannot hide a bug in its parser.
//!
//! Every field can be overridden (with checksums still right), so a test
//! can break exactly one rule; `corrupt` damages the finished bytes.
//!
//! Layout of a dynamic or differencing image (the usual one): footer copy
//! at 0, dynamic header at 512, BAT at 1536 (padded to a sector), locator
//! data (each in its own sector-aligned space), blocks in index order
//! (bitmap then data), trailing footer. A fixed image is data, slack,
//! footer.

#![allow(dead_code)]

use std::collections::BTreeMap;

use uuid::Uuid;

/// Bytes in a sector.
pub const SECTOR: u64 = 512;
/// Offset of the dynamic header.
pub const HEADER_OFFSET: u64 = 512;
/// Offset of the BAT.
pub const BAT_OFFSET: u64 = 1536;
/// Footer checksum field offset.
pub const FOOTER_CHECKSUM: usize = 64;
/// Dynamic header checksum field offset.
pub const HEADER_CHECKSUM: usize = 36;

/// Platform codes of parent locators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Windows relative path, UTF-16LE.
    W2ru,
    /// Windows absolute path, UTF-16LE.
    W2ku,
    /// File URL, UTF-8.
    MacX,
    /// Mac OS alias blob (opaque).
    Mac,
    /// Any four bytes.
    Code([u8; 4]),
}

impl Platform {
    fn code(self) -> [u8; 4] {
        match self {
            Platform::W2ru => *b"W2ru",
            Platform::W2ku => *b"W2ku",
            Platform::MacX => *b"MacX",
            Platform::Mac => *b"Mac ",
            Platform::Code(c) => c,
        }
    }

    fn encode(self, text: &str) -> Vec<u8> {
        match self {
            Platform::W2ru | Platform::W2ku => {
                text.encode_utf16().flat_map(u16::to_le_bytes).collect()
            }
            _ => text.as_bytes().to_vec(),
        }
    }
}

/// The unit a writer stores a locator's data space in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSpace {
    /// Bytes (Hyper-V and most writers in practice).
    Bytes,
    /// Sectors (what the spec says).
    Sectors,
}

/// Which sectors of a block hold data (bitmap bits set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bits {
    /// Every sector.
    All,
    /// None.
    None,
    /// These sector indexes within the block.
    Sectors(Vec<u64>),
    /// The bitmap bytes exactly as given (padded with zeros).
    Raw(Vec<u8>),
}

impl Bits {
    fn is_set(&self, sector: u64) -> bool {
        match self {
            Bits::All => true,
            Bits::None => false,
            Bits::Sectors(s) => s.contains(&sector),
            Bits::Raw(b) => b
                .get((sector / 8) as usize)
                .is_some_and(|byte| byte & (0x80 >> (sector % 8)) != 0),
        }
    }
}

#[derive(Debug, Clone)]
struct Locator {
    platform: Platform,
    data: Vec<u8>,
    space: DataSpace,
    offset: Option<u64>,
    length: Option<u32>,
    space_field: Option<u32>,
}

#[derive(Debug, Clone)]
struct Block {
    bits: Bits,
    data: Vec<u8>,
}

/// Where the builder put things (for tests that damage them).
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Offset of the trailing footer.
    pub footer_offset: u64,
    /// Byte offset of each allocated block's bitmap, by block index.
    pub blocks: BTreeMap<u32, u64>,
    /// Offset of each locator's data, in the order added.
    pub locators: Vec<u64>,
    /// Bytes of the bitmap in front of each block.
    pub bitmap_size: u64,
    /// Entries of the BAT as laid out.
    pub bat_entries: u64,
    /// Offset of the BAT.
    pub bat_offset: u64,
}

type Damage = Box<dyn Fn(&mut Vec<u8>, &Layout)>;

/// A VHD image to build. See the module docs.
pub struct VhdBuilder {
    disk_type: u32,
    sparse: bool,
    current_size: u64,
    original_size: Option<u64>,
    block_size: u32,
    header_block_size: Option<u32>,
    creator: [u8; 4],
    creator_version: u32,
    host_os: [u8; 4],
    time_stamp: u32,
    unique_id: Uuid,
    features: u32,
    version: u32,
    saved_state: u8,
    geometry: Option<(u16, u8, u8)>,
    footer_data_offset: Option<u64>,
    header_data_offset: u64,
    header_version: u32,
    table_offset: Option<u64>,
    max_table_entries: Option<u32>,
    parent_id: Uuid,
    parent_time_stamp: u32,
    parent_name: Vec<u8>,
    locators: Vec<Locator>,
    blocks: BTreeMap<u32, Block>,
    bat_overrides: BTreeMap<u32, u32>,
    fixed_data: Vec<u8>,
    fixed_slack: u64,
    data_alignment: u64,
    bat_after_locators: Option<u64>,
    damage: Vec<Damage>,
}

impl VhdBuilder {
    fn new(disk_type: u32, sparse: bool, size: u64) -> Self {
        VhdBuilder {
            disk_type,
            sparse,
            current_size: size,
            original_size: None,
            block_size: 2 << 20,
            header_block_size: None,
            creator: *b"tst ",
            creator_version: 0x0001_0000,
            host_os: *b"Wi2k",
            time_stamp: 0x2000_0000,
            unique_id: Uuid::new_v4(),
            features: 2,
            version: 0x0001_0000,
            saved_state: 0,
            geometry: None,
            footer_data_offset: None,
            header_data_offset: u64::MAX,
            header_version: 0x0001_0000,
            table_offset: None,
            max_table_entries: None,
            parent_id: Uuid::nil(),
            parent_time_stamp: 0,
            parent_name: Vec::new(),
            locators: Vec::new(),
            blocks: BTreeMap::new(),
            bat_overrides: BTreeMap::new(),
            fixed_data: Vec::new(),
            fixed_slack: 0,
            data_alignment: 0,
            bat_after_locators: None,
            damage: Vec::new(),
        }
    }

    /// A fixed image of `size` bytes (zeros unless `data` is given).
    pub fn fixed(size: u64) -> Self {
        Self::new(2, false, size)
    }

    /// A dynamic image of `size` bytes with 2 MiB blocks.
    pub fn dynamic(size: u64) -> Self {
        Self::new(3, true, size)
    }

    /// A differencing image of `size` bytes with 2 MiB blocks.
    pub fn differencing(size: u64) -> Self {
        Self::new(4, true, size)
    }

    /// Block size used for the layout and written in the header.
    pub fn block_size(mut self, bs: u32) -> Self {
        self.block_size = bs;
        self
    }

    /// Writes `bs` in the header's block size field only (the layout keeps
    /// the real block size).
    pub fn header_block_size(mut self, bs: u32) -> Self {
        self.header_block_size = Some(bs);
        self
    }

    /// Creator application.
    pub fn creator(mut self, c: [u8; 4]) -> Self {
        self.creator = c;
        self
    }

    /// Creator version.
    pub fn creator_version(mut self, v: u32) -> Self {
        self.creator_version = v;
        self
    }

    /// Creator host OS.
    pub fn host_os(mut self, c: [u8; 4]) -> Self {
        self.host_os = c;
        self
    }

    /// Footer time stamp.
    pub fn time_stamp(mut self, t: u32) -> Self {
        self.time_stamp = t;
        self
    }

    /// Unique ID.
    pub fn unique_id(mut self, id: Uuid) -> Self {
        self.unique_id = id;
        self
    }

    /// The unique ID that will be written.
    pub fn id(&self) -> Uuid {
        self.unique_id
    }

    /// The footer time stamp that will be written.
    pub fn stamp(&self) -> u32 {
        self.time_stamp
    }

    /// Features field.
    pub fn features(mut self, f: u32) -> Self {
        self.features = f;
        self
    }

    /// File format version.
    pub fn version(mut self, v: u32) -> Self {
        self.version = v;
        self
    }

    /// Disk type code, any value.
    pub fn disk_type(mut self, code: u32) -> Self {
        self.disk_type = code;
        self
    }

    /// Current size field only (the layout keeps the size given first).
    pub fn current_size(mut self, size: u64) -> Self {
        self.original_size.get_or_insert(self.current_size);
        self.current_size = size;
        self
    }

    /// Saved-state flag.
    pub fn saved_state(mut self, yes: bool) -> Self {
        self.saved_state = u8::from(yes);
        self
    }

    /// Stored geometry instead of the algorithm's.
    pub fn geometry(mut self, cylinders: u16, heads: u8, spt: u8) -> Self {
        self.geometry = Some((cylinders, heads, spt));
        self
    }

    /// Footer data offset field.
    pub fn footer_data_offset(mut self, off: u64) -> Self {
        self.footer_data_offset = Some(off);
        self
    }

    /// Dynamic header data offset field.
    pub fn header_data_offset(mut self, off: u64) -> Self {
        self.header_data_offset = off;
        self
    }

    /// Dynamic header version.
    pub fn header_version(mut self, v: u32) -> Self {
        self.header_version = v;
        self
    }

    /// Table offset field only (the BAT stays at 1536).
    pub fn table_offset(mut self, off: u64) -> Self {
        self.table_offset = Some(off);
        self
    }

    /// Max table entries field only (the BAT on disk keeps its size).
    pub fn max_table_entries(mut self, n: u32) -> Self {
        self.max_table_entries = Some(n);
        self
    }

    /// Parent unique ID.
    pub fn parent_id(mut self, id: Uuid) -> Self {
        self.parent_id = id;
        self
    }

    /// Parent time stamp.
    pub fn parent_time_stamp(mut self, t: u32) -> Self {
        self.parent_time_stamp = t;
        self
    }

    /// Parent unicode name (written UTF-16BE).
    pub fn parent_name(mut self, name: &str) -> Self {
        self.parent_name = name.encode_utf16().flat_map(u16::to_be_bytes).collect();
        self
    }

    /// Parent unicode name field, raw bytes (at most 512).
    pub fn parent_name_raw(mut self, bytes: &[u8]) -> Self {
        self.parent_name = bytes.to_vec();
        self
    }

    /// A parent locator whose data is `text` in the platform's encoding.
    pub fn locator(self, platform: Platform, text: &str, space: DataSpace) -> Self {
        let data = platform.encode(text);
        self.locator_bytes(platform, &data, space)
    }

    /// A parent locator with raw data.
    pub fn locator_bytes(mut self, platform: Platform, data: &[u8], space: DataSpace) -> Self {
        self.locators.push(Locator {
            platform,
            data: data.to_vec(),
            space,
            offset: None,
            length: None,
            space_field: None,
        });
        self
    }

    /// Overrides the offset and/or length fields of the last locator added
    /// (its data is still written where the layout puts it).
    pub fn locator_fields(mut self, offset: Option<u64>, length: Option<u32>) -> Self {
        if let Some(l) = self.locators.last_mut() {
            l.offset = offset.or(l.offset);
            l.length = length.or(l.length);
        }
        self
    }

    /// Overrides the data space field of the last locator added.
    pub fn locator_space_field(mut self, space: u32) -> Self {
        if let Some(l) = self.locators.last_mut() {
            l.space_field = Some(space);
        }
        self
    }

    /// An allocated block: bitmap bits and data (padded with zeros to the
    /// block size).
    pub fn block(mut self, index: u32, bits: Bits, data: &[u8]) -> Self {
        self.blocks.insert(
            index,
            Block {
                bits,
                data: data.to_vec(),
            },
        );
        self
    }

    /// Writes `entry` in BAT slot `index`, whatever the layout says.
    pub fn bat_entry(mut self, index: u32, entry: u32) -> Self {
        self.bat_overrides.insert(index, entry);
        self
    }

    /// Contents of a fixed image (padded with zeros to the size).
    pub fn data(mut self, data: &[u8]) -> Self {
        self.fixed_data = data.to_vec();
        self
    }

    /// Bytes between a fixed image's data and its footer.
    pub fn fixed_slack(mut self, n: u64) -> Self {
        self.fixed_slack = n;
        self
    }

    /// Places each block so that its data (after the bitmap) starts at a
    /// multiple of `n` bytes, leaving gaps, as some Windows writers do.
    pub fn data_alignment(mut self, n: u64) -> Self {
        self.data_alignment = n;
        self
    }

    /// Puts the locator data right after the header and the BAT after it,
    /// at a multiple of `align` bytes (as some Windows writers do).
    pub fn bat_after_locators(mut self, align: u64) -> Self {
        self.bat_after_locators = Some(align);
        self
    }

    /// Damage applied to the finished bytes (after every checksum).
    pub fn corrupt(mut self, f: impl Fn(&mut Vec<u8>) + 'static) -> Self {
        self.damage.push(Box::new(move |b, _| f(b)));
        self
    }

    /// Damage that needs to know where things are.
    pub fn corrupt_at(mut self, f: impl Fn(&mut Vec<u8>, &Layout) + 'static) -> Self {
        self.damage.push(Box::new(f));
        self
    }

    /// The guest contents this image holds, on top of `parent` (zeros for
    /// a fixed or dynamic image: pass an empty slice).
    pub fn expected(&self, parent: &[u8]) -> Vec<u8> {
        let size = self.layout_size() as usize;
        if !self.sparse {
            let mut out = self.fixed_data.clone();
            out.resize(size, 0);
            return out;
        }
        let mut out = vec![0u8; size];
        if self.disk_type == 4 {
            let n = parent.len().min(size);
            out[..n].copy_from_slice(&parent[..n]);
        }
        let bs = u64::from(self.block_size);
        for (&i, block) in &self.blocks {
            for s in 0..bs / SECTOR {
                let guest = u64::from(i) * bs + s * SECTOR;
                if guest >= size as u64 {
                    break;
                }
                let dst = &mut out[guest as usize..(guest + SECTOR) as usize];
                if block.bits.is_set(s) {
                    let from = (s * SECTOR) as usize;
                    for (k, d) in dst.iter_mut().enumerate() {
                        *d = block.data.get(from + k).copied().unwrap_or(0);
                    }
                } else if self.disk_type != 4 {
                    dst.fill(0);
                }
            }
        }
        out
    }

    fn layout_size(&self) -> u64 {
        self.original_size.unwrap_or(self.current_size)
    }

    /// Bytes of the bitmap for the layout's block size.
    fn bitmap_size(&self) -> u64 {
        let sectors = u64::from(self.block_size) / SECTOR;
        sectors.div_ceil(8).div_ceil(SECTOR) * SECTOR
    }

    /// The finished image.
    pub fn build(&self) -> Vec<u8> {
        self.build_with_layout().0
    }

    /// The finished image and where things went.
    #[allow(clippy::too_many_lines)] // one layout, top to bottom
    pub fn build_with_layout(&self) -> (Vec<u8>, Layout) {
        let mut layout = Layout::default();
        let mut out: Vec<u8>;
        let data_offset;
        if self.sparse {
            data_offset = HEADER_OFFSET;
            let bs = u64::from(self.block_size.max(1));
            let entries = self.layout_size().div_ceil(bs);
            layout.bat_entries = entries;
            layout.bitmap_size = self.bitmap_size();
            let bat_bytes = (entries * 4).div_ceil(SECTOR) * SECTOR;
            let mut next = match self.bat_after_locators {
                None => {
                    layout.bat_offset = BAT_OFFSET;
                    BAT_OFFSET + bat_bytes
                }
                Some(_) => BAT_OFFSET,
            };
            // Locator data.
            let mut loc_entries = Vec::new();
            let mut loc_writes = Vec::new();
            for l in &self.locators {
                let room = (l.data.len() as u64).div_ceil(SECTOR).max(1);
                let space_field = l.space_field.unwrap_or(match l.space {
                    DataSpace::Bytes => (room * SECTOR) as u32,
                    DataSpace::Sectors => room as u32,
                });
                loc_entries.push((
                    l.platform.code(),
                    space_field,
                    l.length.unwrap_or(l.data.len() as u32),
                    l.offset.unwrap_or(next),
                ));
                layout.locators.push(next);
                loc_writes.push((next, l.data.clone()));
                next += room * SECTOR;
            }
            if let Some(align) = self.bat_after_locators {
                layout.bat_offset = next.next_multiple_of(align.max(SECTOR));
                next = layout.bat_offset + bat_bytes;
            }
            // Blocks.
            let span = layout.bitmap_size + bs;
            let mut bat = vec![u32::MAX; entries as usize];
            let mut block_writes = Vec::new();
            for (&i, block) in &self.blocks {
                if self.data_alignment > 0 {
                    next = (next + layout.bitmap_size).next_multiple_of(self.data_alignment)
                        - layout.bitmap_size;
                }
                layout.blocks.insert(i, next);
                if let Some(slot) = bat.get_mut(i as usize) {
                    *slot = (next / SECTOR) as u32;
                }
                let mut bitmap = vec![0u8; layout.bitmap_size as usize];
                match &block.bits {
                    Bits::Raw(raw) => {
                        let n = raw.len().min(bitmap.len());
                        bitmap[..n].copy_from_slice(&raw[..n]);
                    }
                    bits => {
                        for s in 0..bs / SECTOR {
                            if bits.is_set(s) {
                                bitmap[(s / 8) as usize] |= 0x80 >> (s % 8);
                            }
                        }
                    }
                }
                block_writes.push((next, bitmap));
                block_writes.push((next + layout.bitmap_size, block.data.clone()));
                next += span;
            }
            for (&i, &entry) in &self.bat_overrides {
                if let Some(slot) = bat.get_mut(i as usize) {
                    *slot = entry;
                }
            }
            layout.footer_offset = next;
            out = vec![0u8; (next + SECTOR) as usize];
            for (off, bytes) in loc_writes.into_iter().chain(block_writes) {
                put(&mut out, off, &bytes);
            }
            let mut bat_raw: Vec<u8> = bat.iter().flat_map(|e| e.to_be_bytes()).collect();
            bat_raw.resize(bat_bytes as usize, 0xFF);
            put(&mut out, layout.bat_offset, &bat_raw);
            let header = self.header_bytes(&loc_entries, entries, layout.bat_offset);
            put(&mut out, HEADER_OFFSET, &header);
        } else {
            data_offset = u64::MAX;
            let size = self.layout_size();
            layout.footer_offset = size + self.fixed_slack;
            out = vec![0u8; (layout.footer_offset + SECTOR) as usize];
            let n = self.fixed_data.len().min(size as usize);
            out[..n].copy_from_slice(&self.fixed_data[..n]);
        }
        let footer = self.footer_bytes(self.footer_data_offset.unwrap_or(data_offset));
        put(&mut out, layout.footer_offset, &footer);
        if self.sparse {
            put(&mut out, 0, &footer);
        }
        for d in &self.damage {
            d(&mut out, &layout);
        }
        (out, layout)
    }

    fn footer_bytes(&self, data_offset: u64) -> [u8; 512] {
        let mut f = [0u8; 512];
        f[0..8].copy_from_slice(b"conectix");
        f[8..12].copy_from_slice(&self.features.to_be_bytes());
        f[12..16].copy_from_slice(&self.version.to_be_bytes());
        f[16..24].copy_from_slice(&data_offset.to_be_bytes());
        f[24..28].copy_from_slice(&self.time_stamp.to_be_bytes());
        f[28..32].copy_from_slice(&self.creator);
        f[32..36].copy_from_slice(&self.creator_version.to_be_bytes());
        f[36..40].copy_from_slice(&self.host_os);
        f[40..48].copy_from_slice(&self.layout_size().to_be_bytes());
        f[48..56].copy_from_slice(&self.current_size.to_be_bytes());
        let (c, h, s) = self
            .geometry
            .unwrap_or_else(|| chs(self.current_size / SECTOR));
        f[56..58].copy_from_slice(&c.to_be_bytes());
        f[58] = h;
        f[59] = s;
        f[60..64].copy_from_slice(&self.disk_type.to_be_bytes());
        f[68..84].copy_from_slice(self.unique_id.as_bytes());
        f[84] = self.saved_state;
        set_footer_checksum(&mut f);
        f
    }

    fn header_bytes(
        &self,
        locators: &[([u8; 4], u32, u32, u64)],
        entries: u64,
        bat_offset: u64,
    ) -> [u8; 1024] {
        let mut h = [0u8; 1024];
        h[0..8].copy_from_slice(b"cxsparse");
        h[8..16].copy_from_slice(&self.header_data_offset.to_be_bytes());
        h[16..24].copy_from_slice(&self.table_offset.unwrap_or(bat_offset).to_be_bytes());
        h[24..28].copy_from_slice(&self.header_version.to_be_bytes());
        let mte = self.max_table_entries.unwrap_or(entries as u32);
        h[28..32].copy_from_slice(&mte.to_be_bytes());
        let bs = self.header_block_size.unwrap_or(self.block_size);
        h[32..36].copy_from_slice(&bs.to_be_bytes());
        h[40..56].copy_from_slice(self.parent_id.as_bytes());
        h[56..60].copy_from_slice(&self.parent_time_stamp.to_be_bytes());
        let n = self.parent_name.len().min(512);
        h[64..64 + n].copy_from_slice(&self.parent_name[..n]);
        for (i, (code, space, len, off)) in locators.iter().take(8).enumerate() {
            let e = 576 + i * 24;
            h[e..e + 4].copy_from_slice(code);
            h[e + 4..e + 8].copy_from_slice(&space.to_be_bytes());
            h[e + 8..e + 12].copy_from_slice(&len.to_be_bytes());
            h[e + 16..e + 24].copy_from_slice(&off.to_be_bytes());
        }
        set_header_checksum(&mut h);
        h
    }
}

fn put(out: &mut Vec<u8>, off: u64, bytes: &[u8]) {
    let off = off as usize;
    if out.len() < off + bytes.len() {
        out.resize(off + bytes.len(), 0);
    }
    out[off..off + bytes.len()].copy_from_slice(bytes);
}

/// Ones' complement of the byte sum, skipping the 4-byte field at `field`.
pub fn checksum(bytes: &[u8], field: usize) -> u32 {
    let mut sum = 0u32;
    for (i, b) in bytes.iter().enumerate() {
        if i < field || i >= field + 4 {
            sum = sum.wrapping_add(u32::from(*b));
        }
    }
    !sum
}

/// Recomputes the checksum of 512 footer bytes.
pub fn set_footer_checksum(footer: &mut [u8]) {
    let sum = checksum(&footer[..512], FOOTER_CHECKSUM);
    footer[FOOTER_CHECKSUM..FOOTER_CHECKSUM + 4].copy_from_slice(&sum.to_be_bytes());
}

/// Bytes of the sector bitmap of a block of `block_size` bytes (one bit a
/// sector, padded to whole sectors).
pub fn bitmap_bytes(block_size: u32) -> u64 {
    (u64::from(block_size) / SECTOR)
        .div_ceil(8)
        .div_ceil(SECTOR)
        * SECTOR
}

/// Recomputes the checksum of 1024 header bytes.
pub fn set_header_checksum(header: &mut [u8]) {
    let sum = checksum(&header[..1024], HEADER_CHECKSUM);
    header[HEADER_CHECKSUM..HEADER_CHECKSUM + 4].copy_from_slice(&sum.to_be_bytes());
}

/// The CHS geometry of the spec's algorithm for `total` sectors.
pub fn chs(total: u64) -> (u16, u8, u8) {
    let total = total.min(65535 * 16 * 255);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}

/// Where the spec's geometry algorithm changes its choice, in sectors:
/// each start of a run that gets 31 sectors per track at 4 to 16 heads
/// (`17 * 1024 * heads`), the sector count just past each such run where 17
/// sectors per track come back with one more head, the first count past
/// 16 heads (31 from then on), the switch to 63 and to 255 sectors per
/// track, and the cap at 65535 x 16 x 255.
pub fn chs_switches() -> Vec<u64> {
    let mut out = Vec::new();
    for heads in 4..=16u64 {
        out.push(17 * 1024 * heads);
        out.push(17 * (1024 * heads + 1));
    }
    out.extend([31 * 16 * 1024, 65535 * 16 * 63, 65535 * 16 * 255]);
    out
}

/// What QEMU's `create -f vpc` does to a requested size without
/// `force_size`: the algorithm for the requested sectors (rounded up), then
/// for one sector more, and so on, until the geometry covers the request;
/// the size becomes what that geometry describes. Returns the size in
/// bytes and the geometry, or `None` past 65535 x 16 x 255 sectors.
pub fn chs_round_up(request: u64) -> Option<(u64, (u16, u8, u8))> {
    let wanted = request.div_ceil(SECTOR);
    if wanted > 65535 * 16 * 255 {
        return None;
    }
    let mut extra = 0;
    loop {
        let (c, h, s) = chs(wanted + extra);
        let described = u64::from(c) * u64::from(h) * u64::from(s);
        if described >= wanted {
            return Some((described * SECTOR, (c, h, s)));
        }
        extra += 1;
    }
}

/// A deterministic, position-dependent byte pattern (never all zeros).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(u32::from(seed % 32)) as u8
                ^ seed
                | 1
        })
        .collect()
}

/// Applies `edit` to the 512-byte footer at `offset` of `bytes` and fixes
/// its checksum.
pub fn edit_footer(bytes: &mut [u8], offset: u64, edit: impl Fn(&mut [u8])) {
    let f = &mut bytes[offset as usize..offset as usize + 512];
    edit(f);
    set_footer_checksum(f);
}

/// Applies `edit` to both footers of a dynamic or differencing image (the
/// copy at 0 and the trailing one) and fixes their checksums.
pub fn edit_footers(bytes: &mut [u8], edit: impl Fn(&mut [u8])) {
    let end = bytes.len() as u64 - 512;
    edit_footer(bytes, 0, &edit);
    edit_footer(bytes, end, &edit);
}

/// Applies `edit` to the dynamic header at 512 and fixes its checksum.
pub fn edit_header(bytes: &mut [u8], edit: impl Fn(&mut [u8])) {
    let h = &mut bytes[HEADER_OFFSET as usize..HEADER_OFFSET as usize + 1024];
    edit(h);
    set_header_checksum(h);
}

/// A hexdump as `hexdump -C` prints it: offset, 16 bytes in hex, ASCII;
/// a run of lines equal to the one before becomes one `*`. Offsets start
/// at `base` (the bytes' offset in the file); the last line is the end.
pub fn hexdump(bytes: &[u8], base: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut previous: Option<&[u8]> = None;
    let mut starred = false;
    for (i, line) in bytes.chunks(16).enumerate() {
        if previous == Some(line) {
            if !starred {
                out.push_str("*\n");
                starred = true;
            }
            continue;
        }
        previous = Some(line);
        starred = false;
        let offset = base + (i * 16) as u64;
        let mut hex = String::new();
        for (j, b) in line.iter().enumerate() {
            if j == 8 {
                hex.push(' ');
            }
            let _ = write!(hex, "{b:02x} ");
        }
        let ascii: String = line
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(out, "{offset:08x}  {hex:<49} |{ascii}|");
    }
    let _ = writeln!(out, "{:08x}", base + bytes.len() as u64);
    out
}
