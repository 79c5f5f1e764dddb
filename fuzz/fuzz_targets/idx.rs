//! The IDX reader on arbitrary bytes (raw or gzip): it must return an error, never panic.
#![no_main]

use genlab::data::idx::{decompress_if_gzip, parse_idx};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bytes) = decompress_if_gzip("fuzz", data.to_vec()) {
        for rank in [1u8, 3] {
            let _ = parse_idx("fuzz", &bytes, rank);
        }
    }
});
