//! Writes seeds for the raw-byte targets (`open_read`, `open_write`,
//! `check`): a few small valid images made here, and every image file
//! named on the command line (`fuzz/make-seeds.sh` passes the small
//! images of `corpora/`). Each seed is the control byte under which the
//! target sees the image exactly as it is (see `image_from_input`),
//! followed by the image.
//!
//! `cargo run --example seeds -- OUT [IMAGE...]` writes `OUT/NAME` for each.

use std::path::{Path, PathBuf};

use vhdref::storage::MemStorage;
use vhdref::{CreateOptions, DiskType, OpenOptions, Timestamp};
use vhdref_fuzz::{bytes_of, control_for, image_from_input};

fn create(disk_type: DiskType, size: u64, block: u32, id: u128) -> MemStorage {
    let mem = MemStorage::new();
    CreateOptions::new(disk_type, size)
        .block_size(block)
        .unique_id(uuid::Uuid::from_u128(id))
        .time_stamp(Timestamp(0x2000_0000))
        .create_in(Box::new(mem.clone()), "seed.vhd", None)
        .and_then(vhdref::Image::close)
        .expect("creating a seed works");
    mem
}

/// Small images made here: fixed, empty dynamic, a dynamic image with two
/// blocks written, and an empty differencing child.
fn made_here() -> Vec<(String, Vec<u8>)> {
    let mut seeds = vec![
        ("made-fixed-4k".to_string(), create(DiskType::Fixed, 4096, 0, 1).to_vec()),
        (
            "made-dynamic-empty".to_string(),
            create(DiskType::Dynamic, 8 << 20, 512 << 10, 2).to_vec(),
        ),
    ];
    let written = create(DiskType::Dynamic, 4 << 20, 512 << 10, 3);
    let mut img = OpenOptions::new()
        .write(true)
        .open_storage(Box::new(written.clone()), "written.vhd")
        .expect("opens");
    img.write_at(1000, &[0xA5; 3000]).expect("writes");
    img.write_at((4 << 20) - 512, &[0x5A; 512]).expect("writes");
    img.close().expect("closes");
    seeds.push(("made-dynamic-written".to_string(), written.to_vec()));
    let parent = OpenOptions::new()
        .open_storage(
            Box::new(create(DiskType::Dynamic, 8 << 20, 512 << 10, 5)),
            "parent.vhd",
        )
        .expect("opens");
    let child = CreateOptions::new(DiskType::Differencing, 0)
        .unique_id(uuid::Uuid::from_u128(6))
        .time_stamp(Timestamp(0x2000_0000))
        .create_in(
            Box::new(MemStorage::new()),
            "child.vhd",
            Some((parent, "parent.vhd")),
        )
        .expect("child");
    seeds.push((
        "made-differencing-empty".to_string(),
        bytes_of(&*child.into_storage().expect("flush")),
    ));
    seeds
}

/// A seed's file name for an image at `path`: its path with `/` as `--`.
fn name_of(path: &Path) -> String {
    let text = path.to_string_lossy();
    let text = text.trim_start_matches("./").trim_end_matches(".gz");
    text.replace('/', "--")
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let out = args.next().unwrap_or_else(|| PathBuf::from("seeds"));
    let mut seeds = made_here();
    for path in args {
        seeds.push((name_of(&path), std::fs::read(&path)?));
    }
    std::fs::create_dir_all(&out)?;
    for (name, image) in &seeds {
        let mut seed = vec![control_for(image)];
        seed.extend_from_slice(image);
        assert_eq!(&image_from_input(&seed), image, "{name}");
        std::fs::write(out.join(name), seed)?;
    }
    println!("{} seeds in {}", seeds.len(), out.display());
    Ok(())
}
