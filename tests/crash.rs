//! Crash consistency of the write order documented in
//! `src/image/sparse.rs`: a storage records every mutating operation of a
//! sequence of writes and flushes; the sequence is then cut at every point
//! (whole operations, torn writes, and power loss that keeps any subset of
//! the writes since the last sync). After each cut the image must open
//! read-only, and every guest sector must read a value it held during the
//! sequence: its old contents, its new contents, or (for a sector written
//! twice) a value in between. A cut after the last sync reads exactly the
//! new contents.
//!
//! Old contents are never what the file holds under a sector by chance:
//! file space that the driver never wrote holds stale bytes (not zeros),
//! and the old state has sectors whose bits are clear over data that a
//! killed session wrote and never recorded. So a bitmap or BAT entry that
//! reaches the file before what it describes shows in a dynamic image too,
//! not only in a differencing one (where the parent's data differs).
//!
//! One recorded run gives every cut: the image after a crash after
//! operation k is the bytes before the sequence with the first k logged
//! operations applied, because what the driver does up to operation k does
//! not depend on anything after it.

use std::collections::HashMap;

use proptest::prelude::*;
use vhdref::model::Disk;
use vhdref::storage::{FaultStorage, MemStorage, Mutation, power_loss_subsets};
use vhdref::{CreateOptions, DiskType, Image, OpenOptions, Rule};

const SECTOR: u64 = 512;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
const BLOCK: u32 = 512 * 1024;

// ------------------------------------------------------- recording storage

// The shared recording storage (`FaultStorage`): every change logged; a
// write past the end leaves stale, non-zero bytes in the gap
// (`vhdref::storage::stale`), so only what the driver wrote may ever read
// as guest data.

// -------------------------------------------------------------- a run

/// A step of the sequence under test.
#[derive(Debug, Clone)]
enum Step {
    Write(u64, Vec<u8>),
    Flush,
    /// A write by a session that is then killed before it flushes (only at
    /// the end of a `prepare`, into sectors of allocated blocks whose bits
    /// are clear): its data reaches the file, nothing records it, and the
    /// guest still reads the old contents there. The file then holds bytes
    /// that are neither those old contents nor zeros.
    Lost(u64, Vec<u8>),
}

fn write(offset: u64, len: u64, byte: u8) -> Step {
    Step::Write(offset, bytes(len, byte))
}

fn lost(offset: u64, len: u64, byte: u8) -> Step {
    Step::Lost(offset, bytes(len, byte))
}

/// `len` bytes from `byte`, varied per sector so a sector read from the
/// wrong place shows.
fn bytes(len: u64, byte: u8) -> Vec<u8> {
    (0..len).map(|i| byte ^ (i / SECTOR) as u8).collect()
}

/// What a guest sector may read after a cut: every value it held during
/// the sequence (old first).
struct Allowed {
    old: Disk,
    seen: HashMap<u64, Vec<Vec<u8>>>,
}

impl Allowed {
    fn new(old: &Disk) -> Allowed {
        Allowed {
            old: old.clone(),
            seen: HashMap::new(),
        }
    }

    /// Notes the values of the sectors `offset..offset+len` now hold in `disk`.
    fn note(&mut self, disk: &Disk, offset: u64, len: u64) {
        for sector in offset / SECTOR..(offset + len).div_ceil(SECTOR) {
            let values = self
                .seen
                .entry(sector)
                .or_insert_with(|| vec![self.old.sector(sector)]);
            let now = disk.sector(sector);
            if !values.contains(&now) {
                values.push(now);
            }
        }
    }

    fn permits(&self, sector: u64, value: &[u8]) -> bool {
        match self.seen.get(&sector) {
            Some(values) => values.iter().any(|v| v == value),
            None => self.old.sector(sector) == value,
        }
    }
}

/// What a judged crash state read.
struct Judged {
    disk: Vec<u8>,
    /// The trailing footer was not valid; the image opened from its copy.
    from_copy: bool,
}

