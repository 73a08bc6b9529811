//! Digest credentials for out-of-dialog requests ([`ClientAuth`]): what answers a proxy's
//! `407 Proxy Authentication Required` (or a server's `401 Unauthorized`) to a request of a
//! user-authenticated endpoint by sending it again with credentials (RFC 3261 §22.2,
//! §8.1.3.5), and what lets later requests carry them from the start (§22.3).
//!
//! A real front end challenges a user's INVITE, MESSAGE, SUBSCRIBE and PUBLISH as well as
//! the REGISTER (Kamailio's `proxy_authorize` / `pv_proxy_authenticate`); a trusted
//! application over mutual TLS is not challenged and sends its requests without one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use sip_core::auth::{AuthorizationHeader, Credentials, DigestClient, DigestError};
use sip_core::{HeaderName, SipMessage};

use crate::error::RequestError;

/// How many times one request goes out at most: the first, the answer to a fresh
/// challenge, one `stale=true` restart and one answer for a second realm (a proxy, then
/// the server behind it). [`DigestClient`] already refuses to answer a realm that refused
/// its credentials; this bounds the rest.
pub(crate) const MAX_SENDS: usize = 4;

/// A user's digest credentials and what was learnt from the challenges they answered,
/// attached to out-of-dialog requests with [`OutgoingRequest::authenticate`]. Cheap to
/// clone; the clones share the state, so one endpoint's requests share the nonces and
/// nonce counts learnt.
///
/// When a request carrying it is answered 407 or 401, the platform sends it again with a
/// `Proxy-Authorization` / `Authorization` answering the challenge: same Call-ID, From tag
/// and To, CSeq number + 1, a new branch (RFC 3261 §8.1.3.5, §22.2). For an INVITE the
/// challenge's ACK is the transaction's (no credentials), a CANCEL never carries any, and
/// [`OutgoingInvite`](crate::OutgoingInvite) follows the new transaction. Later requests
/// carry credentials for each realm that challenged before (§22.3), so a front end that
/// challenges every request is answered without a round trip while its nonce lasts.
///
/// Refused credentials (a second challenge for the same realm without `stale=true`), a
/// challenge that cannot be answered (no supported algorithm, no credentials for its realm)
/// or one still challenged after four sends end with
/// [`RequestError::Authentication`]: never a loop.
///
/// [`OutgoingRequest::authenticate`]: crate::OutgoingRequest::authenticate
#[derive(Clone)]
pub struct ClientAuth {
    digest: Arc<Mutex<DigestClient>>,
    /// The servers (realm, Request-URI user and host) whose 401 was answered: a
    /// user-to-user realm's credentials (`Authorization`) go up front to requests for that
    /// user and host only.
    servers: Arc<Mutex<HashSet<(String, String)>>>,
    /// Who the request's end is: only a home party's 401 is answered.
    end: End,
}

/// Who the end of a request is, which decides whether its 401 is answered (RFC 3261
/// §22.2: a 401 comes from the end, a 407 from a proxy on the way).
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// A home party out of any dialog (the default).
    Home,
    /// A federated party ([`ClientAuth::toward_federated_end`]).
    Federated,
    /// The other party of a dialog ([`ClientAuth::in_dialog`]).
    Dialog,
}

/// Who `request` is for: its Request-URI's user and host (lower case), without the
/// parameters (empty when it is not a SIP URI). A 401 comes from the request's end (RFC
/// 3261 §22.2), which the Request-URI names: another user of the same domain is another
/// end, which must not get a digest response for the user's password either.
fn request_target(request: &SipMessage) -> String {
    request
        .request_uri()
        .and_then(Result::ok)
        .and_then(|u| {
            u.as_sip().map(|s| {
                let user = s
                    .user_raw()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let host = String::from_utf8_lossy(s.host_raw()).to_ascii_lowercase();
                format!("{user}@{host}")
            })
        })
        .unwrap_or_default()
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // DigestClient's Debug redacts the password.
        f.debug_tuple("ClientAuth").field(&*self.lock()).finish()
    }
}

impl ClientAuth {
    /// Credentials for every realm that challenges (see [`Credentials::for_realm`] and
    /// [`from_client`](Self::from_client) for several).
    pub fn new(credentials: Credentials) -> Self {
        Self::from_client(DigestClient::new(credentials))
    }

