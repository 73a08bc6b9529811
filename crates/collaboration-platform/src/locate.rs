//! RFC 3263 server location: which socket address and TLS name serve a SIP domain.
//!
//! Static overrides come first (tests, and deployments without DNS name their front end
//! here). DNS (NAPTR → SRV → A/AAAA) is not built yet: a domain without an override is an
//! error ([`LocateError::NotFound`]) rather than a guess.

use std::collections::HashMap;
use std::net::SocketAddr;

/// One server for a domain: where to connect and the name its certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedServer {
    /// The socket address.
    pub addr: SocketAddr,
    /// The TLS name to verify (RFC 5922: the domain, or the SRV target).
    pub server_name: String,
}

/// Why a domain could not be located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocateError {
    /// No override and no DNS answer for the domain (a request there fails with 503).
    #[error("no server found for {0}")]
    NotFound(String),
}

/// Finds the servers of a domain: static overrides, then (not yet) DNS.
#[derive(Debug, Clone, Default)]
pub struct ServerLocator {
    overrides: HashMap<String, Vec<LocatedServer>>,
}

impl ServerLocator {
    /// A locator with no overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `domain` (case-insensitive) from `addr`, verifying `server_name`. Several
    /// overrides for one domain are tried in the order given.
    pub fn with_override(
        mut self,
        domain: &str,
        addr: SocketAddr,
        server_name: impl Into<String>,
    ) -> Self {
        self.overrides
            .entry(domain.to_ascii_lowercase())
            .or_default()
            .push(LocatedServer {
                addr,
                server_name: server_name.into().to_ascii_lowercase(),
            });
        self
    }

    /// The servers of `domain`, in the order to try them.
    pub fn locate(&self, domain: &str) -> Result<Vec<LocatedServer>, LocateError> {
        if let Ok(addr) = domain.parse::<SocketAddr>() {
            return Ok(vec![LocatedServer {
                addr,
                server_name: addr.ip().to_string(),
            }]);
        }
        self.overrides
            .get(&domain.to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| LocateError::NotFound(domain.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_and_unknown_domains_fail() {
        let addr: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        let l = ServerLocator::new().with_override("Contoso.Test", addr, "FE.contoso.test");
        assert_eq!(
            l.locate("contoso.test").unwrap(),
            vec![LocatedServer {
                addr,
                server_name: "fe.contoso.test".into()
            }]
        );
        assert_eq!(
            l.locate("fabrikam.test"),
            Err(LocateError::NotFound("fabrikam.test".into()))
        );
        assert_eq!(l.locate("127.0.0.1:5061").unwrap()[0].addr, addr);
    }
}
