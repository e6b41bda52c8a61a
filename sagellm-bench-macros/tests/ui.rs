//! `#[workload]` and `#[backend]` misuse is a compile error at the user's own token, saying
//! what is allowed.
//! Expected compiler output lives beside each case (`ui/*.stderr`); after an intended change to
//! a message, regenerate with `TRYBUILD=overwrite cargo test -p sagellm-bench-macros --test ui` and
//! review the diff.

#[test]
fn workload_and_backend_attributes() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass_*.rs");
    t.compile_fail("tests/ui/fail_*.rs");
}
