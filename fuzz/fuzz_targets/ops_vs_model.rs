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
    let disk_type = if input.fixed {
        DiskType::Fixed
    } else {
        DiskType::Dynamic
    };
    let mut pair = Pair::new(
        disk_type,
        small_size(input.sectors),
        block_size(input.block),
    );
    for op in input.ops.iter().take(64) {
        pair.apply(op);
    }
    pair.assert_all();
    pair.apply(&vhdref_fuzz::Op::Reopen);
    pair.assert_all();
});
