//! What may cross to a federated party. Trust is not transitive: whatever the home front end
//! trusts (the application pool, identities it asserts) means nothing to another deployment,
//! so a request toward a federated party carries none of it.

use sip_core::{HeaderName, SipMessage};

/// Standard headers that assert identity inside a trust domain (RFC 3325): never sent
/// across federation.
pub const HOME_TRUST_HEADERS: [HeaderName; 2] = [
    HeaderName::PAssertedIdentity,
    HeaderName::PPreferredIdentity,
];

/// The `ms-*` headers that may cross federation: they describe the conversation, not who
/// trusts whom (conversation correlation, IM text format, keep-alive negotiation). Every
/// other `ms-*` header is taken as a home-trust header and removed: an allow-list, so a
/// trust header this list does not know cannot leak.
pub const MS_HEADERS_ALLOWED_ACROSS_FEDERATION: [&str; 3] =
    ["ms-conversation-id", "ms-text-format", "ms-keep-alive"];

/// Removes home-trust headers from a request or response about to go to a federated party:
/// P-Asserted-Identity, P-Preferred-Identity, and every `ms-*` header not in
/// [`MS_HEADERS_ALLOWED_ACROSS_FEDERATION`]. Returns how many fields were removed.
pub fn strip_home_trust(msg: &mut SipMessage) -> usize {
    let mut removed = 0;
    for name in HOME_TRUST_HEADERS {
        removed += msg.remove_header(name);
    }
    let ms: Vec<String> = msg
        .headers()
        .filter_map(|h| {
            let name = String::from_utf8_lossy(h.raw_name).to_ascii_lowercase();
            let trust = name.starts_with("ms-")
                && !MS_HEADERS_ALLOWED_ACROSS_FEDERATION.contains(&name.as_str());
            trust.then_some(name)
        })
        .collect();
    for name in ms {
        removed += msg.remove_header(name.as_str());
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_core::Method;

    #[test]
    fn trust_headers_do_not_cross() {
        let mut m = SipMessage::request(Method::Message, "sip:bob@fabrikam.test")
            .header(
                HeaderName::Via,
                "SIP/2.0/TLS app.contoso.test;branch=z9hG4bK1",
            )
            .header(HeaderName::From, "<sip:bot@contoso.test>;tag=1")
            .header(HeaderName::To, "<sip:bob@fabrikam.test>")
            .header(HeaderName::CallId, "c1")
            .header(HeaderName::CSeq, "1 MESSAGE")
            .header(
                HeaderName::PAssertedIdentity,
                "\"Alice\" <sip:alice@contoso.test>",
            )
            .header("P-Preferred-Identity", "<sip:alice@contoso.test>")
            .header(
                "ms-asserted-verification-level",
                "ms-source-verified-user=verified",
            )
            .header("Ms-Conversation-ID", "AdVk3b==")
            .build()
            .unwrap();
        assert_eq!(strip_home_trust(&mut m), 3);
        let wire = String::from_utf8(m.to_bytes().to_vec())
            .unwrap()
            .to_ascii_lowercase();
        assert!(!wire.contains("p-asserted-identity"));
        assert!(!wire.contains("p-preferred-identity"));
        assert!(!wire.contains("ms-asserted-verification-level"));
        assert!(wire.contains("ms-conversation-id: advk3b=="));
    }
}
