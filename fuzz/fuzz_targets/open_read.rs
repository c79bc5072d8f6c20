//! Any bytes: opening never panics, and either reads the whole disk or
//! fails with an error that names a rule (or is I/O, range or parent).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vhdref_fuzz::open_and_read(data));
