use sagellm_bench::workload;

#[workload]
fn short(count: u32) {
    let _ = count;
}

fn main() {}