/// How many crash states a run judged.
#[derive(Debug, Default)]
struct Cuts {
    states: usize,
    /// States whose trailing footer was lost (power loss only).
    from_copy: usize,
}

/// A recorded sequence and everything needed to judge its cuts.
struct Recorded {
    /// The image's bytes before the sequence.
    before: Vec<u8>,
    /// What the sequence did to them.
    log: Vec<Mutation>,
    allowed: Allowed,
    /// The disk after the sequence.
    after: Disk,
    /// The parent of a differencing image, with its bytes (never written).
    parent: Option<MemStorage>,
}

/// How the image under test is made.
#[derive(Debug, Clone)]
enum Setup {
    /// A dynamic image of `size` bytes.
    Dynamic { size: u64, block_size: u32 },
    /// A differencing child (blocks of `block_size`) over a dynamic parent
    /// of `size` bytes holding `parent_writes`.
    Child {
        size: u64,
        block_size: u32,
        parent_writes: Vec<Step>,
    },
}

fn apply(img: &mut Image, disk: &mut Disk, step: &Step) {
    match step {
        Step::Write(offset, data) => {
            img.write_at(*offset, data).expect("write");
            disk.write(*offset, data);
        }
        Step::Flush => img.flush().expect("flush"),
        Step::Lost(offset, data) => {
            img.write_at(*offset, data).expect("write");
        }
    }
}

/// Makes the image of `setup` on `storage`: the image, the model of its
/// disk, and the parent's storage for a differencing image.
fn make(setup: &Setup, storage: &FaultStorage) -> (Image, Disk, Option<MemStorage>) {
    match setup {
        Setup::Dynamic { size, block_size } => {
            let img = CreateOptions::new(DiskType::Dynamic, *size)
                .block_size(*block_size)
                .create_in(Box::new(storage.clone()), "crash.vhd", None)
                .expect("create");
            (img, Disk::new(*size), None)
        }
        Setup::Child {
            size,
            block_size,
            parent_writes,
        } => {
            let parent_mem = MemStorage::new();
            let mut parent = CreateOptions::new(DiskType::Dynamic, *size)
                .block_size(BLOCK)
                .create_in(Box::new(parent_mem.clone()), "parent.vhd", None)
                .expect("create parent");
            let mut disk = Disk::new(*size);
            for step in parent_writes {
                apply(&mut parent, &mut disk, step);
            }
            parent.close().expect("close parent");
            let parent = open_parent(&parent_mem);
            let img = CreateOptions::new(DiskType::Differencing, 0)
                .block_size(*block_size)
                .create_in(
                    Box::new(storage.clone()),
                    "crash.vhd",
                    Some((parent, "parent.vhd")),
                )
                .expect("create child");
            disk.push_child();
            (img, disk, Some(parent_mem))
        }
    }
}

/// Makes the image, writes `prepare` and flushes (the old state; if
/// `prepare` ends with lost writes, the session is killed after them
/// instead and the image reopened), then records `sequence` (which is
/// made to end with a flush).
fn record(setup: &Setup, prepare: &[Step], sequence: &[Step]) -> Recorded {
    record_with_cache(setup, prepare, sequence, None)
}

