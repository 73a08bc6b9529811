//! Out-of-dialog requests the application sends (UCMA's `SendMessage`): a builder with
//! custom headers and body, or a whole [`SipMessage`].

use bytes::Bytes;
use sip_core::transaction::{new_branch, new_call_id, new_tag, RandomIds};
use sip_core::{HeaderName, Method, SipMessage};
use std::cell::RefCell;

use crate::error::RequestError;

thread_local! {
    /// Branches, tags and Call-IDs come from a per-thread generator: no lock is shared
    /// between callers on the message path.
    static IDS: RefCell<RandomIds> = RefCell::new(RandomIds::new());
}

/// A fresh magic-cookie branch.
pub(crate) fn branch() -> String {
    IDS.with(|ids| new_branch(&mut *ids.borrow_mut()))
}

/// A fresh tag.
pub(crate) fn tag() -> String {
    IDS.with(|ids| new_tag(&mut *ids.borrow_mut()))
}

fn call_id(host: &str) -> String {
    IDS.with(|ids| new_call_id(&mut *ids.borrow_mut(), Some(host)))
}

/// A request to send out of any dialog. Whatever is not given is filled in when it is
/// sent: Via (the platform's, fresh branch, `rport`), Max-Forwards 70, From (the
/// platform's own URI, fresh tag), To (the Request-URI), Call-ID, `CSeq: 1 METHOD` and
/// User-Agent.
#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    inner: Inner,
    /// Credentials to answer a 401/407 with (see [`authenticate`](Self::authenticate)).
    pub(crate) auth: Option<crate::ClientAuth>,
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // built once per request, moved, not stored
enum Inner {
    Parts {
        method: Method,
        uri: String,
        from: Option<String>,
        to: Option<String>,
        call_id: Option<String>,
        cseq: Option<u32>,
        headers: Vec<(String, Bytes)>,
        body: Option<(String, Bytes)>,
    },
    Message(Box<SipMessage>),
}

/// What an in-dialog request adds to what the dialog gives it.
#[derive(Debug, Clone)]
pub(crate) struct InDialogParts {
    pub method: Method,
    pub headers: Vec<(String, Bytes)>,
    pub body: Option<(String, Bytes)>,
}

impl OutgoingRequest {
    /// A `method` request for `request_uri`.
    pub fn new(method: Method, request_uri: impl Into<String>) -> Self {
        OutgoingRequest {
            inner: Inner::Parts {
                method,
                uri: request_uri.into(),
                from: None,
                to: None,
                call_id: None,
                cseq: None,
                headers: Vec::new(),
                body: None,
            },
            auth: None,
        }
    }

    /// A pager `MESSAGE` (RFC 3428) carrying `text` as `text/plain`.
    pub fn message(request_uri: impl Into<String>, text: impl Into<Bytes>) -> Self {
        Self::new(Method::Message, request_uri).body("text/plain", text)
    }

    /// An `OPTIONS` for `request_uri`.
    pub fn options(request_uri: impl Into<String>) -> Self {
        Self::new(Method::Options, request_uri)
    }

    /// A request built entirely by the caller. It must carry From, To, Call-ID and CSeq;
    /// a Via is added when missing (with a branch when the Via has none), and home-trust
    /// headers are still stripped toward federated parties.
    pub fn from_message(request: SipMessage) -> Self {
        OutgoingRequest {
            inner: Inner::Message(Box::new(request)),
            auth: None,
        }
    }

    fn parts(&mut self) -> Option<&mut Inner> {
        match &mut self.inner {
            p @ Inner::Parts { .. } => Some(p),
            Inner::Message(_) => None,
        }
    }

    /// The From value (`<sip:bot@contoso.test>` or a bare URI); a tag is added when
    /// missing. Ignored for [`from_message`](Self::from_message).
    pub fn from(mut self, value: impl Into<String>) -> Self {
        if let Some(Inner::Parts { from, .. }) = self.parts() {
            *from = Some(value.into());
        }
        self
    }

    /// The To value (default: the Request-URI).
    pub fn to(mut self, value: impl Into<String>) -> Self {
        if let Some(Inner::Parts { to, .. }) = self.parts() {
            *to = Some(value.into());
        }
        self
    }

