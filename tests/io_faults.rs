//! I/O errors at every point of a workload, then a retry as an application
//! would make it (issue 11, item 5).
//!
//! Each workload runs on a `FaultStorage` once without faults (to count its
//! operations), then once per operation and kind of fault: `EIO` or
//! `ENOSPC` on a write, a torn write, `EIO` on a sync, and a stop of the
//! machine. The application retries a failed write or flush once and gives
//! up if it fails again. Then the image is reopened from what is durable
//! and from what a reader would see, and judged against the model:
//!
//! * after a reported success, every byte is there (the durable bytes
//!   read exactly as the model says);
//! * after a reported failure, the image opens and every sector reads a
//!   value it held during the workload (its old contents or a newer one).
//!
//! Old contents are never zeros, so a sector that lost its data or got
//! another's cannot pass.

use std::collections::HashMap;

use proptest::prelude::*;
use vhdref::model::Disk;
use vhdref::storage::{Fault, FaultStorage, MemStorage, Op};
use vhdref::{CreateOptions, DiskType, Image, OpenOptions};

const SECTOR: u64 = 512;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const SIZE: u64 = 4 * MIB;
const BLOCK: u32 = 512 * 1024;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(29)
                .wrapping_add(seed)
                .wrapping_add((i / 512) as u8)
                | 1
        })
        .collect()
}

/// A step of a workload.
#[derive(Debug, Clone)]
enum Step {
    Write(u64, Vec<u8>),
    Flush,
}

/// Every value each sector held: its old value first.
#[derive(Debug, Clone)]
struct Allowed {
    old: Disk,
    seen: HashMap<u64, Vec<Vec<u8>>>,
}

impl Allowed {
    fn new(old: &Disk) -> Self {
        Allowed {
            old: old.clone(),
            seen: HashMap::new(),
        }
    }

    fn note(&mut self, disk: &Disk, offset: u64, len: u64) {
        for s in offset / SECTOR..(offset + len).div_ceil(SECTOR) {
            let values = self
                .seen
                .entry(s)
                .or_insert_with(|| vec![self.old.sector(s)]);
            let now = disk.sector(s);
            if !values.contains(&now) {
                values.push(now);
            }
        }
    }

    fn permits(&self, s: u64, value: &[u8]) -> bool {
        match self.seen.get(&s) {
            Some(values) => values.iter().any(|v| v == value),
            None => self.old.sector(s) == value,
        }
    }
}

/// How the image under the workload is made and reopened.
#[derive(Debug, Clone, Copy)]
enum Setup {
    Dynamic,
    Child,
}

/// The image before the workload: in a `FaultStorage` (all durable), the
/// parent of a child in memory, and what it reads as. Old data everywhere
/// except two blocks (unallocated, which read as zeros or as the parent).
fn before(setup: Setup) -> (Vec<u8>, Option<MemStorage>, Disk) {
    let mem = MemStorage::new();
    let mut disk = Disk::new(SIZE);
    let parent = match setup {
        Setup::Dynamic => {
            let mut img = CreateOptions::new(DiskType::Dynamic, SIZE)
                .block_size(BLOCK)
                .create_in(Box::new(mem.clone()), "img.vhd", None)
                .unwrap();
            for (offset, len, seed) in [(0, MIB, 3), (MIB + 4 * KIB, 5000, 4), (3 * MIB, MIB, 5)] {
                let data = pattern(len as usize, seed);
                img.write_at(offset, &data).unwrap();
                disk.write(offset, &data);
            }
            img.close().unwrap();
            None
        }
        Setup::Child => {
            let parent_mem = MemStorage::new();
            let mut parent = CreateOptions::new(DiskType::Dynamic, SIZE)
                .block_size(BLOCK)
                .create_in(Box::new(parent_mem.clone()), "parent.vhd", None)
                .unwrap();
            let data = pattern(SIZE as usize, 9);
            parent.write_at(0, &data).unwrap();
            disk.write(0, &data);
            parent.close().unwrap();
            let mut child = CreateOptions::new(DiskType::Differencing, 0)
                .block_size(BLOCK)
                .create_in(
                    Box::new(mem.clone()),
                    "img.vhd",
                    Some((open_parent(&parent_mem), "parent.vhd")),
                )
                .unwrap();
            disk.push_child();
            let own = pattern(700_000, 11);
            child.write_at(MIB + 100, &own).unwrap();
            disk.write(MIB + 100, &own);
            child.close().unwrap();
            Some(parent_mem)
        }
    };
    (mem.to_vec(), parent, disk)
}

