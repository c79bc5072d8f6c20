//! The oracles behind the fuzz targets: each target in `fuzz_targets/` is a
//! few lines that build an input and hand it to one of these.

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use vhdref::check::{CheckOptions, Report, Verdict, check_storage};
use vhdref::image::ParentResolver;
use vhdref::model::{self, Disk};
use vhdref::storage::MemStorage;
use vhdref::{
    CreateOptions, DiskType, Error, ErrorKind, Image, OpenOptions, Rule, Severity, Timestamp,
};

/// Guest bytes read per call when reading a whole disk.
pub const CHUNK: u64 = 1 << 20;
/// Of a larger disk, this much is read: the first half and the last half
/// (reading unallocated space is cheap, but not free).
pub const READ_CAP: u64 = 16 << 20;

/// Bit of the control byte of a raw-byte input: fix the trailing footer's
/// checksum (the last 512 bytes).
pub const FIX_TRAILING: u8 = 1;
/// Bit of the control byte: fix the checksum of the footer copy at offset 0.
pub const FIX_COPY: u8 = 2;
/// Bit of the control byte: fix the checksum of the dynamic header that
/// the trailing footer (or else the copy) points at.
pub const FIX_HEADER: u8 = 4;

/// The image a raw-byte input stands for: the input is one control byte
/// and the image's bytes. Random bytes almost never carry a valid
/// checksum, so the checksums the control byte names ([`FIX_TRAILING`],
/// [`FIX_COPY`], [`FIX_HEADER`]) are computed and written before the image
/// is opened; the fuzzer still reaches the checksum rules by clearing a bit.
pub fn image_from_input(data: &[u8]) -> Vec<u8> {
    let Some((&control, image)) = data.split_first() else {
        return Vec::new();
    };
    let mut bytes = image.to_vec();
    fix_checksums(&mut bytes, control);
    bytes
}

/// The control byte under which [`image_from_input`] gives back `image`
/// unchanged: a bit for each checksum that is already right.
pub fn control_for(image: &[u8]) -> u8 {
    let mut fixed = image.to_vec();
    [FIX_TRAILING, FIX_COPY, FIX_HEADER]
        .into_iter()
        .filter(|&bit| {
            fix_checksums(&mut fixed, bit);
            let same = fixed == image;
            fixed.copy_from_slice(image);
            same
        })
        .fold(0, |a, b| a | b)
}

const FOOTER: usize = 512;
const HEADER: usize = 1024;

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// Writes the checksum of the `len` bytes at `at` (field at `field`),
/// computed by the pure model, if they lie in `bytes`.
fn set_checksum(bytes: &mut [u8], at: usize, len: usize, field: usize) {
    if let Some(region) = at
        .checked_add(len)
        .and_then(|end| bytes.get_mut(at..end))
    {
        let sum = model::checksum(region, field);
        region[field..field + 4].copy_from_slice(&sum.to_be_bytes());
    }
}

/// Fixes the checksums `control` names: the header first (where the
/// trailing footer points, or the copy when the trailing one has no
/// cookie), then the copy, then the trailing footer.
pub fn fix_checksums(bytes: &mut [u8], control: u8) {
    let len = bytes.len();
    let trailing = len.checked_sub(FOOTER);
    if control & FIX_HEADER != 0 {
        let footer = trailing
            .filter(|&t| bytes[t..].starts_with(b"conectix"))
            .unwrap_or(0);
        if let Some(at) = be64(bytes, footer + 16).and_then(|o| usize::try_from(o).ok()) {
            set_checksum(bytes, at, HEADER, 36);
        }
    }
    if control & FIX_COPY != 0 && len >= 2 * FOOTER {
        set_checksum(bytes, 0, FOOTER, 64);
    }
    if control & FIX_TRAILING != 0
        && let Some(t) = trailing
    {
        set_checksum(bytes, t, FOOTER, 64);
    }
}

