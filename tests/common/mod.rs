//! Helpers shared by the interop tests (`tests/interop_*.rs`): temporary
//! directories, seeded random data, running peer tools, and a small set of
//! images made with vhdref whose guest contents are known exactly.
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod skip;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use vhdref::{CreateOptions, DiskType, Image, SizeRule};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;
pub const SECTOR: u64 = 512;

// ---------------------------------------------------------------------------
// Random data

/// A tiny xorshift64* generator: deterministic test data from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Zero is the one state xorshift never leaves; mix the seed first.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// `n` random bytes, none of them zero, so that every written byte
    /// differs from what an unwritten disk reads.
    pub fn nonzero_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        for b in &mut v {
            if *b == 0 {
                *b = 0x5a;
            }
        }
        v
    }
}

/// Puts `count` runs of random bytes (1..=`max_len` long) at random places
/// of `buf` (at unaligned offsets), and returns the runs' `(offset, len)`.
pub fn scatter_random(
    buf: &mut [u8],
    rng: &mut Rng,
    count: usize,
    max_len: u64,
) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    let size = buf.len() as u64;
    for _ in 0..count {
        let len = rng.between(1, max_len.min(size));
        let off = rng.below(size - len + 1);
        let data = rng.nonzero_bytes(len as usize);
        buf[off as usize..(off + len) as usize].copy_from_slice(&data);
        runs.push((off, len));
    }
    runs
}

// ---------------------------------------------------------------------------
// Files and comparisons

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vhdref-interop-")
        .tempdir()
        .expect("creating a temporary directory")
}

/// Asserts that two byte strings are equal, reporting the lengths and the
/// first differing offset instead of dumping megabytes.
#[track_caller]
pub fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(actual.len().min(expected.len()));
    let show = |v: &[u8]| {
        let end = (first + 16).min(v.len());
        v.get(first..end)
            .map(|s| format!("{s:02x?}"))
            .unwrap_or_default()
    };
    panic!(
        "{what}: contents differ: lengths {} (actual) vs {} (expected), first difference at byte {first}: {} vs {}",
        actual.len(),
        expected.len(),
        show(actual),
        show(expected)
    );
}

/// `data` padded with zeros (or cut) to `len` bytes.
pub fn padded(data: &[u8], len: u64) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(len as usize, 0);
    v
}

/// Every guest byte of the image at `path`, read with vhdref (parents
/// resolved through the locators).
pub fn read_image(path: &Path) -> Vec<u8> {
    let mut img =
        Image::open(path).unwrap_or_else(|e| panic!("vhdref cannot open {}: {e}", path.display()));
    read_all(&mut img)
}