fn open_parent(mem: &MemStorage) -> Image {
    OpenOptions::new()
        .open_storage(Box::new(mem.clone()), "parent.vhd")
        .unwrap()
}

fn open(bytes: Vec<u8>, parent: Option<&MemStorage>, write: bool) -> vhdref::Result<Image> {
    let mut options = OpenOptions::new().write(write);
    if let Some(p) = parent {
        options = options.parent_image(open_parent(p));
    }
    options.open_storage(Box::new(MemStorage::from_bytes(bytes)), "img.vhd")
}

/// What a run reported.
struct Outcome {
    /// Every step (and the close) returned `Ok`, perhaps after a retry.
    success: bool,
    allowed: Allowed,
    after: Disk,
}

/// Runs `steps` on a storage with the planned fault, as an application:
/// a failed write or flush is retried once.
fn run(
    setup: Setup,
    steps: &[Step],
    storage: &FaultStorage,
    parent: Option<&MemStorage>,
    old: &Disk,
) -> Outcome {
    let mut disk = old.clone();
    let mut allowed = Allowed::new(old);
    let mut options = OpenOptions::new().write(true);
    if let Some(p) = parent {
        options = options.parent_image(open_parent(p));
    }
    let _ = setup;
    let Ok(mut img) = options.open_storage(Box::new(storage.clone()), "img.vhd") else {
        return Outcome {
            success: false,
            allowed,
            after: disk,
        };
    };
    let mut success = true;
    for step in steps {
        match step {
            Step::Write(offset, data) => {
                // The data may reach the disk even if the write fails.
                disk.write(*offset, data);
                allowed.note(&disk, *offset, data.len() as u64);
                let ok = img.write_at(*offset, data).is_ok() || img.write_at(*offset, data).is_ok();
                success &= ok;
            }
            Step::Flush => {
                let ok = img.flush().is_ok() || img.flush().is_ok();
                success &= ok;
            }
        }
        if !success {
            break;
        }
    }
    if success {
        success = img.flush().is_ok() || img.flush().is_ok();
    }
    drop(img);
    Outcome {
        success,
        allowed,
        after: disk,
    }
}

/// Judges the storage after a run.
fn judge(storage: &FaultStorage, parent: Option<&MemStorage>, outcome: &Outcome, what: &str) {
    let mut states = vec![("durable", storage.durable()), ("seen", storage.bytes())];
    if !outcome.success {
        // A power loss keeping the first half of what was pending.
        let mut half = storage.durable();
        let pending = storage.pending();
        for m in &pending[..pending.len() / 2] {
            m.apply(&mut half);
        }
        states.push(("half", half));
    }
    for (name, bytes) in states {
        let mut img = open(bytes, parent, false)
            .unwrap_or_else(|e| panic!("{what}: the {name} image does not open: {e}"));
        let mut sector = vec![0u8; SECTOR as usize];
        for s in 0..SIZE / SECTOR {
            img.read_at(s * SECTOR, &mut sector).unwrap();
            if outcome.success {
                assert!(
                    sector == outcome.after.sector(s),
                    "{what}: reported success but sector {s} of the {name} image is not the new data"
                );
            } else {
                assert!(
                    outcome.allowed.permits(s, &sector),
                    "{what}: sector {s} of the {name} image is neither old nor new"
                );
            }
        }
    }
}

/// The faults tried at each operation of a kind.
fn faults(op: Op) -> Vec<Fault> {
    match op {
        Op::Write => vec![
            Fault::Eio,
            Fault::NoSpace,
            Fault::Tear { keep: 512 },
            Fault::Stop,
        ],
        _ => vec![Fault::Eio, Fault::Stop],
    }
}

