//! Random ops on a random image: the driver reads what the model says.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vhdref::DiskType;
use vhdref_fuzz::{Op, Pair, block_size, small_size};

#[derive(Arbitrary, Debug)]
struct Input {
    fixed: bool,
    sectors: u16,
    block: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    // A fixed image costs its whole size in memory: keep it smaller.
    let (disk_type, max) = if input.fixed {
        (DiskType::Fixed, 1 << 20)
    } else {
        (DiskType::Dynamic, 4 << 20)
    };
    let mut pair = Pair::new(
        disk_type,
        small_size(input.sectors, max),
        block_size(input.block),
    );
    for op in input.ops.iter().take(64) {
        pair.apply(op);
    }
    pair.assert_all();
    pair.apply(&vhdref_fuzz::Op::Reopen);
    pair.assert_all();
});
