//! One control byte (which checksums to fix) and an image that opens for
//! writing: writes land, survive a reopen, and change nothing else.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vhdref_fuzz::{image_from_input, write_then_reopen};

fuzz_target!(|data: &[u8]| write_then_reopen(&image_from_input(data)));
