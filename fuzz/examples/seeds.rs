//! Writes a few small valid images (a few KiB each: libFuzzer is fast on
//! small inputs) as seeds for the byte-level targets:
//! `cargo run --example seeds` (in fuzz/) fills `corpus/open_read` and
//! `corpus/check`. The corpus is not committed; this makes it again.

use std::path::Path;

use vhdref::storage::MemStorage;
use vhdref::{CreateOptions, DiskType, OpenOptions, Timestamp};
use vhdref_fuzz::bytes_of;

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

fn main() -> std::io::Result<()> {
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    seeds.push(("fixed-4k", create(DiskType::Fixed, 4096, 0, 1).to_vec()));
    seeds.push((
        "dynamic-empty",
        create(DiskType::Dynamic, 8 << 20, 512 << 10, 2).to_vec(),
    ));
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
        "differencing-empty",
        bytes_of(&*child.into_storage().expect("flush")),
    ));
    for dir in ["open_read", "check", "open_write"] {
        let dir = Path::new("corpus").join(dir);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        }
    }
    Ok(())
}