/// [`record`], with the image reopened before `sequence` with a bitmap
/// cache of `cache` bytes (so the sequence evicts, writing metadata in the
/// middle of it).
fn record_with_cache(
    setup: &Setup,
    prepare: &[Step],
    sequence: &[Step],
    cache: Option<u64>,
) -> Recorded {
    let storage = FaultStorage::new();
    let (mut img, mut disk, parent) = make(setup, &storage);
    let first_lost = prepare
        .iter()
        .position(|s| matches!(s, Step::Lost(..)))
        .unwrap_or(prepare.len());
    assert!(
        prepare[first_lost..]
            .iter()
            .all(|s| matches!(s, Step::Lost(..))),
        "lost writes end a prepare"
    );
    for step in prepare {
        apply(&mut img, &mut disk, step);
    }
    let reopen = || {
        let mut options = OpenOptions::new().write(true);
        if let Some(bytes) = cache {
            options = options.bitmap_cache_bytes(bytes);
        }
        if let Some(p) = &parent {
            options = options.parent_image(open_parent(p));
        }
        options
            .open_storage(Box::new(storage.clone()), "crash.vhd")
            .expect("reopen")
    };
    let mut img = if first_lost < prepare.len() {
        // Killed: no flush, no drop (which would flush).
        std::mem::forget(img);
        let log = storage.log();
        for step in &prepare[first_lost..] {
            assert!(
                log.iter().any(
                    |m| matches!((m, step), (Mutation::Write { data, .. }, Step::Lost(_, lost)) if data == lost)
                ),
                "a lost write did not reach the file"
            );
        }
        reopen()
    } else {
        img.flush().expect("flush");
        if cache.is_some() {
            drop(img);
            reopen()
        } else {
            img
        }
    };
    // What the lost writes left in the file is not part of the disk.
    let mut old = vec![0u8; disk.size() as usize];
    img.read_at(0, &mut old).expect("read the old state");
    let want: Vec<u8> = (0..disk.size() / SECTOR)
        .flat_map(|n| disk.sector(n))
        .collect();
    assert!(old == want, "the old state does not read as the model");
    let parent_before = parent.as_ref().map(MemStorage::to_vec);
    let start = storage.log().len();
    let before = storage.bytes();
    let mut allowed = Allowed::new(&disk);
    for step in sequence.iter().chain(std::iter::once(&Step::Flush)) {
        apply(&mut img, &mut disk, step);
        if let Step::Write(offset, data) = step {
            allowed.note(&disk, *offset, data.len() as u64);
        }
    }
    let log = storage.log()[start..].to_vec();
    drop(img);
    if let (Some(p), Some(bytes)) = (&parent, parent_before) {
        assert!(p.to_vec() == bytes, "the sequence wrote to the parent");
    }
    Recorded {
        before,
        log,
        allowed,
        after: disk,
        parent,
    }
}

fn open_parent(mem: &MemStorage) -> Image {
    OpenOptions::new()
        .open_storage(Box::new(mem.clone()), "parent.vhd")
        .expect("open the parent")
}

// ------------------------------------------------------------- judging

impl Recorded {
    fn replay(&self, ops: impl IntoIterator<Item = usize>) -> Vec<u8> {
        let mut bytes = self.before.clone();
        for i in ops {
            self.log[i].apply(&mut bytes);
        }
        bytes
    }

    fn open(&self, bytes: Vec<u8>, write: bool) -> vhdref::Result<Image> {
        let mut options = OpenOptions::new().write(write);
        if let Some(parent) = &self.parent {
            options = options.parent_image(open_parent(parent));
        }
        options.open_storage(Box::new(MemStorage::from_bytes(bytes)), "crash.vhd")
    }

    /// Opens the image read-only, reads the whole disk and checks every
    /// sector; returns what it read and whether only the footer copy at
    /// offset 0 was valid.
    fn judge(&self, bytes: Vec<u8>, what: &str) -> Judged {
        let mut img = self
            .open(bytes, false)
            .unwrap_or_else(|e| panic!("{what}: a read-only open failed: {e}"));
        let from_copy = img.findings().iter().any(|f| f.rule == Rule::FtrTrailing);
        let mut disk = vec![0u8; img.size() as usize];
        img.read_at(0, &mut disk)
            .unwrap_or_else(|e| panic!("{what}: reading the disk failed: {e}"));
        for (n, sector) in disk.chunks(SECTOR as usize).enumerate() {
            assert!(
                self.allowed.permits(n as u64, sector),
                "{what}: sector {n} holds neither its old nor its new contents"
            );
        }
        Judged { disk, from_copy }
    }

    /// The image after a cut after the whole sequence reads exactly the
    /// new contents.
    fn judge_complete(&self, bytes: Vec<u8>, what: &str) {
        let got = self.judge(bytes, what).disk;
        let size = self.after.size();
        let want: Vec<u8> = (0..size / SECTOR)
            .flat_map(|n| self.after.sector(n))
            .collect();
        assert!(
            got == want,
            "{what}: the complete sequence does not read its new contents"
        );
    }