/// Runs `steps` with a fault at every operation, judging each run.
fn every_fault_point(setup: Setup, steps: &[Step]) -> usize {
    let (bytes, parent, old) = before(setup);
    let probe = FaultStorage::from_bytes(bytes.clone());
    let clean = run(setup, steps, &probe, parent.as_ref(), &old);
    assert!(
        clean.success,
        "{setup:?}: the workload fails without faults"
    );
    judge(
        &probe,
        parent.as_ref(),
        &clean,
        &format!("{setup:?} without faults"),
    );
    let (writes, syncs, set_lens) = probe.counts();
    let mut runs = 0;
    for (op, count) in [
        (Op::Write, writes),
        (Op::Sync, syncs),
        (Op::SetLen, set_lens),
    ] {
        for nth in 0..count {
            for fault in faults(op) {
                let storage = FaultStorage::from_bytes(bytes.clone());
                storage.plan(op, nth, fault);
                let outcome = run(setup, steps, &storage, parent.as_ref(), &old);
                let what = format!(
                    "{setup:?}: {fault:?} at {op:?} #{nth} (success: {})",
                    outcome.success
                );
                judge(&storage, parent.as_ref(), &outcome, &what);
                runs += 1;
            }
        }
    }
    runs
}

/// Writes over old data, into unallocated blocks, across block and sector
/// boundaries, with a flush in the middle.
fn mixed_steps() -> Vec<Step> {
    vec![
        Step::Write(100, pattern(3000, 21)),
        Step::Write(MIB - 700, pattern(2000, 22)),
        Step::Write(2 * MIB + 512, pattern(4096, 23)),
        Step::Flush,
        Step::Write(MIB + 4 * KIB + 10, pattern(600, 24)),
        Step::Write(3 * MIB + 300_000, pattern(600_000, 25)),
    ]
}

#[test]
fn a_dynamic_image_keeps_every_promise_with_a_fault_at_every_io_point() {
    let runs = every_fault_point(Setup::Dynamic, &mixed_steps());
    assert!(runs > 50, "only {runs} fault points");
}

#[test]
fn a_differencing_child_keeps_every_promise_with_a_fault_at_every_io_point() {
    let runs = every_fault_point(Setup::Child, &mixed_steps());
    assert!(runs > 50, "only {runs} fault points");
}

#[test]
fn a_flush_retried_after_a_failed_bat_write_writes_the_bat() {
    // The defect of issue 11: the dirty BAT entries were dropped before
    // their write, so a retried flush returned Ok without them.
    let (bytes, _, old) = before(Setup::Dynamic);
    let storage = FaultStorage::from_bytes(bytes);
    let mut img = OpenOptions::new()
        .write(true)
        .open_storage(Box::new(storage.clone()), "img.vhd")
        .unwrap();
    let data = pattern(4096, 77);
    img.write_at(2 * MIB, &data).unwrap(); // allocates a block
    // The flush writes: the bitmap, then the BAT entry. Fail the BAT write.
    let (writes, _, _) = storage.counts();
    storage.plan(Op::Write, writes + 1, Fault::Eio);
    assert!(img.flush().is_err());
    img.flush().expect("the retried flush succeeds");
    img.close().unwrap();
    let mut back = open(storage.durable(), None, false).unwrap();
    let mut buf = vec![0u8; data.len()];
    back.read_at(2 * MIB, &mut buf).unwrap();
    assert_eq!(buf, data, "the retried flush lost the data");
    let _ = old;
}