    /// The Call-ID (default: a fresh one).
    pub fn call_id(mut self, value: impl Into<String>) -> Self {
        if let Some(Inner::Parts { call_id, .. }) = self.parts() {
            *call_id = Some(value.into());
        }
        self
    }

    /// The CSeq number (default 1): a request resent with credentials after a 401/407
    /// keeps its Call-ID and takes the next number (RFC 3261 §22.2).
    pub fn cseq(mut self, value: u32) -> Self {
        if let Some(Inner::Parts { cseq, .. }) = self.parts() {
            *cseq = Some(value);
        }
        self
    }

    /// Answers a 401 or 407 to this request with `auth`'s credentials (what a
    /// user-authenticated endpoint's requests carry; see [`ClientAuth`](crate::ClientAuth)):
    /// the platform sends it again with them, keeping the Call-ID and From tag and taking
    /// the next CSeq number, and starts with the credentials learnt from earlier challenges.
    /// For out-of-dialog requests ([`send_request`](crate::CollaborationPlatform::send_request),
    /// [`invite`](crate::CollaborationPlatform::invite),
    /// [`subscribe`](crate::CollaborationPlatform::subscribe)); ignored in a dialog.
    pub fn authenticate(mut self, auth: crate::ClientAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The method.
    pub fn method(&self) -> Method {
        match &self.inner {
            Inner::Parts { method, .. } => method.clone(),
            Inner::Message(m) => m.method().cloned().unwrap_or(Method::Options),
        }
    }

    /// Adds a header field (any name; checked when sent).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        match &mut self.inner {
            Inner::Parts { headers, .. } => headers.push((name.into(), value.into())),
            Inner::Message(m) => {
                let _ = m.push_header(name.into().as_str(), value.into());
            }
        }
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: impl Into<String>, body: impl Into<Bytes>) -> Self {
        match &mut self.inner {
            Inner::Parts { body: b, .. } => *b = Some((content_type.into(), body.into())),
            Inner::Message(m) => {
                let _ = m.set_header(HeaderName::ContentType, content_type.into());
                m.set_body(body.into());
            }
        }
        self
    }

    /// The Request-URI.
    pub fn request_uri(&self) -> String {
        match &self.inner {
            Inner::Parts { uri, .. } => uri.clone(),
            Inner::Message(m) => {
                String::from_utf8_lossy(m.request_uri_bytes().unwrap_or_default()).into_owned()
            }
        }
    }

    /// The method, headers and body, for a request the dialog completes (Request-URI,
    /// From, To, Call-ID, CSeq and Route come from the dialog). A whole message gives its
    /// method, body and the headers a dialog does not set.
    pub(crate) fn into_in_dialog(self) -> InDialogParts {
        match self.inner {
            Inner::Parts {
                method,
                headers,
                body,
                ..
            } => InDialogParts {
                method,
                headers,
                body,
            },
            Inner::Message(m) => {
                let method = m.method().cloned().unwrap_or(Method::Options);
                let skip = [
                    HeaderName::Via,
                    HeaderName::From,
                    HeaderName::To,
                    HeaderName::CallId,
                    HeaderName::CSeq,
                    HeaderName::Route,
                    HeaderName::MaxForwards,
                    HeaderName::ContentLength,
                    HeaderName::ContentType,
                ];
                let headers = m
                    .headers()
                    .filter(|h| !skip.contains(&h.name))
                    .map(|h| (h.name.as_str().to_string(), Bytes::copy_from_slice(h.value)))
                    .collect();
                let body = m
                    .header(HeaderName::ContentType)
                    .map(|ct| (String::from_utf8_lossy(ct).into_owned(), m.body().clone()));
                InDialogParts {
                    method,
                    headers,
                    body,
                }
            }
        }
    }

    /// Builds the wire request. `via` is the Via value without branch
    /// (`SIP/2.0/TLS 127.0.0.1:5061;rport`), `own_uri` the default From.
    pub(crate) fn build(
        self,
        via: &str,
        own_uri: &str,
        user_agent: &str,
    ) -> Result<(SipMessage, String), RequestError> {
        let invalid = |e: sip_core::ParseError| RequestError::Invalid(e.to_string());
        let branch = branch();
        let via = format!("{via};branch={branch}");
        match self.inner {
            Inner::Message(m) => {
                let mut m = *m;
                if !m.is_request() {
                    return Err(RequestError::Invalid("a response is not a request".into()));
                }
                if m.header(HeaderName::Via).is_none() {
                    m.push_header(HeaderName::Via, via).map_err(invalid)?;
                } else if let Some(top) = branchless_only_via(&m) {
                    // The transaction layer would give it a branch the caller (and the
                    // INVITE's handle, which `cancel` finds it by) never learns: ours now.
                    m.set_header(HeaderName::Via, format!("{top};branch={branch}"))
                        .map_err(invalid)?;
                }
                m.validate().map_err(invalid)?;
                let b = m
                    .top_via()
                    .ok()
                    .and_then(|v| v.branch().map(str::to_owned))
                    .unwrap_or_default();
                Ok((m, b))
            }
            Inner::Parts {
                method,
                uri,
                from,
                to,
                call_id: cid,
                cseq,
                headers,
                body,
            } => {
                let from = from.unwrap_or_else(|| format!("<{own_uri}>"));
                let from = if from.contains(";tag=") {
                    from
                } else {
                    let from = if from.starts_with('<') || from.contains('<') {
                        from
                    } else {
                        format!("<{from}>")
                    };
                    format!("{from};tag={}", tag())
                };
                let to = to.unwrap_or_else(|| format!("<{uri}>"));
                let cseq = format!("{} {}", cseq.unwrap_or(1), method.as_str());
                let mut b = SipMessage::request(method, Bytes::from(uri.into_bytes()))
                    .header(HeaderName::Via, via)
                    .header(HeaderName::MaxForwards, "70")
                    .header(HeaderName::From, from)
                    .header(HeaderName::To, to)
                    .header(HeaderName::CallId, cid.unwrap_or_else(|| call_id("ucma")))
                    .header(HeaderName::CSeq, cseq)
                    .header(HeaderName::UserAgent, user_agent.to_string());
                for (n, v) in headers {
                    b = b.header(n.as_str(), v);
                }
                if let Some((ct, body)) = body {
                    b = b.body(&ct, body);
                }
                Ok((b.build().map_err(invalid)?, branch))
            }
        }
    }
}

