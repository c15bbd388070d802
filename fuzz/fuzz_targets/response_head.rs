//! libFuzzer entry for cohort::balancer::fuzz::response_head (see that module for the invariants).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cohort::balancer::fuzz::response_head(data);
});
