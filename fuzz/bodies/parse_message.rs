// Body of the `parse_message` fuzz target, shared with sip-core's corpus smoke test.
// Parses the bytes as a datagram, a framed message and a head; on success touches every
// typed view and re-serializes. Must never panic.
pub fn body(data: &[u8]) {
    use sip_core::{HeaderName, Limits, SipMessage};
    type Parser = fn(bytes::Bytes, &Limits) -> Result<SipMessage, sip_core::ParseError>;
    let bytes = bytes::Bytes::copy_from_slice(data);
    let parsers: [Parser; 3] = [
        SipMessage::parse_datagram,
        SipMessage::parse_framed,
        SipMessage::parse_head,
    ];
    for parse in parsers {
        let Ok(m) = parse(bytes.clone(), &Limits::DEFAULT) else {
            continue;
        };
        let _ = m.validate_all();
        let _ = m.request_uri();
        let _ = m.vias().count();
        let _ = (m.from(), m.to(), m.call_id(), m.cseq(), m.max_forwards());
        for c in m.contacts().flatten() {
            let _ = (c.expires(), c.q_millis(), c.instance(), c.is_gruu());
        }
        for name in [HeaderName::Route, HeaderName::RecordRoute, HeaderName::PAssertedIdentity] {
            let _ = m.name_addrs(name).count();
        }
        for name in [HeaderName::WwwAuthenticate, HeaderName::Authorization] {
            for a in m.auth(name).flatten() {
                let _ = a.param("realm");
            }
        }
        let _ = m.warnings().count();
        let _ = m.tokens(HeaderName::Supported).count();
        let _ = m.token_params(HeaderName::Event);
        let again = m.to_bytes();
        // A validated message we wrote must parse again (parse_head does not validate).
        if m.header(HeaderName::ContentLength).is_some() && m.validate().is_ok() {
            assert!(SipMessage::parse_datagram(again, &Limits::DEFAULT).is_ok() || data.len() > 60000);
        }
    }
}
