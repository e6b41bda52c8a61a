#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sagellm_bench::__fuzz::prometheus(data));
