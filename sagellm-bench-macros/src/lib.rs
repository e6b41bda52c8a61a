//! The `#[workload]` and `#[backend]` attributes of sagellm-bench. Use them through
//! `sagellm_bench::workload` and `sagellm_bench::backend`; the options are documented there, in
//! `docs/WORKLOADS.md` and in `docs/BACKENDS.md`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Expr, ExprArray, FnArg, ItemFn, LitBool, LitStr, ReturnType};

/// Declares a benchmark workload. See the `sagellm_bench::workload` documentation.
#[proc_macro_attribute]
pub fn workload(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = match function(
        item,
        "#[workload] goes on a function: `fn name() {}` or `fn name(setup: &mut Setup) {}`",
    ) {
        Ok(f) => f,
        Err(error) => return error,
    };
    let mut options = Options::default();
    let parsed = syn::meta::parser(|meta| options.parse(meta)).parse(attr);
    finish(parsed.and_then(|()| expand(&options, &function)), &function)
}

/// The function an attribute goes on, or the error that says what it goes on.
fn function(item: TokenStream, what_it_goes_on: &str) -> Result<ItemFn, TokenStream> {
    syn::parse::<ItemFn>(item.clone()).map_err(|_| {
        syn::Error::new_spanned(TokenStream2::from(item), what_it_goes_on)
            .to_compile_error()
            .into()
    })
}

/// The expansion, or its error beside the user's function (so the error is the only one).
fn finish(expanded: syn::Result<TokenStream2>, function: &ItemFn) -> TokenStream {
    match expanded {
        Ok(tokens) => tokens.into(),
        Err(e) => with_function(e.to_compile_error(), function),
    }
}

/// Registers a backend. See the `sagellm_bench::backend` documentation.
#[proc_macro_attribute]
pub fn backend(attr: TokenStream, item: TokenStream) -> TokenStream {
    let function = match function(
        item,
        "#[backend] goes on a function that builds the backend: `fn my_engine() -> Result<MyEngine, E>`",
    ) {
        Ok(f) => f,
        Err(error) => return error,
    };
    let mut name: Option<LitStr> = None;
    let mut krate: Option<syn::Path> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            let value: LitStr = meta.value()?.parse()?;
            check_name(&value)?;
            name = Some(value);
            Ok(())
        } else if meta.path.is_ident("crate") {
            krate = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error("unknown #[backend] option; it takes `name` and `crate`"))
        }
    });
    let parsed = parser.parse(attr);
    finish(
        parsed.and_then(|()| expand_backend(name, krate, &function)),
        &function,
    )
}

