//! Conversions to and from the types of rsip and sdp-rs, for applications that already use
//! those crates (cargo feature `interop`, on by default).
//!
//! This crate parses and writes the wire itself; these modules only translate. Each says
//! what those crates cannot represent and therefore what a conversion loses or refuses.

pub mod rsip;
pub mod sdp_rs;