/// What a killed writer must leave, judged from outside: `vhd check`
/// (the binary at `vhd`) finds no error in `image`, every sector of the
/// disk reads its `old` or its `new` contents, and every slot of `slot`
/// bytes listed in `durable` (made durable by a flush or an fsync) reads
/// new. `what` names the round in failures.
pub fn assert_old_or_new_after_kill(
    vhd: &str,
    image: &Path,
    (old, new): (&[u8], &[u8]),
    (slot, durable): (u64, &[u64]),
    what: &str,
) {
    let o = run(Command::new(vhd).arg("check").arg(image));
    assert!(
        matches!(o.status.code(), Some(0 | 3)),
        "{what}: vhd check: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let got = read_image(image);
    assert_eq!(got.len(), new.len(), "{what}: the disk size changed");
    for (sector, ((g, o), n)) in got
        .chunks(512)
        .zip(old.chunks(512))
        .zip(new.chunks(512))
        .enumerate()
    {
        assert!(
            g == o || g == n,
            "{what}: sector {sector} is neither old nor new"
        );
    }
    for &s in durable {
        let r = (s * slot) as usize..((s + 1) * slot) as usize;
        assert!(got[r.clone()] == new[r], "{what}: durable slot {s} is lost");
    }
}

/// Every guest byte of an open image, read in 1 MiB pieces.
pub fn read_all(img: &mut Image) -> Vec<u8> {
    let size = img.size();
    let mut out = vec![0u8; size as usize];
    for (i, chunk) in out.chunks_mut(MIB as usize).enumerate() {
        img.read_at(i as u64 * MIB, chunk)
            .unwrap_or_else(|e| panic!("reading {} at {}: {e}", img.name(), i as u64 * MIB));
    }
    out
}

/// Writes `count` runs of random bytes at random unaligned places of `img`
/// (inside `range` of the guest disk) and applies them to `expected`.
pub fn write_random(
    img: &mut Image,
    expected: &mut [u8],
    rng: &mut Rng,
    count: usize,
    max_len: u64,
    range: std::ops::Range<u64>,
) {
    let span = range.end - range.start;
    for _ in 0..count {
        let len = rng.between(1, max_len.min(span));
        let off = range.start + rng.below(span - len + 1);
        let data = rng.nonzero_bytes(len as usize);
        write_at(img, expected, off, &data);
    }
}

/// Writes `data` at guest `offset` of `img` and of `expected`.
pub fn write_at(img: &mut Image, expected: &mut [u8], offset: u64, data: &[u8]) {
    img.write_at(offset, data).unwrap_or_else(|e| {
        panic!(
            "writing {} bytes at {offset} of {}: {e}",
            data.len(),
            img.name()
        )
    });
    expected[offset as usize..offset as usize + data.len()].copy_from_slice(data);
}

// ---------------------------------------------------------------------------
// Running tools

/// Runs the tests of one binary one at a time: call first in every test
/// and keep the guard. vhdref locks image files with `flock`, and a process
/// spawned by another test thread briefly holds a duplicate of every open
/// descriptor (between fork and exec), lock included; reopening an image
/// just closed could then fail as "in use" at random.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `$VHDREF_VENV` (default `/opt/vhdref-venv`).
pub fn venv_dir() -> PathBuf {
    std::env::var_os("VHDREF_VENV").map_or_else(|| PathBuf::from("/opt/vhdref-venv"), PathBuf::from)
}

/// The venv's Python (libvhdi-python, dissect.hypervisor, pyvhd).
pub fn venv_python() -> PathBuf {
    venv_dir().join("bin/python")
}

/// The Debian Python, the only one that imports the system pyvhdi.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A peer tool the interop tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    QemuImg,
    QemuIo,
    SevenZip,
    Vhdiinfo,
    /// pyvhdi from Debian's python3-libvhdi (2021), under `/usr/bin/python3`.
    PyvhdiSystem,
    /// pyvhdi from the `libvhdi-python` package (2026), in the venv.
    PyvhdiVenv,
    Pyvhd,
    Dissect,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::QemuImg => "qemu-img",
            Peer::QemuIo => "qemu-io",
            Peer::SevenZip => "7zz",
            Peer::Vhdiinfo => "vhdiinfo",
            Peer::PyvhdiSystem => "pyvhdi (system /usr/bin/python3)",
            Peer::PyvhdiVenv => "pyvhdi (libvhdi-python in $VHDREF_VENV)",
            Peer::Pyvhd => "pyvhd ($VHDREF_VENV)",
            Peer::Dissect => "dissect.hypervisor ($VHDREF_VENV)",
        }
    }

    /// The Python that runs this peer, for the Python peers.
    pub fn python(self) -> PathBuf {
        match self {
            Peer::PyvhdiSystem => PathBuf::from(SYSTEM_PYTHON),
            _ => venv_python(),
        }
    }

    fn probe(self) -> Command {
        let python = |module: &str| {
            let mut c = Command::new(self.python());
            c.args(["-c", &format!("import {module}")]);
            c
        };
        match self {
            Peer::QemuImg => with_args("qemu-img", ["--version"]),
            Peer::QemuIo => with_args("qemu-io", ["--version"]),
            // 7zz with no command prints its help and exits 0.
            Peer::SevenZip => with_args("7zz", ["i"]),
            Peer::Vhdiinfo => with_args("vhdiinfo", ["-V"]),
            Peer::PyvhdiSystem | Peer::PyvhdiVenv => python("pyvhdi"),
            Peer::Pyvhd => python("pyvhd"),
            Peer::Dissect => python("dissect.hypervisor.disk.vhd"),
        }
    }
}

