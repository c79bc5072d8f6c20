//! Any bytes that open for writing: writes land, survive a reopen, and
//! change nothing else.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vhdref_fuzz::write_then_reopen(data));