fn expand_backend(
    name: Option<LitStr>,
    krate: Option<syn::Path>,
    function: &ItemFn,
) -> syn::Result<TokenStream2> {
    let sig = &function.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a #[backend] function cannot be generic",
        ));
    }
    if let Some(asyncness) = &sig.asyncness {
        return Err(syn::Error::new_spanned(
            asyncness,
            "a #[backend] function is not async: it builds the backend; do async setup in \
             Backend::start_workload",
        ));
    }
    if let Some(input) = sig.inputs.first() {
        return Err(syn::Error::new_spanned(
            input,
            "a #[backend] function takes no argument (read your engine's settings from the \
             environment or a file)",
        ));
    }
    let krate = match krate {
        Some(path) => quote!(#path),
        None => quote!(::sagellm_bench),
    };
    let private = quote!(#krate::__private);
    let ident = &sig.ident;
    let name = name.map_or_else(|| ident.to_string(), |n| n.value());
    // Spanned at the declared return type, so an unsupported one is reported there.
    let into = match &sig.output {
        ReturnType::Default => quote!(<() as #private::IntoBackend>::into_backend),
        ReturnType::Type(_, ty) => {
            quote_spanned!(ty.span()=> <#ty as #private::IntoBackend>::into_backend)
        }
    };
    Ok(quote! {
        #function

        const _: () = {
            fn __sagellm_bench_build() -> ::core::result::Result<
                ::std::sync::Arc<dyn #krate::Backend>,
                ::std::string::String,
            > {
                #into(#ident())
            }

            #private::inventory::submit! {
                #private::RegisteredBackend {
                    name: #name,
                    file: ::core::file!(),
                    line: ::core::line!(),
                    build: __sagellm_bench_build,
                }
            }
        };
    })
}

/// Keeps the user's function in the output next to an error, so the error is the only one.
fn with_function(error: TokenStream2, function: &ItemFn) -> TokenStream {
    quote!(#error #function).into()
}

/// Every option `#[workload(...)]` accepts; the error for an unknown one lists them.
const OPTIONS: &str = "name, prompt_tokens, output_tokens, requests, warmup, concurrency, rate, \
                       arrival, burstiness, max_concurrency, seed, shared_prefix, goodput, \
                       num_runs, ignore, backend, crate";

#[derive(Default)]
struct Options {
    name: Option<Expr>,
    prompt_tokens: Option<Expr>,
    output_tokens: Option<Expr>,
    requests: Option<Expr>,
    warmup: Option<Expr>,
    concurrency: Option<Concurrency>,
    rate: Option<Expr>,
    /// `"poisson"` or `"constant"`: how a `rate` spaces requests.
    arrival: Option<LitStr>,
    /// Gamma gaps of this shape for the `rate` (1: Poisson).
    burstiness: Option<Expr>,
    /// The open loop's cap on requests in flight.
    max_concurrency: Option<Expr>,
    seed: Option<Expr>,
    shared_prefix: Option<Expr>,
    /// Latency objectives, `"ttft:200,e2el:5000"` (checked when the harness starts).
    goodput: Option<Expr>,
    /// Repetitions of the bench run (`--num-runs`).
    num_runs: Option<Expr>,
    ignore: Option<(Span, bool)>,
    /// The backend the workload is for, by its `--backend` name.
    backend: Option<LitStr>,
    krate: Option<syn::Path>,
    /// The option that set `concurrency` or `rate` first, to report conflicts against.
    arrival_set_by: Option<&'static str>,
}

enum Concurrency {
    One(Expr),
    Sweep(ExprArray),
}

impl Options {
    fn parse(&mut self, meta: syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
        let key = meta
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_else(|| meta.path.to_token_stream().to_string());
        let path = meta.path.clone();
        let repeated = || syn::Error::new_spanned(&path, format!("`{key}` is given twice"));
        macro_rules! expr_option {
            ($field:ident) => {{
                if self.$field.is_some() {
                    return Err(repeated());
                }
                self.$field = Some(meta.value()?.parse::<Expr>()?);
            }};
        }
        match key.as_str() {
            "name" => {
                if self.name.is_some() {
                    return Err(repeated());
                }
                let value = meta.value()?.parse::<Expr>()?;
                if let Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) = &value
                {
                    check_name(s)?;
                }
                self.name = Some(value);
            }
            "prompt_tokens" => expr_option!(prompt_tokens),
            "output_tokens" => expr_option!(output_tokens),
            "requests" => expr_option!(requests),
            "warmup" => expr_option!(warmup),
            "seed" => expr_option!(seed),
            "burstiness" => expr_option!(burstiness),
            "max_concurrency" => expr_option!(max_concurrency),
            "backend" => {
                if self.backend.is_some() {
                    return Err(repeated());
                }
                self.backend = Some(meta.value()?.parse::<LitStr>()?);
            }
            "shared_prefix" => expr_option!(shared_prefix),
            "goodput" => expr_option!(goodput),
            "num_runs" => expr_option!(num_runs),
            "concurrency" | "rate" => {
                let key: &'static str = if key == "rate" { "rate" } else { "concurrency" };
                match self.arrival_set_by {
                    Some(first) if first == key => return Err(repeated()),
                    Some(first) => {
                        return Err(syn::Error::new_spanned(
                            &path,
                            format!(
                            "`{key}` conflicts with `{first}`: a workload is either closed loop \
                                 (`concurrency`) or open loop (`rate`)"
                        ),
                        ))
                    }
                    None => self.arrival_set_by = Some(key),
                }
                let value = meta.value()?.parse::<Expr>()?;
                if key == "rate" {
                    self.rate = Some(value);
                } else {
                    self.concurrency = Some(match value {
                        Expr::Array(array) => {
                            if array.elems.is_empty() {
                                return Err(syn::Error::new_spanned(
                                    &array,
                                    "a concurrency sweep needs at least one value",
                                ));
                            }
                            Concurrency::Sweep(array)
                        }
                        other => Concurrency::One(other),
                    });
                }
            }
            "arrival" => {
                if self.arrival.is_some() {
                    return Err(repeated());
                }
                let value = meta.value()?.parse::<LitStr>()?;
                if !matches!(value.value().as_str(), "poisson" | "constant") {
                    return Err(syn::Error::new_spanned(
                        &value,
                        "`arrival` is \"poisson\" (the default) or \"constant\"",
                    ));
                }
                self.arrival = Some(value);
            }
            "ignore" => {
                if self.ignore.is_some() {
                    return Err(repeated());
                }
                let value = if meta.input.peek(syn::Token![=]) {
                    meta.value()?.parse::<LitBool>()?.value
                } else {
                    true
                };
                self.ignore = Some((path.span(), value));
            }
            "crate" => {
                if self.krate.is_some() {
                    return Err(repeated());
                }
                let value = meta.value()?;
                self.krate = Some(if value.peek(LitStr) {
                    value.parse::<LitStr>()?.parse()?
                } else {
                    value.parse()?
                });
            }
            _ => {
                return Err(syn::Error::new_spanned(
                    &path,
                    format!("unknown option `{key}`; #[workload] accepts: {OPTIONS}"),
                ))
            }
        }
        Ok(())
    }
}

/// Workload names become file names: the rule of `sagellm_bench::workload::is_name_char`,
/// checked here at compile time (a proc-macro crate cannot call the library it serves).
fn check_name(name: &LitStr) -> syn::Result<()> {
    let value = name.value();
    let ok = !value.is_empty()
        && !value.starts_with('.')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(syn::Error::new_spanned(
            name,
            "a workload name may only hold letters, digits, `_`, `-` and `.` (it becomes a file name)",
        ))
    }
}