fn with_args<const N: usize>(program: &str, args: [&str; N]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Whether `peer` can run here. If not, reports the skip (see
/// [`skip::skip`]: `SKIP: <test>: <peer>: <why>` on stderr, or a panic under
/// `VHDREF_REQUIRE_PEERS=1`) and returns false; the caller then returns
/// without asserting anything.
#[track_caller]
pub fn peer_available(peer: Peer) -> bool {
    static PROBES: OnceLock<Mutex<HashMap<Peer, Result<(), String>>>> = OnceLock::new();
    let probes = PROBES.get_or_init(|| Mutex::new(HashMap::new()));
    let result = {
        let mut map = probes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(peer).or_insert_with(|| probe(peer)).clone()
    };
    match result {
        Ok(()) => true,
        Err(why) => {
            skip::skip(&format!("{}: {why}", peer.name()));
            false
        }
    }
}

fn probe(peer: Peer) -> Result<(), String> {
    let mut cmd = peer.probe();
    let shown = describe(&cmd);
    match cmd.stdin(Stdio::null()).output() {
        Err(e) => Err(format!("`{shown}` could not run: {e}")),
        Ok(out) if !out.status.success() => Err(format!(
            "`{shown}` failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

/// The command line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let _ = write!(s, " {}", a.to_string_lossy());
    }
    s
}

/// Runs `cmd` (stdin closed) and returns its output; panics only if it
/// cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    let shown = describe(cmd);
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("`{shown}` could not run: {e}"))
}

/// Runs `cmd` and asserts that it exits 0.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "`{}` failed with {}\nstdout: {}\nstderr: {}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout)
            .chars()
            .take(2000)
            .collect::<String>(),
        String::from_utf8_lossy(&out.stderr)
            .chars()
            .take(2000)
            .collect::<String>()
    );
    out
}

/// A command with arguments given as anything path-like.
pub fn cmd<I, S>(program: impl AsRef<OsStr>, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Writes a helper script into `dir` and returns its path.
pub fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a helper script");
    path
}

/// A pyvhdi script: `reader.py CHUNK OUT IMAGE [PARENT [GRANDPARENT ...]]`
/// opens every image of the chain, attaches each parent with `set_parent`,
/// reads the whole media of the first in reads of CHUNK bytes at offsets
/// that are multiples of CHUNK, and writes it to OUT. It prints the media
/// size and the disk type code.
pub const PYVHDI_READER: &str = r#"import sys, pyvhdi
chunk, out, chain = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
files = []
for path in chain:
    f = pyvhdi.file()
    f.open(path)
    files.append(f)
# Attach from the bottom of the chain up: parent.set_parent(grandparent) first.
for child, parent in reversed(list(zip(files, files[1:]))):
    child.set_parent(parent)
f = files[0]
size = f.get_media_size()
with open(out, "wb") as o:
    off = 0
    while off < size:
        data = f.read_buffer_at_offset(min(chunk, size - off), off)
        if not data:
            sys.exit("short read at %d of %d" % (off, size))
        o.write(data)
        off += len(data)
print(size, f.disk_type)
"#;

/// The read size the interop tests give pyvhdi: 512 KiB, the smallest block
/// size vhdref creates, so that no read crosses a block boundary. (libvhdi
/// mishandles reads across the boundary of blocks under 2 MiB; the libvhdi
/// tests pin that separately.)
pub const PYVHDI_CHUNK: u64 = 512 * KIB;

/// Reads the guest bytes of `chain` (child first, then its parents) with
/// pyvhdi under `python`, in reads of `chunk` bytes. Returns (bytes, media
/// size, disk type code).
pub fn pyvhdi_read_chunked(
    python: &Path,
    dir: &Path,
    chain: &[&Path],
    chunk: u64,
) -> (Vec<u8>, u64, u32) {
    let script = write_script(dir, "pyvhdi_reader.py", PYVHDI_READER);
    let out_path = dir.join("pyvhdi_out.raw");
    let _ = std::fs::remove_file(&out_path);
    let mut c = Command::new(python);
    c.arg(&script)
        .arg(chunk.to_string())
        .arg(&out_path)
        .args(chain);
    let out = run_ok(&mut c);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut words = stdout.split_whitespace();
    let size: u64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .expect("media size printed");
    let disk_type: u32 = words
        .next()
        .and_then(|w| w.parse().ok())
        .expect("disk type printed");
    let bytes = std::fs::read(&out_path).expect("reading pyvhdi's output");
    std::fs::remove_file(&out_path).ok();
    (bytes, size, disk_type)
}

