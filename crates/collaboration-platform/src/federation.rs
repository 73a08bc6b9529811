//! What may cross to a federated party. Trust is not transitive: whatever the home front end
//! trusts (the application pool, identities it asserts) means nothing to another deployment,
//! so a request toward a federated party carries none of it.

use crate::topology::{party_key, party_key_of, Address, Homing};
use bytes::Bytes;
use sip_core::{HeaderName, NameAddr, SipMessage};
use std::collections::HashSet;
use std::sync::RwLock;

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
///
/// Display names are handled apart (the platform removes those of home users it speaks for
/// toward federated parties): this one only removes fields.
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

/// The identities the application speaks as itself: the platform's own URI and the owners
/// of its application endpoints. Toward a federated party their display names may cross;
/// any other home user's may not, since the application can only be impersonating them.
#[derive(Debug, Default)]
pub(crate) struct OwnIdentities {
    /// `user@domain`, lower-cased (user empty for a bare host URI).
    keys: RwLock<HashSet<String>>,
}

impl OwnIdentities {
    /// Adds `address` as one of the application's own identities.
    pub(crate) fn insert<H: Homing>(&self, address: &Address<H>) {
        let key = party_key_of(address.user(), address.domain());
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
    }

    /// Is the SIP URI `uri` one of them?
    pub(crate) fn contains(&self, uri: &[u8]) -> bool {
        let Some(key) = party_key(&String::from_utf8_lossy(uri)) else {
            return false;
        };
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
    }
}

/// Removes the display names a federated party must not see: impersonation toward a
/// federated user carries the SIP URI, not the name. The From and every Referred-By value
/// lose their display name unless their URI is one the application speaks as itself
/// (`own`). URI and parameters (the tag) are kept byte for byte. Returns how many values
/// were changed.
pub(crate) fn strip_impersonated_names(msg: &mut SipMessage, own: &OwnIdentities) -> usize {
    let mut changed = 0;
    let strip = |v: &[u8], header: &'static str| {
        let n = NameAddr::parse(v, header).ok()?;
        if own.contains(n.uri().as_bytes()) {
            return None;
        }
        without_display_name(v, &n)
    };
    if let Some(v) = msg.header(HeaderName::From).and_then(|v| strip(v, "From")) {
        if msg.set_header(HeaderName::From, v).is_ok() {
            changed += 1;
        }
    }
    // Each value, and whether it lost a display name.
    let referred: Vec<(Bytes, bool)> = msg
        .header_values(HeaderName::ReferredBy)
        .map(|v| match strip(v, "Referred-By") {
            Some(s) => (s, true),
            None => (Bytes::copy_from_slice(v), false),
        })
        .collect();
    if referred.iter().any(|(_, stripped)| *stripped) {
        msg.remove_header(HeaderName::ReferredBy);
        for (v, stripped) in referred {
            if msg.push_header(HeaderName::ReferredBy, v).is_ok() && stripped {
                changed += 1;
            }
        }
    }
    changed
}

/// `value` (a name-addr parsed as `n`) from its `<` on, when it has a display name.
fn without_display_name(value: &[u8], n: &NameAddr<'_>) -> Option<Bytes> {
    n.display_name()?;
    let uri = n.uri().as_bytes();
    let at = (uri.as_ptr() as usize).checked_sub(value.as_ptr() as usize)?;
    // The URI of a name-addr with a display name is always bracketed.
    let lt = at.checked_sub(1).filter(|&i| value.get(i) == Some(&b'<'))?;
    Some(Bytes::copy_from_slice(value.get(lt..)?))
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

    fn message(from: &str, referred_by: &[&str]) -> SipMessage {
        let mut b = SipMessage::request(Method::Refer, "sip:bob@fabrikam.test")
            .header(
                HeaderName::Via,
                "SIP/2.0/TLS app.contoso.test;branch=z9hG4bK1",
            )
            .header(HeaderName::From, from.to_string())
            .header(HeaderName::To, "<sip:bob@fabrikam.test>")
            .header(HeaderName::CallId, "c1")
            .header(HeaderName::CSeq, "1 REFER");
        for r in referred_by {
            b = b.header(HeaderName::ReferredBy, r.to_string());
        }
        b.build().unwrap()
    }

    #[test]
    fn impersonated_display_names_do_not_cross() {
        let mut m = message(
            "\"Alice <Sales>\" <sip:alice@contoso.test>;tag=7",
            &["Alice <sip:alice@contoso.test>", "<sip:carol@contoso.test>"],
        );
        let own = OwnIdentities::default();
        own.insert(&Address::assume_on_premises("sip:app.contoso.test").unwrap());
        own.insert(&Address::assume_on_premises("sip:Bot@contoso.test").unwrap());
        assert_eq!(strip_impersonated_names(&mut m, &own), 2);
        assert_eq!(
            m.header(HeaderName::From),
            Some(&b"<sip:alice@contoso.test>;tag=7"[..])
        );
        assert_eq!(m.from().unwrap().tag(), Some(&b"7"[..]));
        let referred: Vec<&[u8]> = m.header_values(HeaderName::ReferredBy).collect();
        assert_eq!(
            referred,
            [
                &b"<sip:alice@contoso.test>"[..],
                b"<sip:carol@contoso.test>"
            ]
        );
        // The application's own names are its own to give.
        for from in [
            "\"Contoso App\" <sip:app.contoso.test>;tag=1",
            "\"Bot\" <sip:bot@contoso.test>;tag=1",
        ] {
            let mut mine = message(from, &["\"Bot\" <sip:bot@contoso.test>"]);
            assert_eq!(strip_impersonated_names(&mut mine, &own), 0);
            assert_eq!(mine.header(HeaderName::From), Some(from.as_bytes()));
        }
        // Nothing to strip: the message is left as it was.
        let mut plain = message("<sip:alice@contoso.test>;tag=2", &[]);
        assert_eq!(strip_impersonated_names(&mut plain, &own), 0);
    }
}
