//! Random ops on a dynamic image, then a copy into a fixed image and into a
//! dynamic image of another block size: all three read the same.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vhdref::DiskType;
use vhdref_fuzz::{
    Op, Pair, assert_same_contents, block_size, copy_allocated, create_mem, small_size,
};

#[derive(Arbitrary, Debug)]
struct Input {
    sectors: u16,
    block: u8,
    ops: Vec<(u32, u32, u8)>,
}

fuzz_target!(|input: Input| {
    let size = small_size(input.sectors, 2 << 20);
    let mut src = Pair::new(DiskType::Dynamic, size, block_size(input.block));
    for &(offset, len, seed) in input.ops.iter().take(32) {
        src.apply(&Op::Write { offset, len, seed });
    }
    let mut fixed = create_mem(DiskType::Fixed, size, 0, 10);
    let mut dynamic = create_mem(DiskType::Dynamic, size, block_size(input.block % 3 + 1), 11);
    copy_allocated(&mut src.img, &mut fixed).expect("copy into fixed works");
    copy_allocated(&mut src.img, &mut dynamic).expect("copy into dynamic works");
    src.assert_all();
    assert_same_contents(&mut src.img, &mut fixed);
    assert_same_contents(&mut src.img, &mut dynamic);
});
