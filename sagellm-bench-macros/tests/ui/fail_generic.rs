use sagellm_bench::workload;

#[workload]
fn short<T>() {}

fn main() {}
