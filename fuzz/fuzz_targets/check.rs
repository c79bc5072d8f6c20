//! One control byte (which checksums to fix) and an image: the checker
//! and `open` agree (an error exactly when open refuses, open's rule and
//! warnings among the findings), every finding is sound, and an image the
//! checker calls clean or only warns about reads as the pure model says.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vhdref_fuzz::{check_agrees_with_open, image_from_input};

fuzz_target!(|data: &[u8]| check_agrees_with_open(&image_from_input(data)));
