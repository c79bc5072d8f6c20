//! Proof of the maintenance operations under faults, shared by the
//! `tests/ops_*.rs` binaries.
//!
//! An operation runs on a [`FaultStorage`] once without faults (recording
//! every change), then:
//!
//! * **cuts**: the file after the first k recorded changes, for every k;
//! * **torn writes**: the first k changes, then part of change k, for a
//!   few sector boundaries inside it;
//! * **power loss**: everything up to a sync, then any subset of the
//!   writes after it (all subsets of small windows, a spread of larger);
//! * **I/O faults**: the operation again on a fresh storage with `EIO`,
//!   `ENOSPC`, a torn write, or a stop planned on each write, and `EIO` or
//!   a stop on each sync and each `set_len`; judged from the durable bytes
//!   and the bytes a reader sees, and then run once more without faults
//!   on what survived, as a user would after an error.
//!
//! Every state must open, the checker must find no error in it (warnings,
//! such as a leak, are allowed), it must have the old or the new size, and
//! every sector must read its old or its new contents. After a reported
//! success, the durable bytes read exactly the new contents. Old and new
//! contents come from the model (`vhdref::model::Disk`) or from the
//! builder, never from vhdref reading itself.
#![allow(dead_code)]

use vhdref::check::{CheckOptions, Verdict, check_storage};
use vhdref::storage::{Fault, FaultStorage, MemStorage, Mutation, Op, Storage, power_loss_subsets};
use vhdref::{DiskType, Image, OpenOptions, Rule};

pub const SECTOR: u64 = 512;
pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;

/// `len` bytes, none zero, varied per sector and by `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(seed)
                .wrapping_add((i / 512) as u8)
                | 1
        })
        .collect()
}

/// The images a state may name as its parent: opened by unique ID.
#[derive(Clone, Default)]
pub struct Parents {
    images: Vec<(uuid::Uuid, String, MemStorage)>,
}

impl Parents {
    pub fn none() -> Self {
        Parents::default()
    }

    /// Adds a parent held in `bytes`, named `name` in messages.
    pub fn with(mut self, name: &str, bytes: Vec<u8>) -> Self {
        let mem = MemStorage::from_bytes(bytes);
        let img = OpenOptions::new()
            .open_storage(Box::new(mem.clone()), name)
            .unwrap_or_else(|e| panic!("parent {name} does not open: {e}"));
        self.images
            .push((img.footer().unique_id, name.to_string(), mem));
        self
    }

    /// The parent with this unique ID, opened read-only.
    pub fn open(&self, id: uuid::Uuid) -> Option<Image> {
        self.images
            .iter()
            .find(|p| p.0 == id)
            .map(|(_, name, mem)| {
                OpenOptions::new()
                    .open_storage(Box::new(mem.clone()), name.clone())
                    .expect("a parent opens")
            })
    }

    /// The names of the parents with this unique ID.
    pub fn names_of(&self, id: uuid::Uuid) -> Vec<String> {
        self.images
            .iter()
            .filter(|p| p.0 == id)
            .map(|p| p.1.clone())
            .collect()
    }

    /// The parent by name, opened read-only.
    pub fn open_named(&self, name: &str) -> Image {
        let (_, name, mem) = self
            .images
            .iter()
            .find(|p| p.1 == name)
            .unwrap_or_else(|| panic!("no parent {name}"));
        OpenOptions::new()
            .open_storage(Box::new(mem.clone()), name.clone())
            .expect("a parent opens")
    }
}

/// Opens the image in `storage` (read-only unless `write`), with the
/// parent its header names, for a differencing image.
pub fn open_with_parent(
    storage: Box<dyn Storage>,
    parents: &Parents,
    write: bool,
) -> vhdref::Result<Image> {
    let bytes = storage_bytes(&*storage);
    let probe = OpenOptions::new()
        .skip_parent(true)
        .open_storage(Box::new(MemStorage::from_bytes(bytes)), "image.vhd")?;
    let mut options = OpenOptions::new().write(write);
    if probe.disk_type() == DiskType::Differencing {
        let id = probe
            .dyn_header()
            .map(|h| h.parent_unique_id)
            .unwrap_or_default();
        match parents.open(id) {
            Some(p) => options = options.parent_image(p),
            None => options = options.skip_parent(true),
        }
    }
    options.open_storage(storage, "image.vhd")
}

