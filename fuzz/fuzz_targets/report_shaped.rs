//! `vmr::fuzz::report_body` on REPORT-shaped JSON built by `arbitrary` (shape.rs); see
//! fuzz/README.md.
#![no_main]

#[path = "../shape.rs"]
mod shape;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((endpoint, body)) = shape::body_of(data) {
        vmr::fuzz::report_body(endpoint, &body);
    }
});
