//! `vmr::fuzz::config_file` on any bytes; see fuzz/README.md.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vmr::fuzz::config_file(data));
