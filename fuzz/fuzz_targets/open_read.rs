//! One control byte (which checksums to fix) and an image: opening never
//! panics, and either fails with an error that names a rule (or is I/O,
//! range or parent) or reads, all of it, as the pure model says.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vhdref_fuzz::{image_from_input, open_and_read};

fuzz_target!(|data: &[u8]| open_and_read(&image_from_input(data)));