    /// The image can also be opened for writing, written and read back,
    /// and the write changes nothing else (leaked blocks are harmless).
    fn judge_recovery(&self, bytes: Vec<u8>, seen: &[u8], what: &str) {
        let mem = MemStorage::from_bytes(bytes);
        let mut options = OpenOptions::new().write(true);
        if let Some(parent) = &self.parent {
            options = options.parent_image(open_parent(parent));
        }
        let mut img = options
            .open_storage(Box::new(mem.clone()), "crash.vhd")
            .unwrap_or_else(|e| panic!("{what}: a read-write open failed: {e}"));
        let size = img.size();
        // One sector in the last block, one in the middle of the disk.
        let probes = [size - SECTOR, size / 2 / SECTOR * SECTOR];
        for (i, &at) in probes.iter().enumerate() {
            img.write_at(at, &[0xC0 + i as u8; SECTOR as usize])
                .unwrap_or_else(|e| panic!("{what}: a write after recovery failed: {e}"));
        }
        img.close()
            .unwrap_or_else(|e| panic!("{what}: close after recovery failed: {e}"));
        let mut options = OpenOptions::new();
        if let Some(parent) = &self.parent {
            options = options.parent_image(open_parent(parent));
        }
        let mut img = options
            .open_storage(Box::new(mem), "crash.vhd")
            .unwrap_or_else(|e| panic!("{what}: reopen after recovery failed: {e}"));
        assert!(
            img.findings().is_empty(),
            "{what}: findings after recovery: {:?}",
            img.findings()
        );
        let mut disk = vec![0u8; size as usize];
        img.read_at(0, &mut disk).expect("read after recovery");
        let mut expected = seen.to_vec();
        for (i, &at) in probes.iter().enumerate() {
            expected[at as usize..(at + SECTOR) as usize].fill(0xC0 + i as u8);
        }
        assert!(
            disk == expected,
            "{what}: writing after recovery changed other sectors (first at byte {:?})",
            disk.iter().zip(&expected).position(|(a, b)| a != b)
        );
    }

    /// Every cut: after each whole operation, each write torn at each of
    /// its sector boundaries, and power loss keeping any subset of the
    /// writes since the last sync. Returns how many states were judged.
    fn judge_every_cut(&self) -> Cuts {
        let n = self.log.len();
        let mut cuts = Cuts::default();
        // Whole operations: the state after the first k.
        for k in 0..=n {
            let what = format!("cut after {k} of {n} operations");
            let bytes = self.replay(0..k);
            let seen = self.judge(bytes.clone(), &what);
            assert!(
                !seen.from_copy,
                "{what}: the file does not end with a footer"
            );
            if k == n {
                self.judge_complete(bytes.clone(), &what);
            }
            if k % 3 == 0 || k == n {
                self.judge_recovery(bytes, &seen.disk, &what);
            }
            cuts.states += 1;
        }
        // Torn writes: the first k operations, then part of operation k.
        for k in 0..n {
            for upto in self.log[k].tear_points(6) {
                let mut bytes = self.replay(0..k);
                self.log[k].apply_torn_at(&mut bytes, upto);
                let what = format!("operation {k} of {n} torn at file offset {upto}");
                let seen = self.judge(bytes.clone(), &what);
                assert!(
                    !seen.from_copy,
                    "{what}: the file does not end with a footer"
                );
                if k % 4 == 0 {
                    self.judge_recovery(bytes, &seen.disk, &what);
                }
                cuts.states += 1;
            }
        }
        // Power loss: everything up to a sync, then any subset of the
        // writes of the next window (writes between syncs may land in any
        // order).
        let syncs: Vec<usize> = (0..n)
            .filter(|&i| matches!(self.log[i], Mutation::Sync))
            .collect();
        let mut window_start = 0;
        for &sync in &syncs {
            let window: Vec<usize> = (window_start..sync).collect();
            for subset in power_loss_subsets(window.len(), 6, 32) {
                let kept = (0..window_start).chain(
                    window
                        .iter()
                        .enumerate()
                        .filter(|(bit, _)| subset & (1u64 << bit) != 0)
                        .map(|(_, &i)| i),
                );
                let bytes = self.replay(kept);
                let what = format!(
                    "power loss before the sync at operation {sync} keeping writes {subset:#b} of {window:?}"
                );
                cuts.from_copy += usize::from(self.judge(bytes, &what).from_copy);
                cuts.states += 1;
            }
            window_start = sync + 1;
        }
        // The sequence ends with a flush: its last operation is a sync.
        assert!(
            matches!(self.log.last(), Some(Mutation::Sync)),
            "a flush ends with a sync"
        );
        cuts
    }
}

