//! Backends a crate registers with `#[sagellm_bench::backend]`: its own engine, chosen with
//! `--backend NAME` in either door beside the built-in ones.

use std::fmt::Display;
use std::sync::Arc;

use crate::backend::Backend;

/// One `#[backend]` function, registered at link time.
#[doc(hidden)]
pub struct RegisteredBackend {
    /// The name `--backend` takes: the function's, or the attribute's `name`.
    pub name: &'static str,
    pub file: &'static str,
    pub line: u32,
    /// Calls the function and boxes what it built.
    pub build: fn() -> Result<Arc<dyn Backend>, String>,
}

inventory::collect!(RegisteredBackend);

impl std::fmt::Debug for RegisteredBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}:{})", self.name, self.file, self.line)
    }
}

/// The registered backends, by name.
pub fn registered() -> Vec<&'static RegisteredBackend> {
    let mut all: Vec<&'static RegisteredBackend> =
        inventory::iter::<RegisteredBackend>.into_iter().collect();
    all.sort_by_key(|b| (b.name, b.file, b.line));
    all
}

/// What a `#[backend]` function may return: a backend, or a `Result` whose error says why it
/// could not be built.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a #[backend] function must return a type that implements `sagellm_bench::Backend`, or `Result<B, E>` with `B: Backend` and `E: Display`, not `{Self}`"
)]
pub trait IntoBackend {
    fn into_backend(self) -> Result<Arc<dyn Backend>, String>;
}

impl<B: Backend + 'static, E: Display> IntoBackend for Result<B, E> {
    fn into_backend(self) -> Result<Arc<dyn Backend>, String> {
        self.map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|e| e.to_string())
    }
}

// Not recommended in the error for a wrong return type, which would otherwise list every
// backend of this crate instead of saying what the function may return.
#[diagnostic::do_not_recommend]
impl<B: Backend + 'static> IntoBackend for B {
    fn into_backend(self) -> Result<Arc<dyn Backend>, String> {
        Ok(Arc::new(self))
    }
}