#[test]
fn after_a_failed_sync_the_image_refuses_to_flush_until_reopened() {
    let (bytes, _, _) = before(Setup::Dynamic);
    let storage = FaultStorage::from_bytes(bytes);
    let mut img = OpenOptions::new()
        .write(true)
        .open_storage(Box::new(storage.clone()), "img.vhd")
        .unwrap();
    img.write_at(2 * MIB, &pattern(4096, 78)).unwrap();
    let (_, syncs, _) = storage.counts();
    storage.plan(Op::Sync, syncs, Fault::Eio);
    assert!(img.flush().is_err());
    assert!(img.is_failed());
    for _ in 0..2 {
        let e = img.flush().unwrap_err();
        assert!(e.to_string().contains("failed state"), "{e}");
    }
    assert!(img.write_at(0, b"x").is_err());
    assert!(img.close().is_err());
}

// ------------------------------------------------- create, convert, commit

/// Every fault point of `work`, which makes or changes an image in the
/// given storage and reports success; `check` judges the storage.
fn each_fault(
    initial: &[u8],
    work: &dyn Fn(&FaultStorage) -> bool,
    check: &dyn Fn(&FaultStorage, bool, &str),
) -> usize {
    let probe = FaultStorage::from_bytes(initial.to_vec());
    assert!(work(&probe), "the workload fails without faults");
    check(&probe, true, "without faults");
    let (writes, syncs, set_lens) = probe.counts();
    let mut runs = 0;
    for (op, count) in [
        (Op::Write, writes),
        (Op::Sync, syncs),
        (Op::SetLen, set_lens),
    ] {
        for nth in 0..count {
            for fault in faults(op) {
                let storage = FaultStorage::from_bytes(initial.to_vec());
                storage.plan(op, nth, fault);
                let ok = work(&storage);
                check(&storage, ok, &format!("{fault:?} at {op:?} #{nth}"));
                runs += 1;
            }
        }
    }
    runs
}

#[test]
fn create_reports_every_fault_and_what_it_reports_made_opens() {
    for disk_type in [DiskType::Fixed, DiskType::Dynamic] {
        let runs = each_fault(
            &[],
            &|s| {
                CreateOptions::new(disk_type, SIZE)
                    .create_in(Box::new(s.clone()), "new.vhd", None)
                    .and_then(Image::close)
                    .is_ok()
            },
            &|s, ok, what| {
                if ok {
                    let mut img = open(s.durable(), None, false)
                        .unwrap_or_else(|e| panic!("{disk_type:?} {what}: created but {e}"));
                    let mut buf = vec![1u8; 4096];
                    img.read_at(SIZE - 4096, &mut buf).unwrap();
                    assert!(buf.iter().all(|&b| b == 0));
                }
            },
        );
        assert!(runs > 2, "{disk_type:?}: {runs}");
    }
}

#[test]
fn convert_into_a_faulty_output_reports_it_or_leaves_a_complete_image() {
    let (bytes, _, old) = before(Setup::Dynamic);
    let expected = old.read(0, SIZE);
    let runs = each_fault(
        &[],
        &|s| {
            let mut source = open(bytes.clone(), None, false).unwrap();
            let Ok(mut out) = CreateOptions::new(DiskType::Dynamic, SIZE)
                .block_size(BLOCK)
                .create_in(Box::new(s.clone()), "out.vhd", None)
            else {
                return false;
            };
            vhdref::convert::copy(&mut source, &mut out, SIZE, &mut |_| {}).is_ok()
                && (out.flush().is_ok() || out.flush().is_ok())
        },
        &|s, ok, what| {
            let Ok(mut img) = open(s.durable(), None, false) else {
                assert!(!ok, "{what}: reported success but the output does not open");
                return;
            };
            let mut all = vec![0u8; SIZE as usize];
            img.read_at(0, &mut all).unwrap();
            if ok {
                assert!(all == expected, "{what}: reported success, contents differ");
            } else {
                // Each sector is the source's or still zeros.
                for (s, (got, want)) in all.chunks(512).zip(expected.chunks(512)).enumerate() {
                    assert!(
                        got == want || got.iter().all(|&b| b == 0),
                        "{what}: sector {s}"
                    );
                }
            }
        },
    );
    assert!(runs > 20, "{runs}");
}