/// The texts of the `W2ru` and `W2ku` locators of `header`, decoded from
/// the bytes in `storage` (those that do not decode are left out).
pub fn locator_texts(storage: &MemStorage, header: &vhdref::format::DynHeader) -> Vec<String> {
    use vhdref::format::Platform;
    let bytes = storage.to_vec();
    header
        .parent_locators
        .iter()
        .filter(|l| matches!(l.platform(), Platform::W2ru | Platform::W2ku))
        .filter_map(|l| {
            let start = usize::try_from(l.platform_data_offset).ok()?;
            let data = bytes.get(start..start + l.platform_data_length as usize)?;
            vhdref::format::locator::decode_locator(l.platform(), data)
        })
        .collect()
}

fn storage_bytes(s: &dyn Storage) -> Vec<u8> {
    let len = s.len().expect("length");
    let mut buf = vec![0u8; len as usize];
    s.read_exact_at(&mut buf, 0).expect("read");
    buf
}

/// What the guest may read after a cut: the old disk or the new one,
/// sector by sector (the two may differ in size).
#[derive(Clone)]
pub struct Contents {
    pub old: Vec<u8>,
    pub new: Vec<u8>,
}

impl Contents {
    /// An operation that keeps the contents.
    pub fn unchanged(disk: Vec<u8>) -> Self {
        Contents {
            old: disk.clone(),
            new: disk,
        }
    }
}

/// How a state was made, for the assertion messages and for what it may
/// hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A prefix of the changes, or a write torn at a sector boundary.
    Cut,
    /// A power loss: some writes since the last sync are missing.
    PowerLoss,
    /// What a reader sees after a failed operation.
    Seen,
    /// What is durable after a failed operation.
    Durable,
    /// What is durable after the operation reported success.
    Complete,
}

/// Judges one state of the file. Returns whether it opened from the
/// footer copy only (allowed for power loss and what a reader sees).
pub fn judge(bytes: Vec<u8>, parents: &Parents, want: &Contents, kind: Kind, what: &str) -> bool {
    judge_with(bytes, parents, want, kind, what, &[])
}

/// Warnings an operation may leave in a state between its steps: space
/// copied but not yet referenced, or no longer referenced (FILE-LEAK,
/// FILE-TAIL, and FTR-FIXED-SLACK while a fixed image's footer moves), a
/// header copy past the blocks (FILE-ORDER), a footer switched before its
/// copy (FTR-COPY-MISMATCH), a power loss that kept data past the old end
/// but not the footer after it (FTR-TRAILING).
pub const PASSING_WARNINGS: [Rule; 6] = [
    Rule::FileLeak,
    Rule::FtrFixedSlack,
    Rule::FileTail,
    Rule::FileOrder,
    Rule::FtrCopyMismatch,
    Rule::FtrTrailing,
];