// ---------------------------------------------------------------- tests

/// Old state: parts of blocks 0 and 2 written and flushed, then a killed
/// session's lost writes into sectors of both blocks whose bits are
/// clear: the file there holds data the guest never sees (and the rest of
/// every block's data area holds stale bytes, see `vhdref::storage::stale`), so no
/// sector's old contents equal what the file holds under it. The sequence
/// rewrites sectors already present, fills sectors whose bits are clear
/// (over the lost data, unaligned), allocates new blocks (one the partial
/// last block), writes across block boundaries, writes a sector twice,
/// and flushes in the middle and at the end.
fn mixed_sequence(size: u64) -> (Vec<Step>, Vec<Step>) {
    let b = u64::from(BLOCK);
    let prepare = vec![
        write(0, 8 * KIB, 0x11),
        write(2 * b + 4 * KIB, 3 * KIB, 0x22),
        Step::Flush,
        lost(64 * KIB, 16 * KIB, 0x5A), // block 0, bits clear
        lost(2 * b, 4 * KIB, 0x5B),     // block 2, bits clear
    ];
    let sequence = vec![
        write(SECTOR, 2 * SECTOR, 0x31),          // rewrite, aligned
        write(64 * KIB + 100, 1000, 0x32),        // block 0, bits clear, lost data, unaligned
        write(b - 700, 1500, 0x33),               // across blocks 0 -> 1 (new)
        write(2 * b - 3 * SECTOR, 8 * KIB, 0x34), // new block 1 -> old block 2 (over lost data)
        write(size - 1000, 1000, 0x35),           // the last (partial) block
        Step::Flush,
        write(b + 10, 20, 0x36), // inside a sector written above
        write(3 * b + 5 * SECTOR, 40 * KIB, 0x37), // another new block
        write(SECTOR, SECTOR, 0x38), // the same sector a third time
    ];
    (prepare, sequence)
}

#[test]
fn dynamic_image_survives_a_crash_at_every_point_of_a_write_sequence() {
    let size = 2 * MIB + 3 * KIB + SECTOR;
    let (prepare, sequence) = mixed_sequence(size);
    let rec = record(
        &Setup::Dynamic {
            size,
            block_size: BLOCK,
        },
        &prepare,
        &sequence,
    );
    let cuts = rec.judge_every_cut();
    assert!(cuts.states > 50, "only {cuts:?} crash states");
    // Power loss before the first sync can lose the footer written after
    // a new block while keeping data past the old end: the image must
    // still open, read-only, from the footer copy.
    assert!(
        cuts.from_copy > 0,
        "no state lost its trailing footer: {cuts:?}"
    );
}

