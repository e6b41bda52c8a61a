use sagellm_bench::workload;

#[workload]
struct Short;

fn main() {}
