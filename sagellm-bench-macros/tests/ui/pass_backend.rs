use futures::stream::BoxStream;
use sagellm_bench::{backend, workload, Backend, GenerationRequest, StreamEvent};

struct Engine;

impl Backend for Engine {
    fn name(&self) -> &str {
        "engine"
    }
    fn model(&self) -> &str {
        "m"
    }
    fn generate(&self, _request: GenerationRequest) -> BoxStream<'static, StreamEvent> {
        unimplemented!()
    }
}

#[backend]
fn plain() -> Engine {
    Engine
}

#[backend(name = "fallible-engine")]
fn fallible() -> Result<Engine, std::io::Error> {
    Ok(Engine)
}

#[workload(backend = "fallible-engine")]
fn for_the_engine() {}

fn main() {}
