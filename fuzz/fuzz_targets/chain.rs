//! A child made of fuzzed bytes (or a valid child with fuzzed patches) on
//! top of a valid parent: opening never panics, and if it opens it reads.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vhdref_fuzz::{ChainInput, open_child_on_parent};

fuzz_target!(|input: ChainInput| open_child_on_parent(&input));