/// [`pyvhdi_read_chunked`] with [`PYVHDI_CHUNK`].
pub fn pyvhdi_read(python: &Path, dir: &Path, chain: &[&Path]) -> (Vec<u8>, u64, u32) {
    pyvhdi_read_chunked(python, dir, chain, PYVHDI_CHUNK)
}

// ---------------------------------------------------------------------------
// Images made with vhdref, with known contents

/// One image made with vhdref, and what it must read as.
#[derive(Debug)]
pub struct Case {
    /// Short name for messages.
    pub name: &'static str,
    /// The image and then its parents (each in the same directory).
    pub chain: Vec<PathBuf>,
    /// The guest bytes the image must read as (`current_size` long).
    pub expected: Vec<u8>,
    pub disk_type: DiskType,
}

impl Case {
    pub fn path(&self) -> &Path {
        &self.chain[0]
    }

    pub fn chain_refs(&self) -> Vec<&Path> {
        self.chain.iter().map(PathBuf::as_path).collect()
    }

    /// A case: its files (top first), the bytes it must read as, its type.
    pub fn new(
        name: &'static str,
        chain: Vec<PathBuf>,
        expected: Vec<u8>,
        disk_type: DiskType,
    ) -> Case {
        Case {
            name,
            chain,
            expected,
            disk_type,
        }
    }
}

/// Creates a fixed or dynamic image at `path`, writes `count` random runs
/// into it (inside `range`, or everywhere) and returns its expected bytes.
pub fn make_base(
    path: &Path,
    options: &CreateOptions,
    rng: &mut Rng,
    count: usize,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let mut img = options
        .create(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let size = img.size();
    let mut expected = vec![0u8; size as usize];
    write_random(
        &mut img,
        &mut expected,
        rng,
        count,
        300 * KIB,
        range.unwrap_or(0..size),
    );
    img.close().expect("closing a new image");
    expected
}

/// Fills the guest range `range` of the image at `path` with random bytes
/// and applies them to `expected`.
pub fn fill_random(path: &Path, expected: &mut [u8], rng: &mut Rng, range: std::ops::Range<u64>) {
    let mut img =
        Image::open_rw(path).unwrap_or_else(|e| panic!("opening {} to write: {e}", path.display()));
    let data = rng.nonzero_bytes((range.end - range.start) as usize);
    write_at(&mut img, expected, range.start, &data);
    img.close().expect("closing after a fill");
}

/// How [`make_child`] writes into a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildWrites {
    /// A few sectors here and there, a partial sector (merged with the
    /// parent's bytes), a whole block, a write across a block boundary and
    /// small random writes: bitmap bytes end up partly set.
    Sectors,
    /// Only whole 4 KiB pages at 4 KiB offsets (what most guests write):
    /// bitmaps are partly set, but always whole bytes of them.
    Pages,
}

/// Creates a differencing child of `parent` at `path` and writes into it;
/// returns the child's expected bytes (the parent's, with the writes).
pub fn make_child(
    path: &Path,
    parent: &Path,
    parent_expected: &[u8],
    rng: &mut Rng,
    writes: ChildWrites,
) -> Vec<u8> {
    let mut img = CreateOptions::differencing(parent)
        .create(path)
        .unwrap_or_else(|e| panic!("creating the child {}: {e}", path.display()));
    let size = img.size();
    assert_eq!(
        size,
        parent_expected.len() as u64,
        "child size is the parent's"
    );
    let block = u64::from(
        img.block_size()
            .expect("a differencing image has a block size"),
    );
    let mut expected = parent_expected.to_vec();
    let mut put = |img: &mut Image, offset: u64, len: u64, rng: &mut Rng| {
        if offset + len <= size {
            write_at(img, &mut expected, offset, &rng.nonzero_bytes(len as usize));
        }
    };
    match writes {
        ChildWrites::Sectors => {
            // Three sectors inside block 0: its bitmap gets bits 5..8 only.
            put(&mut img, 5 * SECTOR, 3 * SECTOR, rng);
            // One byte in the middle of a sector of block 1.
            put(&mut img, block + 700, 1, rng);
            // A whole block.
            put(&mut img, 2 * block, block, rng);
            // Across the boundary of blocks 0 and 1, unaligned at both ends.
            put(&mut img, block - 1000, 2100, rng);
            // The last sector of the disk, partly.
            put(&mut img, size - 300, 200, rng);
            for _ in 0..4 {
                let len = rng.between(1, 3 * SECTOR);
                let off = rng.below(size - len + 1);
                put(&mut img, off, len, rng);
            }
        }
        ChildWrites::Pages => {
            const PAGE: u64 = 4096;
            put(&mut img, 16 * PAGE, 2 * PAGE, rng);
            put(&mut img, block + 3 * PAGE, PAGE, rng);
            put(&mut img, 2 * block, block, rng);
            put(&mut img, block - PAGE, 2 * PAGE, rng);
            put(&mut img, size / PAGE * PAGE - PAGE, PAGE, rng);
            for _ in 0..4 {
                let pages = rng.between(1, 3);
                let off = rng.below(size / PAGE - pages + 1) * PAGE;
                put(&mut img, off, pages * PAGE, rng);
            }
        }
    }
    img.close().expect("closing the child");
    expected
}

