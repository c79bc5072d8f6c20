//! `vhd write` killed with SIGKILL at chosen and at random moments while it
//! copies a pipe into an image: afterwards the image opens, and every
//! sector of the written range holds its old contents or its new ones,
//! never a mix (issue 11, item 3). Old contents are never zeros, so a
//! sector that lost its new data cannot pass for old.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;
use vhdref::{CreateOptions, DiskType, Image, OpenOptions};

const SECTOR: usize = 512;
const MIB: usize = 1 << 20;
/// Where the written range starts: inside a sector, so every piece
/// boundary counted from it would fall inside a sector too.
const OFFSET: usize = 100;
/// How much is written: several pieces, over allocated and unallocated
/// blocks of 1 MiB.
const LEN: usize = 3 * MIB + 1000;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(seed)
                .wrapping_add((i / SECTOR) as u8)
                | 1
        })
        .collect()
}

/// The kinds of image written to, each prepared with old contents that are
/// not zeros in some blocks and read-from-parent in others.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Fixed,
    Dynamic,
    Child,
}

/// Makes the pristine image (and parent) in `dir`; returns the image path
/// and the guest bytes it reads as.
fn prepare(dir: &Path, kind: Kind) -> (PathBuf, Vec<u8>) {
    let size = 8 * MIB as u64;
    let old = pattern(size as usize, 7);
    let image = dir.join("img.vhd");
    match kind {
        Kind::Fixed | Kind::Dynamic => {
            let t = if matches!(kind, Kind::Fixed) {
                DiskType::Fixed
            } else {
                DiskType::Dynamic
            };
            let mut img = CreateOptions::new(t, size)
                .block_size(MIB as u32)
                .create(&image)
                .unwrap();
            // Blocks 0 and 1 hold old data; 2 stays unallocated (zeros in a
            // dynamic image), and block 3 holds one old sector.
            let mut disk = vec![0u8; size as usize];
            for range in [0..2 * MIB, 3 * MIB + 4096..3 * MIB + 4608] {
                img.write_at(range.start as u64, &old[range.clone()])
                    .unwrap();
                disk[range.clone()].copy_from_slice(&old[range]);
            }
            img.close().unwrap();
            (image, disk)
        }
        Kind::Child => {
            let base = dir.join("base.vhd");
            let mut parent = CreateOptions::new(DiskType::Dynamic, size)
                .block_size(MIB as u32)
                .create(&base)
                .unwrap();
            parent.write_at(0, &old).unwrap();
            parent.close().unwrap();
            let mut child = CreateOptions::differencing(&base)
                .block_size(MIB as u32)
                .create(&image)
                .unwrap();
            let mut disk = old.clone();
            let own = pattern(MIB, 77);
            child.write_at(MIB as u64, &own).unwrap();
            disk[MIB..2 * MIB].copy_from_slice(&own);
            child.close().unwrap();
            (image, disk)
        }
    }
}

/// Starts `vhd write IMG --offset OFFSET` with a pipe on stdin.
fn start_writer(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vhd"))
        .args(["write", "img.vhd", "--offset", &OFFSET.to_string()])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vhd runs")
}

/// Feeds `data` into the child's stdin in `pieces` (lengths), pausing
/// `pause` after each; tells `sent` after each piece. Stops quietly when
/// the pipe closes (the child was killed).
fn feed(
    child: &mut Child,
    data: Vec<u8>,
    pieces: Vec<usize>,
    pause: Duration,
) -> (mpsc::Receiver<usize>, std::thread::JoinHandle<()>) {
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut at = 0;
        for len in pieces {
            let end = (at + len).min(data.len());
            if stdin.write_all(&data[at..end]).is_err() {
                return;
            }
            at = end;
            let _ = tx.send(at);
            std::thread::sleep(pause);
        }
    });
    (rx, handle)
}

/// Every sector of the written range holds its old or its new contents.
fn judge(dir: &Path, kind: Kind, old: &[u8], new: &[u8], what: &str) {
    let mut img = match kind {
        Kind::Child => OpenOptions::new()
            .parent(dir.join("base.vhd"))
            .open(dir.join("img.vhd")),
        _ => Image::open(dir.join("img.vhd")),
    }
    .unwrap_or_else(|e| panic!("{what}: the image does not open after the kill: {e}"));
    let first = OFFSET / SECTOR;
    let last = (OFFSET + LEN).div_ceil(SECTOR);
    let mut after = old.to_vec();
    after[OFFSET..OFFSET + LEN].copy_from_slice(new);
    let mut sector = vec![0u8; SECTOR];
    for s in first..last {
        img.read_at((s * SECTOR) as u64, &mut sector).unwrap();
        let range = s * SECTOR..(s + 1) * SECTOR;
        assert!(
            sector == old[range.clone()] || sector == after[range.clone()],
            "{what}: sector {s} is neither old nor new (torn)"
        );
    }
}

/// Resets the work directory from the pristine copy.
fn reset(pristine: &Path, work: &Path) {
    for name in ["img.vhd", "base.vhd"] {
        let from = pristine.join(name);
        if from.exists() {
            std::fs::copy(&from, work.join(name)).unwrap();
        }
    }
}

fn run_kills(kind: Kind) {
    let pristine = TempDir::new().unwrap();
    let (_, old) = prepare(pristine.path(), kind);
    let new = pattern(LEN, 200);
    let work = TempDir::new().unwrap();
    let mut rng = 0x5EED_u64 ^ kind as u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // First the moment that tore sectors before: right after exactly one
    // MiB of input has arrived (a piece boundary counted from OFFSET), with
    // time for the tool to write it; then random moments.
    for round in 0..16u64 {
        reset(pristine.path(), work.path());
        let mut child = start_writer(work.path());
        let pieces: Vec<usize> = if round < 4 {
            vec![MIB, LEN]
        } else {
            (0..64).map(|_| 1 + next(300_000) as usize).collect()
        };
        let (sent, feeder) = feed(&mut child, new.clone(), pieces, Duration::from_millis(40));
        if round < 4 {
            let _ = sent.recv_timeout(Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(20 + 5 * round));
        } else {
            std::thread::sleep(Duration::from_millis(next(120)));
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = feeder.join();
        judge(
            work.path(),
            kind,
            &old,
            &new,
            &format!("{kind:?} round {round}"),
        );
    }
}

#[test]
fn a_killed_write_into_a_fixed_image_leaves_every_sector_old_or_new() {
    run_kills(Kind::Fixed);
}

#[test]
fn a_killed_write_into_a_dynamic_image_leaves_every_sector_old_or_new() {
    run_kills(Kind::Dynamic);
}

#[test]
fn a_killed_write_into_a_differencing_child_leaves_every_sector_old_or_new() {
    run_kills(Kind::Child);
}
