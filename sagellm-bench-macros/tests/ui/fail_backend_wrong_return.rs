use sagellm_bench::backend;

#[backend]
fn my_engine() -> u32 {
    5
}

fn main() {}