#[test]
fn commit_into_a_faulty_parent_reports_it_and_leaves_each_sector_old_or_new() {
    // A parent with old data, a child with its own; the parent is in the
    // faulty storage.
    let parent_old = pattern(SIZE as usize, 41);
    let make_parent = |s: &FaultStorage| {
        let mut p = CreateOptions::new(DiskType::Dynamic, SIZE)
            .block_size(BLOCK)
            .unique_id(uuid::Uuid::from_u128(7))
            .create_in(Box::new(s.clone()), "parent.vhd", None)
            .unwrap();
        p.write_at(0, &parent_old[..(3 * MIB) as usize]).unwrap();
        p.close().unwrap();
    };
    let clean = FaultStorage::new();
    make_parent(&clean);
    let parent_bytes = clean.durable();
    let child_mem = MemStorage::new();
    let parent_for_child = OpenOptions::new()
        .open_storage(
            Box::new(MemStorage::from_bytes(parent_bytes.clone())),
            "parent.vhd",
        )
        .unwrap();
    let mut child = CreateOptions::new(DiskType::Differencing, 0)
        .block_size(BLOCK)
        .create_in(
            Box::new(child_mem.clone()),
            "child.vhd",
            Some((parent_for_child, "parent.vhd")),
        )
        .unwrap();
    let own = pattern(1_500_000, 42);
    child.write_at(MIB + 333, &own).unwrap();
    child.close().unwrap();
    let mut old = Disk::new(SIZE);
    old.write(0, &parent_old[..(3 * MIB) as usize]);
    let mut new = old.clone();
    new.write(MIB + 333, &own);
    let runs = each_fault(
        &parent_bytes,
        &|s| {
            let parent = OpenOptions::new()
                .write(true)
                .open_storage(Box::new(s.clone()), "parent.vhd");
            let Ok(parent) = parent else { return false };
            let mut child = OpenOptions::new()
                .parent_image(parent)
                .open_storage(Box::new(child_mem.clone()), "child.vhd")
                .unwrap();
            let ok = child.commit_into_parent().is_ok();
            let parent = child.take_parent().unwrap();
            ok && parent.close().is_ok()
        },
        &|s, ok, what| {
            for (name, bytes) in [("durable", s.durable()), ("seen", s.bytes())] {
                let mut p = open(bytes, None, false)
                    .unwrap_or_else(|e| panic!("{what}: the {name} parent does not open: {e}"));
                let mut sector = vec![0u8; 512];
                for n in 0..SIZE / SECTOR {
                    p.read_at(n * SECTOR, &mut sector).unwrap();
                    let (o, w) = (old.sector(n), new.sector(n));
                    if ok {
                        assert!(
                            sector == w,
                            "{what}: committed but sector {n} of {name} is old"
                        );
                    } else {
                        assert!(sector == o || sector == w, "{what}: sector {n} of {name}");
                    }
                }
            }
        },
    );
    assert!(runs > 10, "{runs}");
}

// ------------------------------------------------- random workloads

fn random_steps() -> impl Strategy<Value = Vec<Step>> {
    let write = (0..SIZE - 1, 1..200_000u64, any::<u8>()).prop_map(|(offset, len, seed)| {
        let len = len.min(SIZE - offset);
        Step::Write(offset, pattern(len as usize, seed | 1))
    });
    prop::collection::vec(prop_oneof![4 => write, 1 => Just(Step::Flush)], 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_workloads_keep_every_promise_with_a_random_fault(
        steps in random_steps(),
        child in any::<bool>(),
        op_pick in 0..3usize,
        nth in 0..40u64,
        fault_pick in 0..4usize,
    ) {
        let setup = if child { Setup::Child } else { Setup::Dynamic };
        let (bytes, parent, old) = before(setup);
        let op = [Op::Write, Op::Sync, Op::Any][op_pick];
        let fault = faults(op)[fault_pick % faults(op).len()];
        let storage = FaultStorage::from_bytes(bytes);
        storage.plan(op, nth, fault);
        let outcome = run(setup, &steps, &storage, parent.as_ref(), &old);
        judge(&storage, parent.as_ref(), &outcome, &format!("{fault:?} at {op:?} #{nth}"));
    }
}
