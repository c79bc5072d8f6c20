//! `vhd mount` through FUSE, read by `cmp`, `dd` and Python's `os.lseek`,
//! and killed with -9 in the middle of writes. Where the kernel offers no
//! FUSE (no `/dev/fuse`, no `fusermount3`) the tests print `SKIP: <why>`
//! (and fail with `VHDREF_REQUIRE_PEERS=1`).
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{MIB, Rng, cmd, one_at_a_time, our_images, prefilled_part, run, run_ok, temp_dir};
use vhdref::{CreateOptions, DiskType};

const VHD: &str = env!("CARGO_BIN_EXE_vhd");

/// Whether FUSE mounts can work here; else SKIP (or fail when required).
fn fuse_available() -> bool {
    let why = if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse does not exist (the kernel offers no FUSE here)".to_string())
    } else if !Command::new("fusermount3")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
    {
        Some("fusermount3 does not run (Debian: fuse3)".to_string())
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            let required = std::env::var_os("VHDREF_REQUIRE_PEERS").is_some_and(|v| v == "1");
            assert!(!required, "FUSE: {why} (and VHDREF_REQUIRE_PEERS=1)");
            eprintln!("SKIP: FUSE: {why}");
            false
        }
    }
}

/// A `vhd mount` process, unmounted (lazily) and killed when dropped.
struct Mounted {
    child: Child,
    mountpoint: PathBuf,
    file: PathBuf,
}

impl Mounted {
    fn start(image: &Path, mountpoint: &Path, extra: &[&str]) -> Mounted {
        std::fs::create_dir_all(mountpoint).expect("creating the mount point");
        let mut child = Command::new(VHD)
            .arg("mount")
            .arg(image)
            .arg(mountpoint)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("vhd mount starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("reading what vhd mount prints");
        let file = PathBuf::from(line.trim());
        assert_eq!(file, mountpoint.join("disk"), "vhd mount prints the file");
        Mounted {
            child,
            mountpoint: mountpoint.to_path_buf(),
            file,
        }
    }

    /// Unmounts with `vhd mount -u` (or `fusermount3 -u`) and returns the
    /// exit code of the serving process.
    fn unmount(mut self, with_fusermount: bool) -> Option<i32> {
        let mp = self.mountpoint.display().to_string();
        if with_fusermount {
            run_ok(&mut cmd("fusermount3", ["-u", mp.as_str()]));
        } else {
            run_ok(&mut cmd(VHD, ["mount", "-u", mp.as_str()]));
        }
        self.child.wait().expect("vhd mount ends").code()
    }

    /// Sends SIGTERM (which unmounts) and returns the exit code.
    fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        run_ok(&mut cmd("kill", ["-TERM", pid.as_str()]));
        let code = self.child.wait().expect("vhd mount ends").code();
        assert!(
            !self.file.exists(),
            "SIGTERM unmounted {}",
            self.mountpoint.display()
        );
        code
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mp = self.mountpoint.display().to_string();
        run(&mut cmd("fusermount3", ["-u", "-z", mp.as_str()]));
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        }
    }
}

fn vhd(args: &[&str]) -> std::process::Output {
    let out = run(&mut cmd(VHD, args));
    assert_ne!(out.status.code(), Some(101), "vhd {args:?} panicked");
    out
}

