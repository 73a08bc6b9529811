//! How many cases a property test runs.
//!
//! `ProptestConfig::with_cases(n)` overrides the `PROPTEST_CASES` environment variable
//! (only `ProptestConfig::default()` reads it), so a test that picks its own count could
//! not be asked for a longer search. `cases(n)` is `n` unless `PROPTEST_CASES` says
//! otherwise.

/// `PROPTEST_CASES` when set to a number, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}