/// Opens `bytes` as an image in memory, read-only, on its own: the parent
/// of a differencing image is not looked for (and locators never reach
/// the file system).
pub fn open_bytes(bytes: &[u8]) -> Result<Image, Error> {
    OpenOptions::new()
        .resolver(ParentResolver::deny_all())
        .skip_parent(true)
        .open_storage(Box::new(MemStorage::from_bytes(bytes.to_vec())), "fuzz.vhd")
}

/// Opens `bytes` read-only with what it needs to be read: a differencing
/// image gets an empty dynamic parent of its size with the unique ID and
/// time stamp it records (so its clear sectors read as zeros). `None` when
/// no such parent can be made (a size `create` refuses).
pub fn open_readable(bytes: &[u8]) -> Option<Result<Image, Error>> {
    let img = match open_bytes(bytes) {
        Ok(img) if img.disk_type() == DiskType::Differencing => img,
        other => return Some(other),
    };
    let header = img.dyn_header()?;
    let parent = CreateOptions::new(DiskType::Dynamic, img.size())
        .unique_id(header.parent_unique_id)
        .time_stamp(header.parent_time_stamp)
        .create_in(Box::new(MemStorage::new()), "parent.vhd", None)
        .ok()?;
    Some(
        OpenOptions::new()
            .resolver(ParentResolver::deny_all())
            .parent_image(parent)
            .open_storage(Box::new(MemStorage::from_bytes(bytes.to_vec())), "fuzz.vhd"),
    )
}

/// What the disk of an opened image reads as by the pure model, straight
/// from the image's bytes: the data area of a fixed image; for a dynamic
/// or differencing image the BAT entry, bitmap bit and data sector of
/// each sector read from the bytes (`vhdref::model`), zeros where the
/// block is unallocated or the bit clear (a differencing image's parent
/// here is empty). Only the footer's fields come from the driver.
pub struct RawModel<'a> {
    bytes: &'a [u8],
    size: u64,
    sparse: Option<(usize, u64)>,
}

impl<'a> RawModel<'a> {
    /// The model of `bytes`, which `img` was opened from.
    pub fn new(bytes: &'a [u8], img: &Image) -> Self {
        let footer = img.footer();
        let sparse = (footer.disk_type != DiskType::Fixed).then(|| {
            let header = usize::try_from(footer.data_offset).expect("header inside the file");
            let table = be64(bytes, header + 16).expect("the header lies in the file");
            let block_size = be32(bytes, header + 32).expect("the header lies in the file");
            (
                usize::try_from(table).expect("table inside the file"),
                u64::from(block_size),
            )
        });
        RawModel {
            bytes,
            size: footer.current_size,
            sparse,
        }
    }

    /// Fills `buf` with the guest bytes at `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) {
        let Some((table, block_size)) = self.sparse else {
            let at = usize::try_from(offset).expect("small");
            buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
            return;
        };
        let mut pos = offset;
        for piece in buf.chunks_mut(512) {
            // Pieces follow sector boundaries when `offset` is aligned.
            let loc = model::locate(pos, block_size);
            let entry = be32(self.bytes, table + 4 * loc.block as usize)
                .expect("an image that opened has its BAT in the file");
            piece.fill(0);
            if entry != u32::MAX {
                let bitmap = &self.bytes[entry as usize * 512..];
                if model::bitmap_bit(bitmap, loc.sector_in_block) {
                    let at = model::file_offset(entry, block_size, loc) as usize;
                    let data = self
                        .bytes
                        .get(at..at + piece.len())
                        .expect("an image that opened has its blocks in the file");
                    piece.copy_from_slice(data);
                }
            }
            pos += piece.len() as u64;
        }
    }

    /// The guest size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// An error that an image, however broken, may produce: one naming a rule,
/// or an I/O, range or parent error.
pub fn assert_acceptable(e: &Error) {
    assert!(
        e.rule().is_some()
            || matches!(
                e.kind(),
                ErrorKind::Io | ErrorKind::OutOfRange | ErrorKind::Parent
            ),
        "error without a rule: {e} ({:?})",
        e.kind()
    );
    assert!(!e.to_string().is_empty());
}