/// [`judge`], where the warnings allowed are [`PASSING_WARNINGS`] and
/// those in `also` (the ones the image had before the operation).
pub fn judge_with(
    bytes: Vec<u8>,
    parents: &Parents,
    want: &Contents,
    kind: Kind,
    what: &str,
    also: &[Rule],
) -> bool {
    let mem = MemStorage::from_bytes(bytes);
    let report = check_storage(&mem, "image.vhd", &CheckOptions::new());
    assert!(
        report.verdict() != Verdict::NotChecked,
        "{what}: the checker cannot judge it: {:?}",
        report.not_checked
    );
    // Errors the image had before (a repair's starting point) may still be
    // there until the fix is made; nothing may add one, and a reported
    // success leaves none.
    let errors: Vec<&vhdref::check::Located> = report
        .findings
        .iter()
        .filter(|f| f.finding.severity == vhdref::Severity::Error)
        .collect();
    assert!(
        errors
            .iter()
            .all(|f| kind != Kind::Complete && also.contains(&f.finding.rule)),
        "{what}: the checker finds errors: {:?}",
        errors
            .iter()
            .map(|f| f.finding.to_string())
            .collect::<Vec<_>>()
    );
    if !errors.is_empty() {
        return false;
    }
    let unexpected: Vec<String> = report
        .findings
        .iter()
        .filter(|f| {
            let r = f.finding.rule;
            !PASSING_WARNINGS.contains(&r) && !also.contains(&r)
        })
        .map(|f| f.finding.to_string())
        .collect();
    assert!(
        unexpected.is_empty(),
        "{what}: the checker finds warnings the operation should not cause: {unexpected:?}"
    );
    let mut img = open_with_parent(Box::new(mem.clone()), parents, false)
        .unwrap_or_else(|e| panic!("{what}: does not open: {e}"));
    if let Some(header) = img
        .dyn_header()
        .filter(|_| img.disk_type() == DiskType::Differencing)
    {
        let names = parents.names_of(header.parent_unique_id);
        assert!(
            !names.is_empty(),
            "{what}: the header names a parent that is not there"
        );
        let texts = locator_texts(&mem, header);
        assert!(
            texts.iter().any(|t| names
                .iter()
                .any(|n| t.replace('\\', "/").ends_with(n.as_str()))),
            "{what}: no locator names the parent {names:?}: {texts:?}"
        );
    }
    let from_copy = img.findings().iter().any(|f| f.rule == Rule::FtrTrailing);
    if from_copy && !also.contains(&Rule::FtrTrailing) {
        assert!(
            matches!(kind, Kind::PowerLoss | Kind::Seen),
            "{what}: the file does not end with a valid footer"
        );
    }
    assert!(
        !(from_copy && kind == Kind::Complete),
        "{what}: reported success but the file does not end with a valid footer"
    );
    let size = img.size();
    let mut disk = vec![0u8; size as usize];
    img.read_at(0, &mut disk)
        .unwrap_or_else(|e| panic!("{what}: reading the disk: {e}"));
    if kind == Kind::Complete {
        assert!(
            size == want.new.len() as u64,
            "{what}: reported success but the size is {size}, not {}",
            want.new.len()
        );
        if let Some(at) = first_difference(&disk, &want.new) {
            panic!("{what}: reported success but byte {at} is not the new contents");
        }
        return from_copy;
    }
    assert!(
        size == want.old.len() as u64 || size == want.new.len() as u64,
        "{what}: size {size} is neither the old {} nor the new {}",
        want.old.len(),
        want.new.len()
    );
    for (n, sector) in disk.chunks(SECTOR as usize).enumerate() {
        let at = n * SECTOR as usize;
        let is = |v: &[u8]| v.get(at..at + sector.len()) == Some(sector);
        assert!(
            is(&want.old) || is(&want.new),
            "{what}: sector {n} holds neither its old nor its new contents"
        );
    }
    from_copy
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// An operation under test: it runs on the image held by a storage (the
/// parents it may need are given) and says whether it reported success.
pub type Operation<'a> = &'a dyn Fn(&FaultStorage, &Parents) -> bool;

/// What a proof covered.
#[derive(Debug, Default, Clone, Copy)]
pub struct Covered {
    /// Changes the operation made without faults (writes, syncs, cuts).
    pub changes: usize,
    /// Writes, syncs and `set_len`s it made.
    pub writes: u64,
    pub syncs: u64,
    pub set_lens: u64,
    /// States judged.
    pub states: usize,
    /// Runs with a planned fault.
    pub fault_runs: usize,
    /// Of those, runs that still reported success.
    pub fault_successes: usize,
}

/// The whole proof of one operation: see the module documentation.
pub fn prove(
    what: &str,
    before: &[u8],
    parents: &Parents,
    want: &Contents,
    op: Operation<'_>,
) -> Covered {
    let mut covered = Covered::default();
    let also = rules_in(before);
    // The run without faults.
    let clean = FaultStorage::from_bytes(before.to_vec());
    assert!(
        op(&clean, parents),
        "{what}: the operation fails without faults"
    );
    let label = format!("{what}, no faults");
    judge_with(
        clean.durable(),
        parents,
        want,
        Kind::Complete,
        &label,
        &also,
    );
    let log = clean.log();
    (covered.writes, covered.syncs, covered.set_lens) = clean.counts();
    covered.changes = log.len();
    assert!(
        matches!(log.last(), Some(Mutation::Sync)) || log.is_empty(),
        "{what}: the operation does not end with a sync"
    );
    covered.states += cuts(what, before, &log, parents, want, &also);
    faults(what, before, parents, want, op, &also, &mut covered);
    covered
}

/// Every cut, tear and power loss of a recorded run; returns the states
/// judged.
fn cuts(
    what: &str,
    before: &[u8],
    log: &[Mutation],
    parents: &Parents,
    want: &Contents,
    also: &[Rule],
) -> usize {
    let replay = |ops: &mut dyn Iterator<Item = usize>| {
        let mut bytes = before.to_vec();
        for i in ops {
            log[i].apply(&mut bytes);
        }
        bytes
    };
    let n = log.len();
    let mut states = 0;
    for k in 0..=n {
        let kind = if k == n { Kind::Complete } else { Kind::Cut };
        let label = format!("{what}: cut after {k} of {n} changes");
        judge_with(replay(&mut (0..k)), parents, want, kind, &label, also);
        states += 1;
    }
    for (k, change) in log.iter().enumerate() {
        for upto in change.tear_points(4) {
            let mut state = replay(&mut (0..k));
            change.apply_torn_at(&mut state, upto);
            let label = format!("{what}: change {k} torn at file offset {upto}");
            judge_with(state, parents, want, Kind::Cut, &label, also);
            states += 1;
        }
    }
    // Power loss: up to a sync, then any subset of the next window.
    let mut start = 0;
    for sync in (0..n).filter(|&i| matches!(log[i], Mutation::Sync)) {
        let window: Vec<usize> = (start..sync).collect();
        for mask in power_loss_subsets(window.len(), 5, 12) {
            let mut kept = (0..start).chain(
                window
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| mask & (1u64 << bit) != 0)
                    .map(|(_, &i)| i),
            );
            let label = format!(
                "{what}: power loss before the sync at change {sync}, keeping {mask:#b} of {window:?}"
            );
            judge_with(
                replay(&mut kept),
                parents,
                want,
                Kind::PowerLoss,
                &label,
                also,
            );
            states += 1;
        }
        start = sync + 1;
    }
    states
}

