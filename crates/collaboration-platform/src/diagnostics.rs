//! What a peer says about why it refused a request or ended a call, as one line of text for
//! errors and logs.
//!
//! Three headers carry it: Warning (RFC 3261 §20.43), Reason (RFC 3326, mostly on BYE and
//! CANCEL: `SIP;cause=200;text="Call completed elsewhere"`, `Q.850;cause=16`), and the
//! `ms-diagnostics` / `ms-diagnostics-public` that Lync and Skype for Business servers add
//! (`1003;reason="User does not exist";source=...`). The text is the peer's, so it is shown
//! with control characters as spaces and bounded (at most three values, 200 characters of
//! each): it goes into logs.

use sip_core::{HeaderName, SipMessage, TokenParams};

/// Values shown at most.
const MAX_VALUES: usize = 3;
/// Characters of one value's text shown at most.
const MAX_TEXT: usize = 200;

/// What `message` says about why, as text to append to its status or its end, e.g.
/// ` (ms-diagnostics 1003: "User does not exist"; warning 399 fe.contoso.com: "...")`;
/// empty when it says nothing.
pub fn peer_diagnostics(message: &SipMessage) -> String {
    // protocol *(;cause=N / ;text="..." / ext)
    let reasons = message
        .header_values(HeaderName::Reason)
        .filter_map(|v| TokenParams::parse(v, "Reason").ok())
        .map(|r| {
            let params = r.params();
            let cause = params.get_unquoted("cause").unwrap_or_default();
            let text = params.get_unquoted("text").unwrap_or_default();
            format!(
                "reason {} {}: \"{}\"",
                shown(r.token().as_bytes(), 20),
                shown(&cause, 10),
                shown(&text, MAX_TEXT)
            )
        });
    // `code;reason="...";source=...` (MS-SIPRE), with a numeric code.
    let ms_diagnostics = message
        .headers()
        .filter(|h| {
            h.name == HeaderName::Other
                && (h.raw_name.eq_ignore_ascii_case(b"ms-diagnostics")
                    || h.raw_name.eq_ignore_ascii_case(b"ms-diagnostics-public"))
        })
        .filter_map(|h| TokenParams::parse(h.value, "ms-diagnostics").ok())
        .filter(|d| {
            let code = d.token();
            !code.is_empty() && code.len() <= 10 && code.bytes().all(|c| c.is_ascii_digit())
        })
        .map(|d| {
            let reason = d.params().get_unquoted("reason").unwrap_or_default();
            format!(
                "ms-diagnostics {}: \"{}\"",
                d.token(),
                shown(&reason, MAX_TEXT)
            )
        });
    let warnings = message.warnings().filter_map(Result::ok).map(|w| {
        format!(
            "warning {} {}: \"{}\"",
            w.code(),
            shown(w.agent(), 100),
            shown(&w.text(), MAX_TEXT)
        )
    });
    // Lazily, so a message with hundreds of such headers costs only the ones shown.
    let parts: Vec<String> = reasons
        .chain(ms_diagnostics)
        .chain(warnings)
        .take(MAX_VALUES)
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

/// The peer's bytes as text: control characters as spaces, at most `max` characters.
fn shown(text: &[u8], max: usize) -> String {
    String::from_utf8_lossy(text)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bye(extra: &str) -> SipMessage {
        let raw = format!(
            "BYE sip:app@10.0.0.21:5061 SIP/2.0\r\nVia: SIP/2.0/TLS 10.0.0.9:5061;branch=z9hG4bK1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:bob@fabrikam.test>;tag=2\r\n\
             To: <sip:app@contoso.test>;tag=1\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\n{extra}\
             Content-Length: 0\r\n\r\n"
        );
        SipMessage::parse_datagram(raw.into(), &sip_core::Limits::default()).unwrap()
    }

    #[test]
    fn reason_headers_say_protocol_cause_and_text() {
        assert_eq!(peer_diagnostics(&bye("")), "");
        assert_eq!(
            peer_diagnostics(&bye(
                "Reason: SIP;cause=200;text=\"Call completed elsewhere\", Q.850;cause=16\r\n"
            )),
            " (reason SIP 200: \"Call completed elsewhere\"; reason Q.850 16: \"\")"
        );
    }

    #[test]
    fn a_long_or_hostile_text_is_bounded_and_has_no_control_characters() {
        let long = "x".repeat(500);
        let d = peer_diagnostics(&bye(&format!(
            "ms-diagnostics: 1;reason=\"{long}\"\r\nWarning: 399 a.test \"line\\\u{7f}break\"\r\n"
        )));
        assert_eq!(d.matches('x').count(), MAX_TEXT, "{d}");
        assert!(d.ends_with("warning 399 a.test: \"line break\")"), "{d}");
        assert!(!d.chars().any(char::is_control), "{d}");
    }
}