    /// Answers challenges with `client` (several realms' credentials, a fixed cnonce
    /// source for tests).
    pub fn from_client(client: DigestClient) -> Self {
        ClientAuth {
            digest: Arc::new(Mutex::new(client)),
            servers: Arc::default(),
            end: End::Home,
        }
    }

    /// Adds `credentials`, unless some were given for their realm already: e.g. a user's
    /// password for a realm learnt when the registrar challenged. Credentials for a realm
    /// are used for it before credentials for any realm, whichever came first.
    pub fn add_credentials(&self, credentials: Credentials) {
        let mut digest = self.lock();
        let known = credentials
            .realm()
            .is_some_and(|realm| digest.has_credentials_for(realm));
        if !known {
            digest.add_credentials(credentials);
        }
    }

    /// These credentials for a request whose end is a federated party (another company, a
    /// cloud-homed user of a hybrid domain; [`Topology::classify`]): a 407 is still
    /// answered (the home proxy challenges before it forwards), but a 401, which the end
    /// sends (RFC 3261 §22.2), is not, whatever realm it names, and no `Authorization` goes
    /// up front. A digest response for the user's password would let a foreign server try
    /// passwords offline; trust is not transitive.
    ///
    /// [`Topology::classify`]: crate::Topology::classify
    pub(crate) fn toward_federated_end(&self) -> ClientAuth {
        ClientAuth {
            end: End::Federated,
            ..self.clone()
        }
    }

