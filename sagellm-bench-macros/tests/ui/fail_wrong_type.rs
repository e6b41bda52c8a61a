use sagellm_bench::workload;

#[workload(requests = "five", prompt_tokens = 128)]
fn short() {}

fn main() {}