#[test]
fn metadata_written_when_a_one_bitmap_cache_evicts_keeps_the_write_order() {
    let size = 2 * MIB + 3 * KIB + SECTOR;
    let (prepare, sequence) = mixed_sequence(size);
    for setup in [
        Setup::Dynamic {
            size,
            block_size: BLOCK,
        },
        Setup::Child {
            size,
            block_size: BLOCK,
            parent_writes: vec![write(0, 64 * KIB, 0x61), write(size - 700, 700, 0x62)],
        },
    ] {
        let syncs = |rec: &Recorded| {
            rec.log
                .iter()
                .filter(|m| matches!(m, Mutation::Sync))
                .count()
        };
        let plain = record(&setup, &prepare, &sequence);
        let rec = record_with_cache(&setup, &prepare, &sequence, Some(1));
        // Evictions write metadata (with its syncs) between the flushes.
        assert!(
            syncs(&rec) > syncs(&plain),
            "the cache never evicted ({} syncs, {} without a small cache)",
            syncs(&rec),
            syncs(&plain)
        );
        let cuts = rec.judge_every_cut();
        assert!(cuts.states > 50, "only {cuts:?} crash states");
    }
}

#[test]
fn dynamic_image_with_1_mib_blocks_survives_a_crash_at_every_point() {
    let size = 4 * MIB;
    let (prepare, sequence) = mixed_sequence(size);
    let rec = record(
        &Setup::Dynamic {
            size,
            block_size: 1 << 20,
        },
        &prepare,
        &sequence,
    );
    rec.judge_every_cut();
}

#[test]
fn differencing_child_survives_a_crash_at_every_point_of_a_write_sequence() {
    let size = 2 * MIB + 3 * KIB + SECTOR;
    let b = u64::from(BLOCK);
    let parent_writes = vec![
        write(0, 64 * KIB, 0x71),
        write(b - 2 * KIB, 5 * KIB, 0x72),
        write(3 * b + 3 * SECTOR, 3 * KIB, 0x73),
        write(size - 1500, 1500, 0x74),
    ];
    let (prepare, sequence) = mixed_sequence(size);
    let rec = record(
        &Setup::Child {
            size,
            block_size: BLOCK,
            parent_writes,
        },
        &prepare,
        &sequence,
    );
    let cuts = rec.judge_every_cut();
    assert!(cuts.states > 50, "only {cuts:?} crash states");
}

#[test]
fn a_crash_before_the_first_flush_leaves_the_old_disk_and_a_usable_image() {
    // Only allocations and data reach the file before the flush: the BAT
    // on disk still says unallocated, so the new data is invisible.
    let size = 2 * MIB;
    let rec = record(
        &Setup::Dynamic {
            size,
            block_size: BLOCK,
        },
        &[],
        &[write(u64::from(BLOCK) + 7, 3000, 0x44)],
    );
    let first_sync = rec
        .log
        .iter()
        .position(|m| matches!(m, Mutation::Sync))
        .expect("the flush syncs");
    assert!(
        first_sync > 0,
        "the write reached the file before the flush"
    );
    let bytes = rec.replay(0..first_sync);
    let seen = rec.judge(bytes.clone(), "before the first sync").disk;
    assert!(
        seen.iter().all(|&b| b == 0),
        "unflushed data became visible"
    );
    rec.judge_recovery(bytes, &seen, "before the first sync");
}

/// `cases` cases, or `PROPTEST_CASES` from the environment for a deeper run.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

#[derive(Debug, Clone)]
struct RandomWrite {
    offset: u64,
    len: u64,
    byte: u8,
}

fn random_sequence(size: u64) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => (0..size, 1u64..=20 * KIB, any::<u8>()).prop_map(move |(offset, len, byte)| {
            let w = RandomWrite { offset, len: len.min(size - offset), byte };
            write(w.offset, w.len, w.byte)
        }),
        1 => Just(Step::Flush),
    ];
    proptest::collection::vec(step, 1..7)
}

proptest! {
    #![proptest_config(config(8))]

    #[test]
    fn random_write_sequences_survive_a_crash_at_every_point(
        child in any::<bool>(),
        prepare in random_sequence(MIB + 3 * SECTOR),
        sequence in random_sequence(MIB + 3 * SECTOR),
    ) {
        let size = MIB + 3 * SECTOR;
        let setup = if child {
            Setup::Child { size, block_size: BLOCK, parent_writes: vec![write(0, size, 0x5C)] }
        } else {
            Setup::Dynamic { size, block_size: BLOCK }
        };
        let rec = record(&setup, &prepare, &sequence);
        rec.judge_every_cut();
    }
}