    /// These credentials for the requests of a dialog (a call's MESSAGEs and BYE, a
    /// subscription's refreshes): a proxy's 407 is answered, the other party's 401 is not
    /// (the platform gives these only for dialogs with home parties), and nothing goes up
    /// front: a front
    /// end that challenges requests inside dialogs is rare, and one that does is answered
    /// when it asks.
    pub(crate) fn in_dialog(&self) -> ClientAuth {
        ClientAuth {
            end: End::Dialog,
            ..self.clone()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DigestClient> {
        // The client's state stays consistent if a holder panicked: it is only computed.
        self.digest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds credentials for every realm that challenged before (none at first): a proxy's
    /// realm (407, `Proxy-Authorization`, consumed by the proxy of that realm, RFC 3261
    /// §22.3) on every request; a server's (401, `Authorization`, read by the request's
    /// end, §22.2) only on a request for the Request-URI user and host that asked for it,
    /// so that a request to another party (a federated one, or another user of the same
    /// domain) does not carry a digest response for the user's password to its end.
    pub(crate) fn authorize(&self, message: &mut SipMessage) {
        let host = request_target(message);
        // Both locks are short and taken in this order only (`answer` takes one at a time).
        let servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        let headers = self
            .lock()
            .authorize_if(message, |name, realm| {
                name != HeaderName::Authorization
                    || (self.end == End::Home
                        && servers.iter().any(|(r, h)| r == realm && *h == host))
            })
            .unwrap_or_default();
        drop(servers);
        for h in headers {
            let _ = message.push_header(h.name, h.value);
        }
    }

    /// The credentials that answer `response`, the challenge to `sent`. `Err` when the
    /// challenge is not to be answered (credentials refused, no supported challenge, no
    /// credentials for the realm, a 401 from an end that is not a home party).
    pub(crate) fn answers(
        &self,
        sent: &SipMessage,
        response: &SipMessage,
    ) -> Result<Vec<AuthorizationHeader>, String> {
        if response.status() == Some(401) && self.end != End::Home {
            let end = String::from_utf8_lossy(sent.request_uri_bytes().unwrap_or_default());
            return Err(match self.end {
                End::Dialog => format!(
                    "not answered: a 401 comes from the other party of the dialog ({end}); \
                     inside a dialog only a proxy's 407 is answered"
                ),
                _ => format!(
                    "not answered: a 401 comes from the request's end, {end}, a federated \
                     party; the user's password is answered to home servers only"
                ),
            });
        }
        let headers = self
            .lock()
            .handle_challenge(response, sent)
            .map_err(|e| match e {
                DigestError::Rejected { .. } => format!("{e}: wrong password or unknown user"),
                e => e.to_string(),
            })?;
        let host = request_target(sent);
        {
            let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
            for h in headers
                .iter()
                .filter(|h| h.name == HeaderName::Authorization)
            {
                servers.insert((h.realm.clone(), host.clone()));
            }
        }
        Ok(headers)
    }

    /// The request to send after `sent` was challenged by `response`: `sent` with its old
    /// credentials replaced by the [answers](Self::answers), CSeq + 1 and the top Via `via`
    /// with a new branch.
    pub(crate) fn answer(
        &self,
        sent: &SipMessage,
        response: &SipMessage,
        via: &str,
    ) -> Result<SipMessage, String> {
        let headers = self.answers(sent, response)?;
        let mut retry = sent.clone();
        retry.remove_header(HeaderName::Authorization);
        retry.remove_header(HeaderName::ProxyAuthorization);
        let cseq = sent.cseq().map_err(|e| e.to_string())?;
        let next = cseq.seq().checked_add(1).ok_or("CSeq exhausted")?;
        let method = cseq.method().as_str().to_owned();
        retry
            .set_header(HeaderName::CSeq, format!("{next} {method}"))
            .map_err(|e| e.to_string())?;
        retry
            .set_header(
                HeaderName::Via,
                format!("{via};branch={}", crate::request::branch()),
            )
            .map_err(|e| e.to_string())?;
        for h in headers {
            retry
                .push_header(h.name, h.value)
                .map_err(|e| e.to_string())?;
        }
        Ok(retry)
    }
}

/// Tracks the sends of one request: what to send after a 401/407, or the error to end
/// with.
pub(crate) struct Resend {
    pub(crate) auth: ClientAuth,
    sends: usize,
}

impl Resend {
    pub(crate) fn new(auth: ClientAuth) -> Self {
        Resend { auth, sends: 1 }
    }

    /// What to send after `err` ended the send of `sent`: for a 401 or 407, the request
    /// again with credentials ([`ClientAuth::answer`]), or
    /// [`RequestError::Authentication`]; any other error is returned as it is.
    pub(crate) fn retry(
        &mut self,
        sent: &SipMessage,
        err: RequestError,
        via: &str,
    ) -> Result<SipMessage, RequestError> {
        self.on_challenge(err, |auth, response| auth.answer(sent, response, via))
    }

    /// For a request whose retry someone else builds (one inside a dialog takes the
    /// dialog's next CSeq): the credentials that answer `err`, the challenge to `sent`, or
    /// `err` itself when it is not a 401 or 407, or [`RequestError::Authentication`].
    pub(crate) fn answers(
        &mut self,
        sent: &SipMessage,
        err: RequestError,
    ) -> Result<Vec<AuthorizationHeader>, RequestError> {
        self.on_challenge(err, |auth, response| auth.answers(sent, response))
    }

    /// [`count`](Self::count) for `err` when it is a 401 or 407; `err` as it is otherwise.
    fn on_challenge<T>(
        &mut self,
        err: RequestError,
        answer: impl FnOnce(&ClientAuth, &SipMessage) -> Result<T, String>,
    ) -> Result<T, RequestError> {
        match err {
            RequestError::Status {
                code: code @ (401 | 407),
                reason,
                response,
            } => self.count(code, reason, response, answer),
            other => Err(other),
        }
    }

    /// `answer(auth, response)` as one more send, within [`MAX_SENDS`]; its refusal as
    /// [`RequestError::Authentication`].
    fn count<T>(
        &mut self,
        code: u16,
        reason: String,
        response: Box<SipMessage>,
        answer: impl FnOnce(&ClientAuth, &SipMessage) -> Result<T, String>,
    ) -> Result<T, RequestError> {
        let fail = |detail: String, reason: String, response: Box<SipMessage>| {
            RequestError::Authentication {
                code,
                reason,
                detail,
                response,
            }
        };
        if self.sends >= MAX_SENDS {
            return Err(fail(
                format!("still challenged after {MAX_SENDS} requests"),
                reason,
                response,
            ));
        }
        match answer(&self.auth, &response) {
            Ok(answered) => {
                self.sends += 1;
                Ok(answered)
            }
            Err(detail) => Err(fail(detail, reason, response)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_core::Method;

    fn message() -> SipMessage {
        SipMessage::request(Method::Message, "sip:bob@contoso.test")
            .header(
                HeaderName::Via,
                "SIP/2.0/TLS 127.0.0.1:5061;rport;branch=z9hG4bK1",
            )
            .header(HeaderName::From, "<sip:alice@contoso.test>;tag=a1")
            .header(HeaderName::To, "<sip:bob@contoso.test>")
            .header(HeaderName::CallId, "c1")
            .header(HeaderName::CSeq, "7 MESSAGE")
            .build()
            .unwrap()
    }

    fn challenge(to: &SipMessage, nonce: &str) -> Box<SipMessage> {
        let mut r = SipMessage::response_to(to, 407, "Proxy Authentication Required").unwrap();
        r.push_header(
            HeaderName::ProxyAuthenticate,
            format!(r#"Digest realm="contoso.test", nonce="{nonce}", qop="auth""#),
        )
        .unwrap();
        Box::new(r)
    }

    /// `response` (a 401 or 407) as the error that ends a send.
    fn challenged(response: Box<SipMessage>) -> RequestError {
        RequestError::Status {
            code: response.status().unwrap(),
            reason: "challenged".into(),
            response,
        }
    }

    /// A 401 to `to` from a server of the realm `contoso.test`.
    fn unauthorized(to: &SipMessage) -> SipMessage {
        let mut r = SipMessage::response_to(to, 401, "Unauthorized").unwrap();
        r.push_header(
            HeaderName::WwwAuthenticate,
            r#"Digest realm="contoso.test", nonce="u1", qop="auth""#,
        )
        .unwrap();
        r
    }

    #[test]
    fn the_retry_keeps_the_call_and_takes_the_next_cseq_a_new_branch_and_credentials() {
        let auth = ClientAuth::new(Credentials::new("alice", "pw"));
        let mut resend = Resend::new(auth.clone());
        let sent = message();
        let retry = resend
            .retry(
                &sent,
                challenged(challenge(&sent, "n1")),
                "SIP/2.0/TLS 127.0.0.1:5061;rport",
            )
            .unwrap();
        assert_eq!(retry.call_id().unwrap(), b"c1");
        assert_eq!(
            retry.header(HeaderName::From),
            sent.header(HeaderName::From)
        );
        assert_eq!(retry.cseq().unwrap().seq(), 8);
        let branch = retry.top_via().unwrap().branch().map(str::to_owned);
        assert!(branch.is_some_and(|b| b != "z9hG4bK1" && b.starts_with("z9hG4bK")));
        let creds = retry.header(HeaderName::ProxyAuthorization).unwrap();
        assert!(String::from_utf8_lossy(creds).contains(r#"nonce="n1""#));

        // The same nonce challenged again: the password is wrong, no third request.
        let again = resend.retry(
            &retry,
            challenged(challenge(&retry, "n2")),
            "SIP/2.0/TLS 127.0.0.1:5061;rport",
        );
        match again {
            Err(RequestError::Authentication { code, detail, .. }) => {
                assert_eq!(code, 407);
                assert!(detail.contains("rejected"), "{detail}");
            }
            other => panic!("expected an authentication error, got {other:?}"),
        }

        // A later request carries the credentials learnt, with the next nonce count.
        let mut later = message();
        auth.authorize(&mut later);
        let creds = later.header(HeaderName::ProxyAuthorization).unwrap();
        assert!(String::from_utf8_lossy(creds).contains("nc=00000002"));
    }

    #[test]
    fn stale_restarts_are_bounded() {
        let mut resend = Resend::new(ClientAuth::new(Credentials::new("alice", "pw")));
        let mut sent = message();
        let mut outcome = Ok(());
        for i in 0..10 {
            let mut r =
                SipMessage::response_to(&sent, 407, "Proxy Authentication Required").unwrap();
            r.push_header(
                HeaderName::ProxyAuthenticate,
                format!(r#"Digest realm="contoso.test", nonce="s{i}", qop="auth", stale=true"#),
            )
            .unwrap();
            match resend.retry(&sent, challenged(Box::new(r)), "SIP/2.0/TLS h") {
                Ok(next) => sent = next,
                Err(e) => {
                    outcome = Err((i, e));
                    break;
                }
            }
        }
        let (i, e) = outcome.expect_err("gives up");
        assert!(i < MAX_SENDS, "gave up after {i} challenges");
        assert!(matches!(e, RequestError::Authentication { code: 407, .. }));
    }

    /// A server's (401) credentials go up front to requests for that server's host only;
    /// a proxy's (407) to every request.
    #[test]
    fn a_401_realms_credentials_go_up_front_to_its_host_only() {
        let auth = ClientAuth::new(Credentials::new("alice", "pw"));
        let sent = message();
        let r = unauthorized(&sent);
        auth.answer(&sent, &r, "SIP/2.0/TLS h").unwrap();
        let mut same = message();
        auth.authorize(&mut same);
        assert!(same.header(HeaderName::Authorization).is_some());
        let sent = message();
        auth.answer(&sent, &challenge(&sent, "p1"), "SIP/2.0/TLS h")
            .unwrap();
        let mut elsewhere = SipMessage::request(Method::Message, "sip:bob@fabrikam.test")
            .header(
                HeaderName::Via,
                "SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK2",
            )
            .header(HeaderName::From, "<sip:alice@contoso.test>;tag=a2")
            .header(HeaderName::To, "<sip:bob@fabrikam.test>")
            .header(HeaderName::CallId, "c2")
            .header(HeaderName::CSeq, "1 MESSAGE")
            .build()
            .unwrap();
        auth.authorize(&mut elsewhere);
        assert!(elsewhere.header(HeaderName::Authorization).is_none());
        assert!(elsewhere.header(HeaderName::ProxyAuthorization).is_some());
    }

    /// Toward a federated party's end, a 401 naming a home realm is not answered (its
    /// sender is not a home server) and no Authorization goes up front, while the home
    /// proxy's 407 still is. Before, the 401 got a digest response for the password.
    #[test]
    fn a_federated_ends_401_is_not_answered_even_for_a_home_realm() {
        let home = ClientAuth::new(Credentials::new("alice", "pw").for_realm("contoso.test"));
        let auth = home.toward_federated_end();
        let sent = message();
        let r = unauthorized(&sent);
        let refused = auth.answer(&sent, &r, "SIP/2.0/TLS h").unwrap_err();
        assert!(refused.contains("federated"), "{refused}");
        // The same 401 toward a home end is answered.
        assert!(home.answer(&sent, &r, "SIP/2.0/TLS h").is_ok());
        let mut later = message();
        auth.authorize(&mut later);
        assert!(later.header(HeaderName::Authorization).is_none());
        // The home proxy's 407 is answered either way.
        let retry = auth
            .answer(&sent, &challenge(&sent, "p1"), "SIP/2.0/TLS h")
            .unwrap();
        assert!(retry.header(HeaderName::ProxyAuthorization).is_some());
        assert!(retry.header(HeaderName::Authorization).is_none());
    }

    /// Inside a dialog a proxy's 407 is answered, the other party's 401 is not, and the
    /// sends are bounded as out of dialog.
    #[test]
    fn inside_a_dialog_only_a_407_is_answered() {
        let auth = ClientAuth::new(Credentials::new("alice", "pw")).in_dialog();
        let sent = message();
        let mut resend = Resend::new(auth);
        let answers = resend
            .answers(&sent, challenged(challenge(&sent, "d1")))
            .unwrap();
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].name, HeaderName::ProxyAuthorization);
        let r = unauthorized(&sent);
        match resend.answers(&sent, challenged(Box::new(r))) {
            Err(RequestError::Authentication {
                code: 401, detail, ..
            }) => {
                assert!(detail.contains("dialog"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        // Anything but a challenge is handed back as it is.
        let other = resend.answers(&sent, RequestError::NoDialog);
        assert!(matches!(other, Err(RequestError::NoDialog)), "{other:?}");
    }

    /// Credentials added for a realm are used for it even when credentials for any realm
    /// were given first (those answer every other realm): they were dropped, and the
    /// realm was answered with the wrong user's password.
    #[test]
    fn credentials_added_for_a_realm_beat_ones_for_any_realm() {
        let auth = ClientAuth::new(Credentials::new("alice", "pw"));
        auth.add_credentials(Credentials::new("alice-proxy", "pw2").for_realm("contoso.test"));
        // Credentials for that realm already there: the second ones are not added.
        auth.add_credentials(Credentials::new("mallory", "pw3").for_realm("contoso.test"));
        let sent = message();
        let retry = auth
            .answer(&sent, &challenge(&sent, "n1"), "SIP/2.0/TLS h")
            .unwrap();
        let creds = retry.header(HeaderName::ProxyAuthorization).unwrap();
        let creds = String::from_utf8_lossy(creds);
        assert!(creds.contains(r#"username="alice-proxy""#), "{creds}");
    }
}
