//! Helpers shared by the property tests.

/// `default` cases, or `PROPTEST_CASES` when it is set: the counts in the tests are sized
/// for CI, and an explicit count would otherwise override the variable in a longer run by
/// hand.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