#[test]
fn an_interrupted_commit_leaves_parent_sectors_old_or_new_and_running_it_again_completes_it() {
    let size = 2 * MIB + 3 * KIB + SECTOR;
    let b = u64::from(BLOCK);
    let parent_storage = FaultStorage::new();
    let mut disk = Disk::new(size);
    let mut parent = CreateOptions::new(DiskType::Dynamic, size)
        .block_size(BLOCK)
        .create_in(Box::new(parent_storage.clone()), "parent.vhd", None)
        .expect("create parent");
    for step in [write(0, 20 * KIB, 0x81), write(3 * b + 100, 5000, 0x82)] {
        apply(&mut parent, &mut disk, &step);
    }
    parent.close().expect("close parent");
    let open_recorded_parent = |write: bool| {
        OpenOptions::new()
            .write(write)
            .open_storage(Box::new(parent_storage.clone()), "parent.vhd")
            .expect("open parent")
    };
    let child_mem = MemStorage::new();
    let mut child = CreateOptions::new(DiskType::Differencing, 0)
        .block_size(1 << 20)
        .create_in(
            Box::new(child_mem.clone()),
            "child.vhd",
            Some((open_recorded_parent(false), "parent.vhd")),
        )
        .expect("create child");
    disk.push_child();
    for step in [
        write(4 * KIB + 10, 3000, 0x91), // over parent data
        write(b - 1000, 2000, 0x92),     // across into a block the parent lacks
        write(3 * b, 64 * KIB, 0x93),    // over the parent's other block
        write(size - 700, 700, 0x94),    // the last, partial block
    ] {
        apply(&mut child, &mut disk, &step);
    }
    child.close().expect("close child");
    let mut old_parent = disk.clone();
    old_parent.pop_child();

    // The commit, recorded on the parent's storage.
    let start = parent_storage.log().len();
    let before = parent_storage.bytes();
    let open_child = |parent: Image| {
        OpenOptions::new()
            .parent_image(parent)
            .open_storage(Box::new(child_mem.clone()), "child.vhd")
            .expect("open child")
    };
    let mut child = open_child(open_recorded_parent(true));
    child.commit_into_parent().expect("commit");
    child
        .take_parent()
        .expect("the parent")
        .close()
        .expect("close parent");
    disk.commit_top();
    let mut new_parent = disk.clone();
    new_parent.pop_child();
    let mut allowed = Allowed::new(&old_parent);
    allowed.note(&new_parent, 0, size);
    let rec = Recorded {
        before,
        log: parent_storage.log()[start..].to_vec(),
        allowed,
        after: new_parent.clone(),
        parent: None,
    };
    let cuts = rec.judge_every_cut();
    assert!(cuts.states > 20, "only {cuts:?} crash states");

    // Commit is idempotent: running it again over any cut completes it.
    let want: Vec<u8> = (0..size / SECTOR)
        .flat_map(|n| new_parent.sector(n))
        .collect();
    for k in 0..=rec.log.len() {
        let mem = MemStorage::from_bytes(rec.replay(0..k));
        let parent = OpenOptions::new()
            .write(true)
            .open_storage(Box::new(mem.clone()), "parent.vhd")
            .unwrap_or_else(|e| panic!("cut {k}: the parent does not open for writing: {e}"));
        let mut child = open_child(parent);
        child
            .commit_into_parent()
            .unwrap_or_else(|e| panic!("cut {k}: commit again: {e}"));
        child
            .take_parent()
            .expect("the parent")
            .close()
            .expect("close parent");
        let mut parent = OpenOptions::new()
            .open_storage(Box::new(mem), "parent.vhd")
            .expect("open");
        let mut got = vec![0u8; size as usize];
        parent.read_at(0, &mut got).expect("read");
        assert!(
            got == want,
            "cut {k}: a second commit did not complete the first"
        );
    }
}
