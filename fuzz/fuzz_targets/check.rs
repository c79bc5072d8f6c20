//! Any bytes: every finding names a known rule, with its own severity and
//! a message.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vhdref_fuzz::findings_are_sound(data));
