#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sagellm_bench::__fuzz::prompt_dataset(data));