/// The images most interop tests read: fixed, dynamic (several block sizes,
/// both size rules), and differencing children (of a dynamic parent, of a
/// fixed parent, a child of a child, and a child written in whole 4 KiB
/// pages), each chain in its own directory under
/// `root`. Small (at most 12 MiB each) and deterministic for a seed.
#[allow(clippy::too_many_lines)]
pub fn our_images(root: &Path, seed: u64) -> Vec<Case> {
    let mut rng = Rng::new(seed);
    let mut cases = Vec::new();
    let subdir = |name: &str| {
        let d = root.join(name);
        std::fs::create_dir_all(&d).expect("creating a case directory");
        d
    };

    let d = subdir("fixed");
    let p = d.join("fixed.vhd");
    let expected = make_base(
        &p,
        &CreateOptions::new(DiskType::Fixed, 5 * MIB + 3 * SECTOR),
        &mut rng,
        8,
        None,
    );
    cases.push(Case::new("fixed", vec![p], expected, DiskType::Fixed));

    let d = subdir("fixed-chs");
    let p = d.join("fixed-chs.vhd");
    let opts = CreateOptions::new(DiskType::Fixed, 3_000_001).size_rule(SizeRule::Chs);
    let expected = make_base(&p, &opts, &mut rng, 6, None);
    cases.push(Case::new("fixed-chs", vec![p], expected, DiskType::Fixed));

    // 2 MiB blocks; block 4 (8..10 MiB) stays unallocated.
    let d = subdir("dynamic");
    let p = d.join("dynamic.vhd");
    let size = 11 * MIB + 5 * SECTOR;
    let mut img = CreateOptions::new(DiskType::Dynamic, size)
        .create(&p)
        .expect("creating dynamic.vhd");
    let mut expected = vec![0u8; size as usize];
    write_random(&mut img, &mut expected, &mut rng, 6, 200 * KIB, 0..3 * MIB);
    write_at(&mut img, &mut expected, 1000, &rng.nonzero_bytes(3000));
    write_at(
        &mut img,
        &mut expected,
        2 * MIB + 5000,
        &rng.nonzero_bytes(3000),
    );
    write_at(
        &mut img,
        &mut expected,
        6 * MIB - 100,
        &rng.nonzero_bytes(300),
    );
    write_at(
        &mut img,
        &mut expected,
        size - 1000,
        &rng.nonzero_bytes(1000),
    );
    write_at(&mut img, &mut expected, 10 * MIB + 3, &rng.nonzero_bytes(5));
    assert_eq!(
        img.block_counts(),
        Some((6, 5)),
        "dynamic.vhd: 6 blocks, block 4 unallocated"
    );
    img.close().expect("closing dynamic.vhd");
    cases.push(Case::new("dynamic", vec![p], expected, DiskType::Dynamic));

    let d = subdir("dynamic-512k");
    let p = d.join("dynamic-512k.vhd");
    let opts = CreateOptions::new(DiskType::Dynamic, 3_000_001)
        .size_rule(SizeRule::Chs)
        .block_size(512 * KIB as u32);
    let expected = make_base(&p, &opts, &mut rng, 6, None);
    cases.push(Case::new(
        "dynamic-512k",
        vec![p],
        expected,
        DiskType::Dynamic,
    ));

    // 8 MiB blocks over 12 MiB: the last block reaches past the disk.
    let d = subdir("dynamic-8m");
    let p = d.join("dynamic-8m.vhd");
    let opts = CreateOptions::new(DiskType::Dynamic, 12 * MIB).block_size(8 * MIB as u32);
    let expected = make_base(&p, &opts, &mut rng, 6, None);
    cases.push(Case::new(
        "dynamic-8m",
        vec![p],
        expected,
        DiskType::Dynamic,
    ));

    // A dynamic parent whose block 3 (6..8 MiB) is unallocated, its child,
    // and a child of the child.
    let d = subdir("chain");
    let parent = d.join("parent.vhd");
    let mut parent_expected = make_base(
        &parent,
        &CreateOptions::new(DiskType::Dynamic, 8 * MIB),
        &mut rng,
        8,
        Some(0..6 * MIB),
    );
    // Data under the first sectors of blocks 0 and 1, which the children
    // write only partly.
    fill_random(&parent, &mut parent_expected, &mut rng, 0..64 * KIB);
    fill_random(
        &parent,
        &mut parent_expected,
        &mut rng,
        2 * MIB..2 * MIB + 64 * KIB,
    );
    let child = d.join("child.vhd");
    let child_expected = make_child(
        &child,
        &parent,
        &parent_expected,
        &mut rng,
        ChildWrites::Sectors,
    );
    cases.push(Case::new(
        "child-of-dynamic",
        vec![child.clone(), parent.clone()],
        child_expected.clone(),
        DiskType::Differencing,
    ));
    let grandchild = d.join("grandchild.vhd");
    let grandchild_expected = make_child(
        &grandchild,
        &child,
        &child_expected,
        &mut rng,
        ChildWrites::Sectors,
    );
    cases.push(Case::new(
        "child-of-child",
        vec![grandchild, child, parent.clone()],
        grandchild_expected,
        DiskType::Differencing,
    ));
    let paged = d.join("paged.vhd");
    let expected = make_child(
        &paged,
        &parent,
        &parent_expected,
        &mut rng,
        ChildWrites::Pages,
    );
    cases.push(Case::new(
        "child-with-pages",
        vec![paged, parent],
        expected,
        DiskType::Differencing,
    ));

    let d = subdir("fixed-parent");
    let parent = d.join("base.vhd");
    let mut parent_expected = make_base(
        &parent,
        &CreateOptions::new(DiskType::Fixed, 6 * MIB),
        &mut rng,
        0,
        None,
    );
    fill_random(&parent, &mut parent_expected, &mut rng, 0..6 * MIB);
    let child = d.join("overlay.vhd");
    let expected = make_child(
        &child,
        &parent,
        &parent_expected,
        &mut rng,
        ChildWrites::Sectors,
    );
    cases.push(Case::new(
        "child-of-fixed",
        vec![child, parent],
        expected,
        DiskType::Differencing,
    ));

    // What `convert` writes: a raw disk with holes and data into a dynamic
    // image (1 MiB blocks) and a fixed one.
    let d = subdir("converted");
    let raw = d.join("source.raw");
    let mut source = vec![0u8; (5 * MIB + 7 * SECTOR) as usize];
    for range in [0..3000, 1_500_000..1_600_000, 4_000_000..5_000_000] {
        rng.fill(&mut source[range]);
    }
    std::fs::write(&raw, &source).expect("writing the raw source");
    for (name, disk_type) in [
        ("converted-dynamic", DiskType::Dynamic),
        ("converted-fixed", DiskType::Fixed),
    ] {
        let path = d.join(format!("{name}.vhd"));
        let mut src = vhdref::convert::RawSource::new(
            Box::new(vhdref::storage::FileStorage::open(&raw, false).expect("raw source")),
            "source.raw",
        )
        .expect("raw source");
        let mut out = CreateOptions::new(disk_type, source.len() as u64)
            .block_size(1 << 20)
            .create(&path)
            .expect("convert output");
        let size = out.size();
        vhdref::convert::copy(&mut src, &mut out, size, &mut |_| {})
            .map_err(|e| e.error)
            .expect("convert");
        out.close().expect("closing the convert output");
        cases.push(Case::new(name, vec![path], source.clone(), disk_type));
    }

    // What `commit` leaves: a dynamic parent after a child written a few
    // sectors at a time was merged into it.
    let d = subdir("committed");
    let parent = d.join("committed.vhd");
    let parent_expected = make_base(
        &parent,
        &CreateOptions::new(DiskType::Dynamic, 4 * MIB).block_size(512 * 1024),
        &mut rng,
        4,
        Some(0..3 * MIB),
    );
    let child = d.join("top.vhd");
    let expected = make_child(
        &child,
        &parent,
        &parent_expected,
        &mut rng,
        ChildWrites::Sectors,
    );
    Image::commit(&child, vhdref::OpenOptions::new()).expect("commit");
    cases.push(Case::new(
        "committed",
        vec![parent],
        expected,
        DiskType::Dynamic,
    ));

    // vhdref itself must read every case as expected, or the peers'
    // verdicts mean nothing.
    for case in &cases {
        assert_same_bytes(
            &read_image(case.path()),
            &case.expected,
            &format!("vhdref reading {}", case.name),
        );
    }
    cases
}