/// The chunks of a disk of `size` bytes that are read: all of it up to
/// [`READ_CAP`], else the first and the last half of that.
fn chunks_to_read(size: u64) -> Vec<(u64, u64)> {
    let mut ranges = vec![(0, size.min(READ_CAP / 2))];
    if size > READ_CAP / 2 {
        let tail = size.saturating_sub(READ_CAP / 2).max(READ_CAP / 2) / 512 * 512;
        ranges.push((tail.max(READ_CAP / 2), size));
    }
    let mut out = Vec::new();
    for (start, end) in ranges {
        let mut offset = start;
        while offset < end {
            let n = CHUNK.min(end - offset);
            out.push((offset, n));
            offset += n;
        }
    }
    out
}

/// Reads the map and then the disk (all of it, or the first and last
/// halves of [`READ_CAP`]) in chunks; checks that the map tiles the disk,
/// that what it calls unallocated reads as zeros, and, given a model, that
/// every byte read is what the model says. Errors are returned for the
/// caller to judge.
pub fn read_everything(img: &mut Image, model: Option<&RawModel>) -> Result<(), Error> {
    let size = img.size();
    let map = img.map()?;
    let mut pos = 0;
    for e in &map {
        assert_eq!(e.offset, pos, "map leaves a gap or overlaps: {map:?}");
        assert!(e.length > 0, "empty extent in {map:?}");
        assert_eq!(e.data, e.depth.is_some(), "extent {e:?}");
        pos += e.length;
    }
    assert_eq!(pos, size, "map does not cover the disk");
    let mut buf = vec![0u8; CHUNK as usize];
    let mut want = vec![0u8; if model.is_some() { CHUNK as usize } else { 0 }];
    for (offset, n) in chunks_to_read(size) {
        let n = n as usize;
        img.read_at(offset, &mut buf[..n])?;
        if let Some(model) = model {
            model.read(offset, &mut want[..n]);
            if buf[..n] != want[..n] {
                let at = buf.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
                panic!(
                    "byte {} reads {:#04x}, the model says {:#04x}",
                    offset + at as u64,
                    buf[at],
                    want[at]
                );
            }
        }
        for e in map.iter().filter(|e| !e.data) {
            let start = e.offset.max(offset);
            let end = (e.offset + e.length).min(offset + n as u64);
            if start < end {
                let slice = &buf[(start - offset) as usize..(end - offset) as usize];
                assert!(
                    slice.iter().all(|&b| b == 0),
                    "unallocated bytes at {start} are not zero"
                );
            }
        }
    }
    // Reading past the end is refused, never a panic.
    let mut one = [0u8; 1];
    assert!(matches!(
        img.read_at(size, &mut one).map_err(|e| e.kind()),
        Err(ErrorKind::OutOfRange)
    ));
    Ok(())
}

/// The `open_read` oracle: whatever the bytes, opening either fails with
/// an acceptable error or gives an image that reads, all of it, exactly
/// as the pure model reads the bytes.
pub fn open_and_read(bytes: &[u8]) {
    match open_readable(bytes) {
        None => {}
        Some(Ok(mut img)) => read_as_the_model_says(bytes, &mut img),
        Some(Err(e)) => assert_acceptable(&e),
    }
}

/// Reads all of `img` (opened from `bytes`) and compares it with the model.
pub fn read_as_the_model_says(bytes: &[u8], img: &mut Image) {
    let model = RawModel::new(bytes, img);
    assert_eq!(model.size(), img.size());
    if let Err(e) = read_everything(img, Some(&model)) {
        panic!("an image that opened does not read: {e}");
    }
}

/// Every finding names a known rule, with that rule's severity, and says
/// what is wrong without repeating the rule ID.
fn assert_sound(report: &Report) {
    for located in &report.findings {
        let f = &located.finding;
        assert!(Rule::ALL.contains(&f.rule), "unknown rule {:?}", f.rule);
        assert_eq!(f.severity, f.rule.severity(), "severity of {f}");
        assert!(!f.message.trim().is_empty(), "empty message for {}", f.rule);
        assert!(
            !f.message.ends_with(&format!("({})", f.rule.id())),
            "rule ID twice: {f}"
        );
        assert_eq!(located.depth, 0, "a finding about another image: {f}");
    }
}