/// How the generated code calls the user's function.
enum Signature {
    NoArgs,
    Setup(Box<syn::Type>),
}

fn signature(function: &ItemFn) -> syn::Result<Signature> {
    let sig = &function.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a #[workload] function cannot be generic",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new_spanned(
            variadic,
            "a #[workload] function cannot be variadic",
        ));
    }
    let mut inputs = sig.inputs.iter();
    let signature = match inputs.next() {
        None => Signature::NoArgs,
        Some(FnArg::Receiver(receiver)) => {
            return Err(syn::Error::new_spanned(
                receiver,
                "a #[workload] function is a free function; it cannot take `self`",
            ))
        }
        Some(FnArg::Typed(arg)) => Signature::Setup(arg.ty.clone()),
    };
    if let Some(extra) = inputs.next() {
        return Err(syn::Error::new_spanned(
            extra,
            "a #[workload] function takes no argument or one `&mut Setup`",
        ));
    }
    Ok(signature)
}

fn expand(options: &Options, function: &ItemFn) -> syn::Result<TokenStream2> {
    let signature = signature(function)?;
    let krate = match &options.krate {
        Some(path) => quote!(#path),
        None => quote!(::sagellm_bench),
    };
    let private = quote!(#krate::__private);
    let ident = &function.sig.ident;
    let fn_name = ident.to_string();

    // Each option becomes one call on the options builder, spanned at the user's value so a
    // type error lands there.
    let mut calls = Vec::new();
    let mut setter = |method: &str, value: &Option<Expr>| {
        if let Some(value) = value {
            let method = syn::Ident::new(method, value.span());
            calls.push(quote_spanned!(value.span()=> __options.#method(#value);));
        }
    };
    setter("name", &options.name);
    setter("prompt_tokens", &options.prompt_tokens);
    setter("output_tokens", &options.output_tokens);
    setter("requests", &options.requests);
    setter("warmup", &options.warmup);
    setter("rate", &options.rate);
    setter("seed", &options.seed);
    setter("shared_prefix", &options.shared_prefix);
    setter("goodput", &options.goodput);
    setter("num_runs", &options.num_runs);
    for (key, value, what) in [
        (
            "burstiness",
            &options.burstiness,
            "`burstiness` shapes the gaps of an open loop; set `rate` with it",
        ),
        (
            "max_concurrency",
            &options.max_concurrency,
            "`max_concurrency` caps an open loop; set `rate` with it (a closed loop's cap is \
             its `concurrency`)",
        ),
    ] {
        if let Some(value) = value {
            if options.rate.is_none() {
                return Err(syn::Error::new_spanned(value, what));
            }
            let method = syn::Ident::new(key, value.span());
            calls.push(quote_spanned!(value.span()=> __options.#method(#value);));
        }
    }
    if let (Some(burstiness), Some(arrival)) = (&options.burstiness, &options.arrival) {
        if arrival.value() == "constant" {
            return Err(syn::Error::new_spanned(
                burstiness,
                "`burstiness` shapes random gaps, and `arrival = \"constant\"` has none; drop one",
            ));
        }
    }
    if let Some(arrival) = &options.arrival {
        if options.rate.is_none() {
            return Err(syn::Error::new_spanned(
                arrival,
                "`arrival` spaces an open loop's requests; set `rate` with it",
            ));
        }
        calls.push(quote_spanned!(arrival.span()=> __options.arrival(#arrival);));
    }
    match &options.concurrency {
        Some(Concurrency::One(value)) => {
            calls.push(quote_spanned!(value.span()=> __options.concurrency(#value);));
        }
        Some(Concurrency::Sweep(array)) => {
            let values = array.elems.iter().map(|v| quote_spanned!(v.span()=> #v));
            calls.push(quote!(__options.concurrency_sweep(&[#(#values),*]);));
        }
        None => {}
    }
    let ignore = options.ignore.map(|(_, v)| v).unwrap_or(false);
    let backend = match &options.backend {
        Some(name) => quote!(::core::option::Option::Some(#name)),
        None => quote!(::core::option::Option::None),
    };

    let is_async = function.sig.asyncness.is_some();
    let call = match &signature {
        Signature::NoArgs => quote!(#ident()),
        Signature::Setup(ty) => {
            // Spanned at the parameter's type, so a wrong type is reported there.
            quote_spanned!(ty.span()=> #ident(#private::setup_arg::<#ty>(__setup)))
        }
    };
    // Spanned at the declared return type, so an unsupported one is reported there.
    let result = match &function.sig.output {
        ReturnType::Default => quote!(<() as #private::IntoSetupResult>::into_setup_result),
        ReturnType::Type(_, ty) => {
            quote_spanned!(ty.span()=> <#ty as #private::IntoSetupResult>::into_setup_result)
        }
    };
    let setup_body = if is_async {
        quote!(::std::boxed::Box::pin(async move { #result(#call.await) }))
    } else {
        quote!(::std::boxed::Box::pin(::std::future::ready(#result(#call))))
    };
    let unused_setup = matches!(signature, Signature::NoArgs).then(|| quote!(let _ = __setup;));
    let probe = format_ident!("__sagellm_bench_libtest_probe_{}", ident.unraw());
    let harness_missing = format!(
        "`#[workload] fn {fn_name}` is in a bench target that libtest runs, so `cargo bench` would \
         measure nothing (`running 0 tests`): add `harness = false` to this target's [[bench]] \
         section in Cargo.toml, e.g.\n\n[[bench]]\nname = \"{target}\"\nharness = false\n",
        target = std::env::var("CARGO_CRATE_NAME").unwrap_or_else(|_| "NAME".into()),
    );

    Ok(quote! {
        #function

        // A `#[test]` function exists only where libtest builds the target (rustc `--test`;
        // cargo gives `cfg(test)` to `harness = false` targets too, so that cannot tell). The
        // glob-imported constant of the same name stands in for it everywhere else.
        #[doc(hidden)]
        #[allow(non_snake_case)]
        mod #probe {
            #[allow(non_upper_case_globals)]
            mod not_libtest {
                pub const harness_check: bool = false;
            }
            // The parent's names, for a relative `crate = ...` path.
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use self::not_libtest::*;
            #[test]
            fn harness_check() {}
            const _: () = if #private::built_by_libtest(&harness_check)
                && #private::in_benches_folder(::core::file!())
            {
                ::core::panic!(#harness_missing)
            };
        }

        const _: () = {
            fn __sagellm_bench_options(__options: &mut #private::Options) {
                #(#calls)*
            }

            fn __sagellm_bench_setup<'a>(__setup: &'a mut #krate::Setup) -> #private::SetupFuture<'a> {
                #unused_setup
                #setup_body
            }

            #private::inventory::submit! {
                #private::Entry {
                    fn_name: #fn_name,
                    module_path: ::core::module_path!(),
                    file: ::core::file!(),
                    line: ::core::line!(),
                    ignore: #ignore,
                    backend: #backend,
                    options: __sagellm_bench_options,
                    setup: __sagellm_bench_setup,
                }
            }
        };
    })
}
