use sagellm_bench::backend;

struct Engine;

#[backend]
fn my_engine(path: &str) -> Result<Engine, String> {
    let _ = path;
    Ok(Engine)
}

fn main() {}