/// The operation again with a fault planned at each write, sync and cut
/// it made; after a failure, once more on what survived.
fn faults(
    what: &str,
    before: &[u8],
    parents: &Parents,
    want: &Contents,
    op: Operation<'_>,
    also: &[Rule],
    covered: &mut Covered,
) {
    for (op_kind, n) in [
        (Op::Write, covered.writes),
        (Op::Sync, covered.syncs),
        (Op::SetLen, covered.set_lens),
    ] {
        let faults: &[Fault] = match op_kind {
            Op::Write => &[
                Fault::Eio,
                Fault::NoSpace,
                Fault::Tear { keep: 512 },
                Fault::Stop,
            ],
            _ => &[Fault::Eio, Fault::Stop],
        };
        for nth in 0..n {
            for &fault in faults {
                let storage = FaultStorage::from_bytes(before.to_vec());
                storage.plan(op_kind, nth, fault);
                let ok = op(&storage, parents);
                let label =
                    format!("{what}: {fault:?} at {op_kind:?} #{nth} (reported success: {ok})");
                covered.fault_runs += 1;
                if ok {
                    covered.fault_successes += 1;
                    judge_with(
                        storage.durable(),
                        parents,
                        want,
                        Kind::Complete,
                        &label,
                        also,
                    );
                    continue;
                }
                let seen = format!("{label}, seen");
                judge_with(storage.bytes(), parents, want, Kind::Seen, &seen, also);
                let durable = storage.durable();
                let label_d = format!("{label}, durable");
                judge_with(
                    durable.clone(),
                    parents,
                    want,
                    Kind::Durable,
                    &label_d,
                    also,
                );
                // Run again on what survived, as a user would.
                let again = FaultStorage::from_bytes(durable);
                assert!(op(&again, parents), "{label}: running it again fails");
                let label_a = format!("{label}, run again");
                judge_with(
                    again.durable(),
                    parents,
                    want,
                    Kind::Complete,
                    &label_a,
                    also,
                );
                covered.states += 3;
            }
        }
    }
}