/// The `check` oracle: the checker (`vhdref::check::check_storage`) judges
/// the bytes; every finding is sound; it reports an error exactly when
/// `open` refuses the image, and `open`'s rule is among its errors; a file
/// it could not judge is one `open` calls no VHD, for the same rule;
/// every warning of `open` is among its findings, with the same severity;
/// an image it calls clean or only warns about opens and reads as the
/// pure model says.
pub fn check_agrees_with_open(bytes: &[u8]) {
    let report = check_storage(
        &MemStorage::from_bytes(bytes.to_vec()),
        "fuzz.vhd",
        &CheckOptions::new(),
    );
    assert_sound(&report);
    let of = |severity: Severity| -> BTreeSet<Rule> {
        report
            .findings
            .iter()
            .filter(|f| f.finding.severity == severity)
            .map(|f| f.finding.rule)
            .collect()
    };
    let (errors, warnings) = (of(Severity::Error), of(Severity::Warning));
    let opened = open_bytes(bytes);
    match (report.verdict(), opened) {
        (Verdict::NotChecked, Ok(_)) => {
            panic!("the checker could not judge it ({:?}) but open accepts it", report.not_checked)
        }
        (Verdict::NotChecked, Err(e)) => {
            let not_checked = report.not_checked.as_ref().expect("a reason");
            assert_eq!(
                e.rule(),
                not_checked.rule,
                "open says {e}, the checker {not_checked:?}"
            );
        }
        (Verdict::Errors, Ok(_)) => {
            panic!("the checker found errors {errors:?} but open accepts it")
        }
        (Verdict::Errors, Err(e)) => {
            let rule = e.rule();
            assert!(
                rule.is_some_and(|r| errors.contains(&r)),
                "open refuses it with {e}, the checker found the errors {errors:?}"
            );
        }
        (Verdict::Clean | Verdict::Warnings, Err(e)) => {
            panic!("open refuses it ({e}) but the checker found only {warnings:?}")
        }
        (Verdict::Clean | Verdict::Warnings, Ok(img)) => {
            for f in img.findings() {
                assert!(
                    warnings.contains(&f.rule) && f.severity == Severity::Warning,
                    "open warns {f} ({:?}), the checker found {warnings:?}",
                    f.severity
                );
            }
            drop(img);
            match open_readable(bytes) {
                None => {}
                Some(Ok(mut img)) => read_as_the_model_says(bytes, &mut img),
                Some(Err(e)) => panic!("it opens on its own but not on its parent: {e}"),
            }
        }
    }
}

/// A guest size of 1 sector to `max` bytes (a multiple of 512). Small:
/// every exec creates, compares and copies whole disks.
pub fn small_size(sectors: u16, max: u64) -> u64 {
    (u64::from(sectors) % (max / 512) + 1) * 512
}

/// Block sizes `create` accepts, small ones first.
pub fn block_size(pick: u8) -> u32 {
    [512 << 10, 1 << 20, 2 << 20][usize::from(pick % 3)]
}

/// Creates an image in memory with a fixed ID and clock.
pub fn create_mem(disk_type: DiskType, size: u64, block_size: u32, id: u128) -> Image {
    CreateOptions::new(disk_type, size)
        .block_size(block_size)
        .unique_id(uuid::Uuid::from_u128(id))
        .time_stamp(Timestamp(0x2000_0000))
        .create_in(Box::new(MemStorage::new()), format!("img{id}.vhd"), None)
        .expect("creating a small image in memory works")
}

/// Bytes of a write: position dependent, so misplaced data shows.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i / 7) as u8).wrapping_mul(31) ^ (i as u8))
        .collect()
}

/// One step of a driver-vs-model run.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// Write `len` pattern bytes at `offset` (both taken modulo the disk).
    Write {
        /// Guest offset (mod size).
        offset: u32,
        /// Length (mod [`MAX_OP_LEN`] + 1, clipped at the end).
        len: u32,
        /// Pattern seed.
        seed: u8,
    },
    /// Read and compare.
    Read {
        /// Guest offset (mod size).
        offset: u32,
        /// Length (mod [`MAX_OP_LEN`] + 1, clipped at the end).
        len: u32,
    },
    /// Flush metadata.
    Flush,
    /// Close and open again from the same bytes.
    Reopen,
    /// Put a differencing child on top (at most three layers).
    Child,
    /// Commit the top child into its parent.
    Commit,
    /// Drop the top child; the parent becomes the disk.
    DropChild,
}

