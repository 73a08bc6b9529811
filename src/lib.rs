//! # ucma
//!
//! A UCMA-style middle-tier SIP SDK: server applications, trusted by a SIP front end over
//! mutual TLS, host endpoints and hold conversations with users at home and, by federation,
//! in other deployments. This package is the facade: it re-exports the workspace crates so an
//! application adds one dependency and writes `use ucma::prelude::*;`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use sip_core;

/// The names most applications need, in one import.
pub mod prelude {
    pub use sip_core::sdp;
}