/// `dissect_reader.py OUT IMAGE`: reads the whole disk with dissect's VHD
/// class and writes it to OUT; prints its size.
const DISSECT_READER: &str = r#"import sys
from dissect.hypervisor.disk.vhd import VHD
out, image = sys.argv[1], sys.argv[2]
with open(image, "rb") as fh, open(out, "wb") as o:
    v = VHD(fh)
    left = v.size
    while left > 0:
        data = v.read(min(left, 1 << 22))
        if not data:
            sys.exit("short read with %d bytes left" % left)
        o.write(data)
        left -= len(data)
print(v.size)
"#;

pub fn dissect_read(dir: &Path, image: &Path) -> (Vec<u8>, u64) {
    let script = write_script(dir, "dissect_reader.py", DISSECT_READER);
    let out_path = dir.join("dissect_out.raw");
    let out = run_ok(&mut cmd(
        venv_python(),
        [script.as_os_str(), out_path.as_os_str(), image.as_os_str()],
    ));
    let size = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("dissect prints the size");
    let bytes = std::fs::read(&out_path).expect("reading dissect's output");
    std::fs::remove_file(&out_path).ok();
    (bytes, size)
}

/// `7zz e -so IMAGE`, run in the image's directory (where 7-Zip looks for
/// parents): the guest bytes on stdout.
pub fn sevenzip_read(image: &Path) -> Output {
    let dir = image.parent().expect("image in a directory");
    run(cmd("7zz", ["e".as_ref(), "-so".as_ref(), image.as_os_str()]).current_dir(dir))
}