/// The value of `m`'s Via when it is its only one and has no branch (the transaction
/// layer would add one; with several, it refuses the request).
fn branchless_only_via(m: &SipMessage) -> Option<String> {
    let mut vias = m.headers().filter(|h| h.name == HeaderName::Via);
    let only = vias.next()?;
    if vias.next().is_some() || only.value.contains(&b',') {
        return None;
    }
    let has_branch = m.top_via().ok().is_some_and(|v| v.branch().is_some());
    (!has_branch).then(|| String::from_utf8_lossy(only.value).trim().to_string())
}

impl From<SipMessage> for OutgoingRequest {
    fn from(m: SipMessage) -> Self {
        OutgoingRequest::from_message(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_what_is_missing() {
        let (m, branch) = OutgoingRequest::message("sip:alice@contoso.test", "hi")
            .header("X-Test", "1")
            .build(
                "SIP/2.0/TLS 127.0.0.1:5061;rport",
                "sip:app.contoso.test",
                "ucma-test",
            )
            .unwrap();
        let wire = String::from_utf8(m.to_bytes().to_vec()).unwrap();
        assert!(wire.starts_with("MESSAGE sip:alice@contoso.test SIP/2.0\r\n"));
        assert!(branch.starts_with("z9hG4bK"));
        assert!(wire.contains(&format!(";rport;branch={branch}\r\n")));
        assert!(wire.contains("\r\nFrom: <sip:app.contoso.test>;tag="));
        assert!(wire.contains("\r\nTo: <sip:alice@contoso.test>\r\n"));
        assert!(wire.contains("\r\nCSeq: 1 MESSAGE\r\n"));
        assert!(wire.contains("\r\nX-Test: 1\r\n"));
        assert!(wire.ends_with("\r\n\r\nhi"));
    }

    #[test]
    fn bad_parts_are_invalid_not_panics() {
        let r = OutgoingRequest::options("sip:a@b")
            .header("Bad Name", "x")
            .build("SIP/2.0/TCP h", "sip:h", "ua");
        assert!(matches!(r, Err(RequestError::Invalid(_))));
    }
}
