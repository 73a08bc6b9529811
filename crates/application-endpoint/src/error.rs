//! Why an endpoint operation failed.

use collaboration_platform::{PlatformError, RequestError, TopologyError};

/// Why an endpoint operation failed. Each variant names what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The operation is one only a user of the home deployment can be the subject of, and
    /// `uri` is federated (another company, or cloud-homed in a hybrid deployment). Nothing
    /// was sent.
    #[error("{operation} is not possible for {uri}: it is homed outside this deployment")]
    FederationRestricted {
        /// What was asked (`"UserEndpoint"`, `"publish presence"` …).
        operation: &'static str,
        /// The federated URI.
        uri: String,
    },
    /// The registrar refused the credentials (wrong password, unknown user, 403): not
    /// retried.
    #[error("authentication failed: {status} {reason}")]
    Authentication {
        /// The final status (401, 407 or 403).
        status: u16,
        /// Reason phrase or what the digest client found.
        reason: String,
    },
    /// A request failed (timeout, transport, a final failure status).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The platform could not route to the endpoint (it is shut down).
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// A URI was unusable or refused by the topology.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The owner has no domain, so no registrar to register with: a `tel:` URI names a
    /// number, and a REGISTER goes to the registrar of the owner's domain. A number that
    /// should receive calls is registered as a SIP URI of a home domain
    /// (`sip:+14255550100@contoso.test;user=phone`). Nothing was sent.
    #[error(
        "{uri} cannot be registered: it has no domain whose registrar could hold the binding \
         (register a SIP URI of a home domain, e.g. sip:+14255550100@contoso.test;user=phone)"
    )]
    NotRegistrable {
        /// The owner's URI.
        uri: String,
    },
    /// A presence document describes someone other than the endpoint's owner: an endpoint
    /// publishes only its owner's presence. Nothing was sent.
    #[error("the presence document describes {entity}, not the endpoint's owner")]
    NotThePresentity {
        /// The document's `entity`.
        entity: String,
    },
    /// The server accepted a PUBLISH without the SIP-ETag its 2xx must carry (RFC 3903
    /// §11.3): without it the publication can be neither refreshed, modified nor removed,
    /// so it is not kept (nothing refreshes it; it lapses at the server).
    #[error("the server accepted the PUBLISH ({status}) without a SIP-ETag")]
    NoEntityTag {
        /// The 2xx status.
        status: u16,
    },
    /// The endpoint is not established (establish it first, or it terminated).
    #[error("the endpoint is {0:?}")]
    NotEstablished(crate::EndpointState),
}

impl EndpointError {
    /// For a 423 Interval Too Brief, the longer lifetime the server asks for than `asked`
    /// (see [`min_expires_above`](crate::registration::min_expires_above)).
    pub(crate) fn longer_expires(&self, asked: u32) -> Option<u32> {
        match self {
            EndpointError::Request(RequestError::Status {
                code: 423,
                response,
                ..
            }) => crate::registration::min_expires_above(response, asked),
            _ => None,
        }
    }
}