/// Guest bytes of a whole image held in `bytes`, read with the parent it
/// names.
pub fn read_disk(bytes: Vec<u8>, parents: &Parents) -> Vec<u8> {
    let mut img =
        open_with_parent(Box::new(MemStorage::from_bytes(bytes)), parents, false).expect("opens");
    let mut out = vec![0u8; img.size() as usize];
    img.read_at(0, &mut out).expect("reads");
    out
}

/// The rules the checker reports for the image in `bytes`.
pub fn rules_in(bytes: &[u8]) -> Vec<Rule> {
    let mem = MemStorage::from_bytes(bytes.to_vec());
    let report = check_storage(&mem, "image.vhd", &CheckOptions::new());
    report.findings.iter().map(|f| f.finding.rule).collect()
}

/// The rule IDs the checker reports for the image in `bytes`.
pub fn rules_of(bytes: Vec<u8>) -> Vec<&'static str> {
    let mem = MemStorage::from_bytes(bytes);
    let report = check_storage(&mem, "image.vhd", &CheckOptions::new());
    let mut ids: Vec<&'static str> = report
        .findings
        .iter()
        .map(|f| f.finding.rule.id())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The directory of the conformance corpus.
pub fn corpora() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora")
}

/// The files under `root/rel`, recursively, as paths relative to `root`.
fn walk(root: &std::path::Path, rel: &str, out: &mut Vec<String>) {
    for e in std::fs::read_dir(root.join(rel)).expect("a corpus directory") {
        let e = e.expect("an entry");
        let name = format!("{rel}/{}", e.file_name().to_string_lossy());
        if e.file_type().expect("a file type").is_dir() {
            walk(root, &name, out);
        } else {
            out.push(name);
        }
    }
}

/// A private copy of a corpus case (the case's directory for a chain, the
/// one file otherwise) in a fresh temporary directory, with every `.gz`
/// unpacked (runs of zeros become holes). Returns the directory and the
/// path of the case's image in it.
pub fn corpus_copy(file: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let unpacked = |name: &str| name.strip_suffix(".gz").unwrap_or(name).to_string();
    let src = corpora();
    let mut files = Vec::new();
    match file.split_once('/') {
        Some((dir, _)) => walk(&src, dir, &mut files),
        None => files.push(file.to_string()),
    }
    let temp = tempfile::tempdir().expect("a temporary directory");
    for f in &files {
        let to = temp.path().join(unpacked(f));
        std::fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
        let input = std::fs::File::open(src.join(f)).expect("a corpus file");
        let gz = std::path::Path::new(f)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
        let mut reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::GzDecoder::new(input))
        } else {
            Box::new(input)
        };
        let mut out = std::fs::File::create(&to).expect("a copy");
        let mut buf = vec![0u8; 1 << 16];
        let mut len = 0u64;
        loop {
            let n = reader.read(&mut buf).expect("reading a corpus file");
            if n == 0 {
                break;
            }
            if buf[..n].iter().all(|&b| b == 0) {
                out.seek(SeekFrom::Current(i64::try_from(n).expect("a chunk fits")))
                    .expect("seek");
            } else {
                out.write_all(&buf[..n]).expect("write");
            }
            len += n as u64;
        }
        out.set_len(len).expect("set_len");
    }
    let path = temp.path().join(unpacked(file));
    (temp, path)
}

/// SHA-256 of the guest contents of an open image, in hex.
pub fn contents_sha256(img: &mut Image) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let size = img.size();
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(buf.len() as u64) as usize;
        img.read_at(pos, &mut buf[..n]).expect("reading the disk");
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    hasher.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