fn vhd_convert(image: &Path, out: &Path) {
    let _ = std::fs::remove_file(out);
    let o = vhd(&[
        "convert",
        &image.display().to_string(),
        &out.display().to_string(),
        "--to",
        "raw",
    ]);
    assert!(
        o.status.success(),
        "vhd convert: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn cmp_of_the_mounted_file_matches_vhd_convert() {
    let _g = one_at_a_time();
    if !fuse_available() {
        return;
    }
    let dir = temp_dir();
    let mp = dir.path().join("mnt");
    for case in our_images(&dir.path().join("images"), 21) {
        let reference = dir.path().join("ref.raw");
        vhd_convert(case.path(), &reference);
        let m = Mounted::start(case.path(), &mp, &[]);
        let meta = std::fs::metadata(&m.file).expect("stat of the mounted file");
        assert_eq!(
            meta.len(),
            case.expected.len() as u64,
            "{}: the file's size is the disk's",
            case.name
        );
        run_ok(&mut cmd("cmp", [m.file.as_os_str(), reference.as_os_str()]));
        let refused = std::fs::OpenOptions::new().write(true).open(&m.file);
        assert!(
            refused.is_err(),
            "{}: a read-only mount refuses writers",
            case.name
        );
        assert_eq!(
            m.unmount(false),
            Some(0),
            "{}: vhd mount -u ends it cleanly",
            case.name
        );
    }
}

#[test]
fn dd_writes_through_a_writable_mount_and_reads_back_after_remount() {
    let _g = one_at_a_time();
    if !fuse_available() {
        return;
    }
    let dir = temp_dir();
    let mp = dir.path().join("mnt");
    let image = dir.path().join("w.vhd");
    let mut expected = prefilled_part(&image, 24 * MIB, 8 * MIB);
    let mut rng = Rng::new(3);
    let data = rng.nonzero_bytes(3 * MIB as usize);
    let input = dir.path().join("in.bin");
    std::fs::write(&input, &data).unwrap();
    let m = Mounted::start(&image, &mp, &["--writable"]);
    // 3 MiB at 6 MiB: across the end of the prefilled part, into new blocks.
    let of = format!("of={}", m.file.display());
    let inf = format!("if={}", input.display());
    run_ok(&mut cmd(
        "dd",
        [
            inf.as_str(),
            of.as_str(),
            "bs=64k",
            "seek=96",
            "conv=notrunc,fsync",
            "status=none",
        ],
    ));
    expected[6 * MIB as usize..9 * MIB as usize].copy_from_slice(&data);
    // 1 MiB at 20 MiB without fsync: only the unmount makes it durable.
    run_ok(&mut cmd(
        "dd",
        [
            inf.as_str(),
            of.as_str(),
            "bs=64k",
            "count=16",
            "seek=320",
            "conv=notrunc",
            "status=none",
        ],
    ));
    expected[20 * MIB as usize..21 * MIB as usize].copy_from_slice(&data[..MIB as usize]);
    // The size is fixed.
    let o = run(&mut cmd("truncate", ["-s", "1M", m.file.to_str().unwrap()]));
    assert!(!o.status.success(), "truncating the disk file is refused");
    assert_eq!(m.unmount(true), Some(0), "fusermount3 -u ends it cleanly");
    let o = vhd(&["check", &image.display().to_string()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "vhd check: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let m = Mounted::start(&image, &mp, &[]);
    let got = std::fs::read(&m.file).expect("reading the remounted file");
    assert!(got == expected, "the remounted disk reads what dd wrote");
    assert_eq!(m.unmount(false), Some(0));
}

#[test]
fn seek_data_and_seek_hole_answer_from_the_image_map() {
    let _g = one_at_a_time();
    if !fuse_available() {
        return;
    }
    let dir = temp_dir();
    let mp = dir.path().join("mnt");
    let image = dir.path().join("s.vhd");
    let mut img = CreateOptions::new(DiskType::Dynamic, 64 * MIB)
        .create(&image)
        .unwrap();
    img.write_at(10 * MIB, &[1; 4096]).unwrap();
    img.write_at(40 * MIB, &vec![2; 2 * MIB as usize]).unwrap();
    img.close().unwrap();
    let m = Mounted::start(&image, &mp, &[]);
    // Python's os.lseek reaches SEEK_DATA / SEEK_HOLE.
    let script = r#"import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
pos, out = 0, []
size = os.fstat(fd).st_size
while pos < size:
    try:
        d = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    out.append("%d %d" % (d, h - d))
    pos = h
print(";".join(out))
"#;
    let o = run_ok(&mut cmd(
        "/usr/bin/python3",
        ["-c", script, m.file.to_str().unwrap()],
    ));
    let theirs = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = vhd(&["map", &image.display().to_string(), "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut ours: Vec<(u64, u64)> = Vec::new();
    for e in v["extents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"] == true)
    {
        let (off, len) = (e["offset"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        match ours.last_mut() {
            Some(last) if last.0 + last.1 == off => last.1 += len,
            _ => ours.push((off, len)),
        }
    }
    let ours = ours
        .iter()
        .map(|(o, l)| format!("{o} {l}"))
        .collect::<Vec<_>>()
        .join(";");
    assert_eq!(theirs, ours, "SEEK_DATA/SEEK_HOLE vs vhd map");
    assert!(theirs.starts_with(&format!("{} ", 10 * MIB)), "{theirs}");
    assert_eq!(m.terminate(), Some(0), "SIGTERM ends vhd mount cleanly");
}

/// kill -9 of the FUSE process while the test writes through the mount:
/// the image opens, `vhd check` finds no errors, every sector reads old or
/// new, and what a completed fsync covered is there.
#[test]
fn kill_9_of_the_fuse_process_during_writes_leaves_old_or_new_sectors_and_fsynced_data() {
    let _g = one_at_a_time();
    if !fuse_available() {
        return;
    }
    let dir = temp_dir();
    let mp = dir.path().join("mnt");
    for round in 0..2u64 {
        let image = dir.path().join(format!("k{round}.vhd"));
        let size = 32 * MIB;
        let old = prefilled_part(&image, size, size / 2);
        let slot = 16 * 1024u64;
        let mut rng = Rng::new(200 + round);
        let mut slots: Vec<u64> = (0..size / slot).collect();
        for i in (1..slots.len()).rev() {
            slots.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut new = old.clone();
        let mut m = Mounted::start(&image, &mp, &["--writable"]);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&m.file)
            .expect("opening the disk file");
        let pid = m.child.id().to_string();
        // The killer waits until some writes are done, then kills while
        // the writes go on (whatever the speed of the machine).
        let killed = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicUsize::new(0));
        let killer = {
            let (killed, progress) = (Arc::clone(&killed), Arc::clone(&progress));
            let after = 100 + rng.below(400) as usize;
            std::thread::spawn(move || {
                while progress.load(Ordering::Acquire) < after {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = Command::new("kill").args(["-9", &pid]).status();
                killed.store(true, Ordering::Release);
            })
        };
        let (mut done, mut durable) = (0usize, 0usize);
        for (i, &s) in slots.iter().enumerate() {
            let data = rng.nonzero_bytes(slot as usize);
            new[(s * slot) as usize..((s + 1) * slot) as usize].copy_from_slice(&data);
            if file.write_all_at(&data, s * slot).is_err() {
                break;
            }
            done = i + 1;
            progress.store(done, Ordering::Release);
            if i % 10 == 9 {
                if file.sync_data().is_err() {
                    break;
                }
                durable = done;
            }
        }
        killer.join().unwrap();
        assert!(killed.load(Ordering::Acquire));
        drop(file);
        m.kill9();
        common::assert_old_or_new_after_kill(
            VHD,
            &image,
            (&old, &new),
            (slot, &slots[..durable]),
            &format!("round {round}"),
        );
        assert!(
            durable > 0 && done < slots.len(),
            "round {round}: killed mid-way ({durable} fsynced, {done} written)"
        );
    }
}
