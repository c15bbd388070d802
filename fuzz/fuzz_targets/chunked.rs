//! libFuzzer entry for cohort::balancer::fuzz::chunked (see that module for the invariants).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cohort::balancer::fuzz::chunked(data);
});
