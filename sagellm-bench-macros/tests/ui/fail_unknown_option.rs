use sagellm_bench::workload;

#[workload(prompt_token = 128)]
fn short() {}

fn main() {}
