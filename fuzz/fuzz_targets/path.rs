//! cargo-fuzz target `path`: see `fuzz/checks.rs` for what it checks.
#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = checks::path(data);
});
