//! SIP messages for the view's unit tests.

use crate::EndpointError;
use bytes::Bytes;
use collaboration_platform::RequestError;
use sip_core::SipMessage;

pub(super) fn message(text: &str) -> SipMessage {
    SipMessage::parse_datagram(Bytes::from(text.to_string()), &sip_core::Limits::DEFAULT)
        .expect("test message")
}

pub(super) fn response(status: u16, extra: &str) -> SipMessage {
    message(&format!(
        "SIP/2.0 {status} {}\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n\
         From: <sip:w@contoso.test>;tag=1\r\nTo: <sip:b@contoso.test>;tag=2\r\n\
         Call-ID: c\r\nCSeq: 1 SUBSCRIBE\r\n{extra}Content-Length: 0\r\n\r\n",
        sip_core::reason_phrase(status)
    ))
}

pub(super) fn status(code: u16, extra: &str) -> EndpointError {
    EndpointError::Request(RequestError::Status {
        code,
        reason: sip_core::reason_phrase(code).to_string(),
        response: Box::new(response(code, extra)),
    })
}

pub(super) fn notify(headers: &str, body: &str) -> SipMessage {
    message(&format!(
        "NOTIFY sip:w@127.0.0.1:5061;transport=tls SIP/2.0\r\n\
         Via: SIP/2.0/TLS fe;branch=z9hG4bK2\r\nMax-Forwards: 70\r\n\
         From: <sip:b@contoso.test>;tag=2\r\nTo: <sip:w@contoso.test>;tag=1\r\n\
         Call-ID: c\r\nCSeq: 2 NOTIFY\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}