/// What the model reads at `offset`, a sector at a time (the model's own
/// `read` goes byte by byte, too slow for a fuzzer on megabytes).
pub fn model_read(model: &Disk, offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let end = offset + len as u64;
    let mut pos = offset;
    while pos < end {
        let sector = model.sector(pos / 512);
        let from = (pos % 512) as usize;
        let n = (512 - from).min((end - pos) as usize);
        out.extend_from_slice(&sector[from..from + n]);
        pos += n as u64;
    }
    out
}

/// Longest write or read of one op: the model writes byte by byte, so
/// longer writes would slow the fuzzer more than they find.
pub const MAX_OP_LEN: u64 = 16 << 10;

/// Clamps an op's offset and length into a disk of `size` bytes.
pub fn clamp(offset: u32, len: u32, size: u64) -> (u64, usize) {
    let offset = u64::from(offset) % size;
    let len = (u64::from(len) % (MAX_OP_LEN + 1)).min(size - offset);
    (offset, len as usize)
}

/// An image under test together with the model it must equal.
pub struct Pair {
    /// The driver's image (the top of the chain).
    pub img: Image,
    /// The model.
    pub model: Disk,
    next_id: u128,
}

impl Pair {
    /// A fresh image and an empty model of the same size.
    pub fn new(disk_type: DiskType, size: u64, block_size: u32) -> Pair {
        Pair {
            img: create_mem(disk_type, size, block_size, 1),
            model: Disk::new(size),
            next_id: 2,
        }
    }

    /// Applies one op to both; panics where they disagree.
    pub fn apply(&mut self, op: &Op) {
        let size = self.model.size();
        match *op {
            Op::Write { offset, len, seed } => {
                let (offset, len) = clamp(offset, len, size);
                let data = pattern(seed, len);
                self.img
                    .write_at(offset, &data)
                    .expect("write in range works");
                self.model.write(offset, &data);
            }
            Op::Read { offset, len } => {
                let (offset, len) = clamp(offset, len, size);
                self.assert_range(offset, len);
            }
            Op::Flush => self.img.flush().expect("flush works"),
            Op::Reopen => self.reopen(),
            Op::Child if self.model.depth() < 3 => self.push_child(),
            Op::Commit if self.model.depth() > 1 => {
                self.img.commit_into_parent().expect("commit works");
                self.model.commit_top();
            }
            Op::DropChild if self.model.depth() > 1 => {
                let parent = self.img.take_parent().expect("a child has a parent");
                self.img = parent;
                self.model.pop_child();
            }
            Op::Child | Op::Commit | Op::DropChild => {}
        }
    }

    /// Compares `len` bytes at `offset`.
    pub fn assert_range(&mut self, offset: u64, len: usize) {
        let mut got = vec![0u8; len];
        self.img
            .read_at(offset, &mut got)
            .expect("read in range works");
        let want = model_read(&self.model, offset, len);
        if got != want {
            let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
            panic!(
                "driver and model differ at {}: driver {:#04x}, model {:#04x}",
                offset + at as u64,
                got[at],
                want[at]
            );
        }
    }

    /// Compares the whole disk.
    pub fn assert_all(&mut self) {
        let size = self.model.size();
        let mut offset = 0;
        while offset < size {
            let n = (size - offset).min(256 << 10);
            self.assert_range(offset, n as usize);
            offset += n;
        }
    }

    /// Closes the top image and opens it again from its bytes, with the
    /// same parent.
    fn reopen(&mut self) {
        let placeholder = create_mem(DiskType::Fixed, 512, 0, 0);
        let mut img = std::mem::replace(&mut self.img, placeholder);
        let parent = img.take_parent();
        let name = img.name().to_string();
        let storage = img.into_storage().expect("flush on close works");
        let mut options = OpenOptions::new().write(true);
        if let Some(p) = parent {
            options = options.parent_image(p);
        }
        self.img = options
            .open_storage(storage, name)
            .expect("an image we wrote opens again");
    }

