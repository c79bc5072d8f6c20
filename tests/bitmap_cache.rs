//! A bitmap cache far smaller than the working set: every write and read
//! evicts, writing metadata in the flush order, and the disk still reads
//! as the model says, before and after reopening.

use vhdref::model::Disk;
use vhdref::storage::MemStorage;
use vhdref::{CreateOptions, DiskType, Image, OpenOptions};

const KIB: u64 = 1024;
const BLOCK: u32 = 512 * 1024;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn tiny_cache() -> OpenOptions {
    // Less than one 512-byte bitmap: the cache keeps exactly one.
    OpenOptions::new().bitmap_cache_bytes(1)
}

/// Random writes (unaligned, across blocks) and reads, checked against the
/// model after each step.
fn exercise(img: &mut Image, model: &mut Disk, rng: &mut Rng, steps: usize) {
    let size = model.size();
    for step in 0..steps {
        let len = 1 + rng.below(96 * KIB);
        let offset = rng.below(size - len);
        if rng.below(3) == 0 {
            let mut got = vec![0u8; len as usize];
            img.read_at(offset, &mut got).expect("read");
            assert!(
                got == model.read(offset, len),
                "step {step}: read {offset}+{len}"
            );
        } else {
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            img.write_at(offset, &data).expect("write");
            model.write(offset, &data);
        }
    }
}

fn read_all(img: &mut Image) -> Vec<u8> {
    let mut buf = vec![0u8; img.size() as usize];
    img.read_at(0, &mut buf).expect("read all");
    buf
}

#[test]
fn a_dynamic_image_with_a_one_bitmap_cache_reads_as_the_model() {
    let size = 24 * u64::from(BLOCK) + 3 * KIB;
    let mem = MemStorage::new();
    CreateOptions::new(DiskType::Dynamic, size)
        .block_size(BLOCK)
        .create_in(Box::new(mem.clone()), "d.vhd", None)
        .expect("create")
        .close()
        .expect("close");
    let mut model = Disk::new(size);
    let mut rng = Rng(0x5EED);
    let mut img = tiny_cache()
        .write(true)
        .open_storage(Box::new(mem.clone()), "d.vhd")
        .expect("open");
    exercise(&mut img, &mut model, &mut rng, 150);
    img.close().expect("close");
    let mut img = tiny_cache()
        .open_storage(Box::new(mem), "d.vhd")
        .expect("reopen");
    assert!(read_all(&mut img) == model.read(0, size), "after reopening");
    assert!(img.findings().is_empty(), "{:?}", img.findings());
}

#[test]
fn a_differencing_child_with_a_one_bitmap_cache_reads_as_the_model() {
    let size = 16 * u64::from(BLOCK);
    let parent_mem = MemStorage::new();
    let mut parent = CreateOptions::new(DiskType::Dynamic, size)
        .block_size(BLOCK)
        .create_in(Box::new(parent_mem.clone()), "p.vhd", None)
        .expect("create parent");
    let mut model = Disk::new(size);
    let mut rng = Rng(0x00C0_FFEE);
    exercise(&mut parent, &mut model, &mut rng, 40);
    parent.close().expect("close parent");
    let parent_bytes = parent_mem.to_vec();

    let parent = OpenOptions::new()
        .open_storage(Box::new(parent_mem.clone()), "p.vhd")
        .expect("open parent");
    let child_mem = MemStorage::new();
    CreateOptions::new(DiskType::Differencing, 0)
        .block_size(BLOCK)
        .create_in(
            Box::new(child_mem.clone()),
            "c.vhd",
            Some((parent, "p.vhd")),
        )
        .expect("create child")
        .close()
        .expect("close child");
    model.push_child();
    let open_child = |mem: &MemStorage, write: bool| {
        let parent = tiny_cache()
            .open_storage(Box::new(parent_mem.clone()), "p.vhd")
            .expect("open parent");
        tiny_cache()
            .write(write)
            .parent_image(parent)
            .open_storage(Box::new(mem.clone()), "c.vhd")
            .expect("open child")
    };
    let mut child = open_child(&child_mem, true);
    exercise(&mut child, &mut model, &mut rng, 150);
    child.close().expect("close");
    let mut child = open_child(&child_mem, false);
    assert!(
        read_all(&mut child) == model.read(0, size),
        "after reopening"
    );
    assert_eq!(
        parent_mem.to_vec(),
        parent_bytes,
        "the parent never changes"
    );
}
