//! `vmr::fuzz::input_csv` on any bytes; see fuzz/README.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmr::fuzz::input_csv(data));