    /// Closes the top image, opens it again as a (writable) parent and
    /// puts a new differencing child on it.
    fn push_child(&mut self) {
        self.reopen();
        let placeholder = create_mem(DiskType::Fixed, 512, 0, 0);
        let parent = std::mem::replace(&mut self.img, placeholder);
        let id = self.next_id;
        self.next_id += 1;
        let parent_name = parent.name().to_string();
        self.img = CreateOptions::new(DiskType::Differencing, 0)
            .unique_id(uuid::Uuid::from_u128(id))
            .time_stamp(Timestamp(0x2000_0000))
            .create_in(
                Box::new(MemStorage::new()),
                format!("img{id}.vhd"),
                Some((parent, &parent_name)),
            )
            .expect("creating a child in memory works");
        self.model.push_child();
    }
}

/// Copies the guest contents of `src` into `dst` (same size) through the
/// library API, skipping what `src`'s map calls unallocated.
pub fn copy_allocated(src: &mut Image, dst: &mut Image) -> Result<(), Error> {
    let mut buf = Vec::new();
    for e in src.map()?.into_iter().filter(|e| e.data) {
        let mut pos = e.offset;
        while pos < e.offset + e.length {
            let n = CHUNK.min(e.offset + e.length - pos);
            buf.resize(n as usize, 0);
            src.read_at(pos, &mut buf)?;
            dst.write_at(pos, &buf)?;
            pos += n;
        }
    }
    dst.flush()
}

/// Asserts two images read the same, chunk by chunk.
pub fn assert_same_contents(a: &mut Image, b: &mut Image) {
    assert_eq!(a.size(), b.size());
    let mut x = vec![0u8; CHUNK as usize];
    let mut y = vec![0u8; CHUNK as usize];
    let mut offset = 0;
    while offset < a.size() {
        let n = CHUNK.min(a.size() - offset) as usize;
        a.read_at(offset, &mut x[..n]).expect("read works");
        b.read_at(offset, &mut y[..n]).expect("read works");
        if x[..n] != y[..n] {
            let at = x.iter().zip(&y).position(|(p, q)| p != q).unwrap_or(0);
            panic!(
                "{} and {} differ at {}",
                a.name(),
                b.name(),
                offset + at as u64
            );
        }
        offset += n as u64;
    }
}

/// What the `chain` target fuzzes: a parent built from writes, and a
/// child that is either raw bytes or a valid child with patched bytes.
#[derive(Arbitrary, Debug)]
pub struct ChainInput {
    /// Parent is fixed (else dynamic).
    pub fixed_parent: bool,
    /// Parent size, see [`small_size`] (at most 2 MiB).
    pub sectors: u16,
    /// Parent block size, see [`block_size`].
    pub block: u8,
    /// Writes into the parent (offset, length, seed).
    pub parent_writes: Vec<(u32, u32, u8)>,
    /// Writes into the valid child before it is patched.
    pub child_writes: Vec<(u32, u32, u8)>,
    /// Use `raw` as the child's bytes instead of a patched valid child.
    pub use_raw: bool,
    /// The raw child.
    pub raw: Vec<u8>,
    /// Byte patches (offset modulo the length, value) of the valid child.
    pub patches: Vec<(u32, u8)>,
    /// Open with `ignore_parent_id`.
    pub ignore_id: bool,
}

/// All the bytes of a storage.
pub fn bytes_of(storage: &dyn vhdref::storage::Storage) -> Vec<u8> {
    let len = storage.len().expect("memory has a length");
    let mut out = vec![0u8; usize::try_from(len).expect("small")];
    storage.read_exact_at(&mut out, 0).expect("memory reads");
    out
}