/// `qemu-img convert -f vpc -O raw IMAGE OUT`: the guest bytes as QEMU
/// reads them (it has no differencing support).
pub fn qemu_read(dir: &Path, image: &Path) -> Vec<u8> {
    let out = dir.join("qemu_out.raw");
    run_ok(&mut cmd(
        "qemu-img",
        [
            "convert".as_ref(),
            "-f".as_ref(),
            "vpc".as_ref(),
            "-O".as_ref(),
            "raw".as_ref(),
            image.as_os_str(),
            out.as_os_str(),
        ],
    ));
    let bytes = std::fs::read(&out).expect("reading qemu-img's output");
    std::fs::remove_file(&out).ok();
    bytes
}

/// A dynamic image of `size` bytes at `path` whose first `filled` bytes
/// hold a pattern that is never zero (so old contents show), the rest
/// unallocated (writes there allocate blocks, whose BAT entries only a
/// flush makes durable); returns the guest contents.
pub fn prefilled_part(path: &Path, size: u64, filled: u64) -> Vec<u8> {
    let mut img = CreateOptions::new(DiskType::Dynamic, size)
        .create(path)
        .expect("creating");
    let mut expected: Vec<u8> = (0..size).map(|i| (i / 512 % 251) as u8 + 1).collect();
    expected[filled as usize..].fill(0);
    img.write_at(0, &expected[..filled as usize])
        .expect("prefilling");
    img.close().expect("closing");
    expected
}