/// The `chain` oracle: the child opens on the parent or fails acceptably;
/// if it opens, it reads; an unpatched valid child opens and reads what
/// the model says.
pub fn open_child_on_parent(input: &ChainInput) {
    let disk_type = if input.fixed_parent {
        DiskType::Fixed
    } else {
        DiskType::Dynamic
    };
    let mut pair = Pair::new(
        disk_type,
        small_size(input.sectors, 2 << 20),
        block_size(input.block),
    );
    for &(offset, len, seed) in input.parent_writes.iter().take(4) {
        pair.apply(&Op::Write { offset, len, seed });
    }
    pair.apply(&Op::Child);
    for &(offset, len, seed) in input.child_writes.iter().take(4) {
        pair.apply(&Op::Write { offset, len, seed });
    }
    let Pair {
        mut img, mut model, ..
    } = pair;
    let parent = img.take_parent().expect("a child has a parent");
    let mut child = if input.use_raw {
        input.raw.clone()
    } else {
        bytes_of(&*img.into_storage().expect("flush works"))
    };
    let len = child.len();
    for &(offset, value) in input.patches.iter().take(16) {
        if len > 0 && !input.use_raw {
            child[offset as usize % len] = value;
        }
    }
    let pristine = !input.use_raw && input.patches.is_empty();
    let opened = OpenOptions::new()
        .parent_image(parent)
        .ignore_parent_id(input.ignore_id)
        .allow_parent_dirs(Vec::new())
        .open_storage(Box::new(MemStorage::from_bytes(child)), "child.vhd");
    match opened {
        Ok(mut img) => {
            if let Err(e) = read_everything(&mut img, None) {
                assert!(!pristine, "a valid child fails to read: {e}");
                assert_acceptable(&e);
            } else if pristine {
                let mut pair = Pair {
                    img,
                    model: std::mem::replace(&mut model, Disk::new(512)),
                    next_id: 0,
                };
                pair.assert_all();
            }
        }
        Err(e) => {
            assert!(!pristine, "a valid child fails to open: {e}");
            assert_acceptable(&e);
        }
    }
}

/// Disks up to this size are written by the `open_write` target.
pub const WRITE_CAP: u64 = 8 << 20;

/// The `open_write` oracle: an image that opens for writing (however odd
/// its layout) takes writes at its start, middle and end, and after a
/// flush and a reopen reads exactly what it read before plus the writes:
/// allocating blocks never clobbers other data or metadata.
pub fn write_then_reopen(bytes: &[u8]) {
    let mem = MemStorage::from_bytes(bytes.to_vec());
    let opened = OpenOptions::new()
        .write(true)
        .allow_parent_dirs(Vec::new())
        .open_storage(Box::new(mem.clone()), "fuzz.vhd");
    let mut img = match opened {
        Ok(img) => img,
        // Only the footer copy is valid: such an image opens read-only only.
        Err(e) if e.kind() == ErrorKind::ReadOnly => return,
        Err(e) => return assert_acceptable(&e),
    };
    let size = img.size();
    if !(1024..=WRITE_CAP).contains(&size) {
        return;
    }
    let mut expected = vec![0u8; size as usize];
    if let Err(e) = img.read_at(0, &mut expected) {
        return assert_acceptable(&e);
    }
    let half = size / 2 / 512 * 512;
    let writes = [
        (0, 512),
        (half - 100, 700.min(size - half + 100)),
        (size - 512, 512),
    ];
    for (i, &(offset, len)) in writes.iter().enumerate() {
        let data = pattern(i as u8 + 1, len as usize);
        if let Err(e) = img.write_at(offset, &data) {
            return assert_acceptable(&e);
        }
        expected[offset as usize..(offset + len) as usize].copy_from_slice(&data);
    }
    if let Err(e) = img.close() {
        return assert_acceptable(&e);
    }
    let mut again = OpenOptions::new()
        .open_storage(Box::new(mem), "fuzz.vhd")
        .unwrap_or_else(|e| panic!("an image we wrote does not open again: {e}"));
    let mut got = vec![0u8; size as usize];
    again
        .read_at(0, &mut got)
        .expect("the image we wrote reads");
    if got != expected {
        let at = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "after writing and reopening, byte {at} reads {:#04x}, expected {:#04x}",
            got[at], expected[at]
        );
    }
}
