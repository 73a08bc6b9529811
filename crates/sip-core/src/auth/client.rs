//! The client side: answering 401/407 challenges and authorizing later requests.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use super::challenge::{Challenge, Read};
use super::digest::{format_nc, push_quoted, push_token, ResponseInput};
use super::{DigestError, Qop};
use crate::{HeaderName, SipMessage};

/// A username and password, for one realm or for any realm.
#[derive(Clone)]
pub struct Credentials {
    username: String,
    password: String,
    realm: Option<String>,
}

impl Credentials {
    /// Credentials used for any realm that has no credentials of its own.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
            realm: None,
        }
    }

    /// Restricts these credentials to one realm (compared exactly, as RFC 7616 asks).
    #[must_use]
    pub fn for_realm(mut self, realm: impl Into<String>) -> Credentials {
        self.realm = Some(realm.into());
        self
    }

    /// The username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The realm these credentials are for, `None` for any.
    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("realm", &self.realm)
            .finish()
    }
}

/// One credential header to put on the retried request: `Authorization` (after a 401) or
/// `Proxy-Authorization` (after a 407).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationHeader {
    /// [`HeaderName::Authorization`] or [`HeaderName::ProxyAuthorization`].
    pub name: HeaderName,
    /// The realm it answers.
    pub realm: String,
    /// The header value (`Digest username="…", …`).
    pub value: String,
}

/// Makes client nonces. Injected so tests are deterministic; the default mixes std's
/// per-process random hash keys with a counter and the time (unpredictable enough for a
/// cnonce, which only has to be fresh; not a key generator).
pub type CnonceSource = Box<dyn FnMut() -> String + Send>;

/// How many stale challenges in a row (without a successful reuse in between) before
/// [`DigestError::StaleLoop`].
const MAX_STALE_IN_ROW: u8 = 2;

struct RealmState {
    name: HeaderName,
    challenge: Challenge,
    username: String,
    /// `H(username:realm:password)` for the challenge's algorithm.
    ha1: String,
    cnonce: String,
    nc: u32,
    stale_in_row: u8,
}

/// Answers Digest challenges (RFC 3261 §22, RFC 7616, RFC 8760) and remembers, per realm,
/// the nonce, cnonce and nonce count so later requests can carry credentials up front.
///
/// Sans-IO: it only computes header values. The caller builds the retried request (same
/// Call-ID and tags, CSeq + 1, new branch), removes any old `Authorization` /
/// `Proxy-Authorization` fields and adds the ones returned.
///
/// ```
/// use sip_core::auth::{Credentials, DigestClient};
/// use sip_core::{HeaderName, Method, SipMessage};
///
/// let register = SipMessage::request(Method::Register, "sip:contoso.test")
///     .header(HeaderName::Via, "SIP/2.0/TLS app.contoso.test;branch=z9hG4bK1")
///     .header(HeaderName::From, "<sip:app@contoso.test>;tag=1")
///     .header(HeaderName::To, "<sip:app@contoso.test>")
///     .header(HeaderName::CallId, "c1")
///     .header(HeaderName::CSeq, "1 REGISTER")
///     .build()?;
/// let mut challenge = SipMessage::response_to(&register, 401, "Unauthorized")?;
/// challenge.push_header(
///     HeaderName::WwwAuthenticate,
///     r#"Digest realm="contoso.test", nonce="abc", qop="auth", algorithm=SHA-256"#,
/// )?;
///
/// let mut client = DigestClient::new(Credentials::new("app", "secret"))
///     .with_cnonce_source(Box::new(|| "0a4f113b".to_owned()));
/// let headers = client.handle_challenge(&challenge, &register)?;
/// assert_eq!(headers[0].name, HeaderName::Authorization);
/// assert!(headers[0].value.contains("algorithm=SHA-256"));
/// assert!(headers[0].value.contains("nc=00000001"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DigestClient {
    credentials: Vec<Credentials>,
    cnonce: CnonceSource,
    realms: Vec<RealmState>,
}

impl fmt::Debug for DigestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestClient")
            .field("credentials", &self.credentials)
            .field(
                "realms",
                &self
                    .realms
                    .iter()
                    .map(|r| (&r.challenge.realm, r.nc))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn default_cnonce_source() -> CnonceSource {
    let keys = RandomState::new();
    let mut counter: u64 = 0;
    Box::new(move || {
        counter = counter.wrapping_add(1);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let word = |salt: u64| {
            let mut h = keys.build_hasher();
            h.write_u64(counter);
            h.write_u64(salt);
            h.write_u128(nanos);
            h.finish()
        };
        format!("{:016x}{:016x}", word(1), word(2))
    })
}

impl DigestClient {
    /// A client with one set of credentials.
    pub fn new(credentials: Credentials) -> DigestClient {
        DigestClient {
            credentials: vec![credentials],
            cnonce: default_cnonce_source(),
            realms: Vec::new(),
        }
    }

    /// Adds credentials (typically for another realm: a proxy and a registrar).
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> DigestClient {
        self.credentials.push(credentials);
        self
    }

    /// Adds credentials in place (see [`with_credentials`](Self::with_credentials)).
    pub fn add_credentials(&mut self, credentials: Credentials) {
        self.credentials.push(credentials);
    }

    /// The realms whose challenges were answered (and not [cleared](Self::clear) since),
    /// in the order they first challenged.
    pub fn answered_realms(&self) -> impl Iterator<Item = &str> + '_ {
        self.realms.iter().map(|r| r.challenge.realm.as_str())
    }

    /// Whether some credentials answer `realm` (its own, or credentials for any realm).
    pub fn answers_realm(&self, realm: &str) -> bool {
        self.credentials_for(realm).is_some()
    }

    /// Whether credentials were given for `realm` itself (not for any realm).
    pub fn has_credentials_for(&self, realm: &str) -> bool {
        self.credentials
            .iter()
            .any(|c| c.realm.as_deref() == Some(realm))
    }

    /// Replaces the cnonce generator (tests inject a fixed sequence).
    #[must_use]
    pub fn with_cnonce_source(mut self, source: CnonceSource) -> DigestClient {
        self.cnonce = source;
        self
    }

    /// The nonce count last used for `realm`, if a challenge from it was answered.
    pub fn nonce_count(&self, realm: &str) -> Option<u32> {
        self.realms
            .iter()
            .find(|r| r.challenge.realm == realm)
            .map(|r| r.nc)
    }

    /// Forgets what was learnt from challenges (e.g. after the registration ended).
    pub fn clear(&mut self) {
        self.realms.clear();
    }

    fn credentials_for(&self, realm: &str) -> Option<&Credentials> {
        self.credentials
            .iter()
            .find(|c| c.realm.as_deref() == Some(realm))
            .or_else(|| self.credentials.iter().find(|c| c.realm.is_none()))
    }

    /// Answers a 401 or 407 to `request`: one header per challenging realm, using the
    /// strongest supported algorithm each realm offers (SHA-512-256 > SHA-256 > MD5), and
    /// one for each realm `request` carried credentials for that did not challenge again
    /// (the proxy's, when the registrar challenges next): the retry carries exactly these.
    ///
    /// A realm that challenges again although `request` already carried credentials for it
    /// means the password is wrong — [`DigestError::Rejected`], never another attempt — when
    /// it repeats the nonce sent, or when the credentials were the first use of their nonce
    /// and the new challenge lacks `stale=true`. Credentials used before (cached, with or
    /// without qop) that meet a fresh challenge are answered once: the server may have lost
    /// its nonces (a front end failed over). `stale=true` restarts with the new nonce and
    /// the same credentials.
    pub fn handle_challenge(
        &mut self,
        response: &SipMessage,
        request: &SipMessage,
    ) -> Result<Vec<AuthorizationHeader>, DigestError> {
        let status = response.status().ok_or(DigestError::NotAChallenge)?;
        let (challenge_name, answer_name) = match status {
            401 => (HeaderName::WwwAuthenticate, HeaderName::Authorization),
            407 => (
                HeaderName::ProxyAuthenticate,
                HeaderName::ProxyAuthorization,
            ),
            _ => return Err(DigestError::NotAChallenge),
        };
        let (method, uri) = request_parts(request)?;

        // Read every challenge; keep the strongest per realm, first one on ties.
        let mut chosen: Vec<Challenge> = Vec::new();
        let mut first_error = None;
        for value in response.auth(challenge_name) {
            let Ok(value) = value else {
                first_error.get_or_insert(DigestError::MalformedChallenge("unparsable field"));
                continue;
            };
            match Challenge::read(&value) {
                Ok(Read::Supported(c)) => match chosen.iter_mut().find(|x| x.realm == c.realm) {
                    Some(x) if c.algorithm.strength() > x.algorithm.strength() => *x = c,
                    Some(_) => {}
                    None => chosen.push(c),
                },
                Ok(Read::Unsupported) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if chosen.is_empty() {
            return Err(first_error.unwrap_or(DigestError::NoSupportedChallenge));
        }

        let mut out = Vec::with_capacity(chosen.len());
        for challenge in chosen {
            let realm = challenge.realm.clone();
            let previous = self
                .realms
                .iter()
                .position(|r| r.name == answer_name && r.challenge.realm == realm);
            if let Some((sent_nonce, sent_nc)) = sent_credentials(request, answer_name, &realm) {
                let same_nonce = sent_nonce == challenge.nonce;
                // Which use of its nonce the request was: its `nc` (qop), else, for
                // credentials without qop (RFC 2069 style), how often we used that nonce.
                // Only a first use refused by a fresh challenge says the password is wrong;
                // cached credentials meet fresh challenges when the server lost its nonces.
                let use_of_nonce = sent_nc.or_else(|| {
                    previous
                        .map(|i| &self.realms[i])
                        .filter(|r| r.challenge.nonce == sent_nonce)
                        .map(|r| r.nc)
                });
                if same_nonce || (!challenge.stale && use_of_nonce.unwrap_or(1) <= 1) {
                    return Err(DigestError::Rejected { realm, status });
                }
            }
            let stale_in_row = match (challenge.stale, previous) {
                (true, Some(i)) => self.realms[i].stale_in_row.saturating_add(1),
                (true, None) => 1,
                (false, _) => 0,
            };
            if stale_in_row > MAX_STALE_IN_ROW {
                return Err(DigestError::StaleLoop { realm });
            }
            let Some(creds) = self.credentials_for(&realm) else {
                first_error.get_or_insert(DigestError::NoCredentials { realm });
                continue;
            };
            let ha1 = challenge
                .algorithm
                .base()
                .ha1(&creds.username, &realm, &creds.password);
            let username = creds.username.clone();
            // A nonce we used already (a request sent without credentials, challenged
            // with it again) keeps its count and cnonce: `nc` counts the requests sent
            // with the nonce (RFC 7616 §3.4), and a server that tracks it (ours does)
            // takes a second nc=1 for a replay.
            let (cnonce, nc) = match previous.map(|i| &self.realms[i]) {
                Some(p)
                    if p.challenge.nonce == challenge.nonce
                        && p.challenge.algorithm == challenge.algorithm =>
                {
                    (p.cnonce.clone(), p.nc)
                }
                _ => ((self.cnonce)(), 0),
            };
            let state = RealmState {
                name: answer_name,
                username,
                ha1,
                cnonce,
                nc,
                stale_in_row,
                challenge,
            };
            let slot = match previous {
                Some(i) => {
                    self.realms[i] = state;
                    i
                }
                None => {
                    self.realms.push(state);
                    self.realms.len() - 1
                }
            };
            out.push(next_header(
                &mut self.realms[slot],
                method,
                &uri,
                request.body(),
            ));
        }
        if out.is_empty() {
            return Err(first_error.unwrap_or(DigestError::NoSupportedChallenge));
        }
        // The request passed the hops it carried credentials for: those go on the retry
        // too (RFC 3261 §22.3), or behind a proxy (407) and a registrar (401) each retry
        // would satisfy one and be challenged by the other, for ever.
        for state in &mut self.realms {
            let answered = out
                .iter()
                .any(|h| h.name == state.name && h.realm == state.challenge.realm);
            if !answered && sent_credentials(request, state.name, &state.challenge.realm).is_some()
            {
                out.push(next_header(state, method, &uri, request.body()));
            }
        }
        Ok(out)
    }

    /// Credentials for a new request from every challenge answered so far (RFC 3261
    /// §22.3 lets a UA reuse them for the same realm), each with its nonce count
    /// incremented. Empty when nothing was learnt yet.
    pub fn authorize(
        &mut self,
        request: &SipMessage,
    ) -> Result<Vec<AuthorizationHeader>, DigestError> {
        self.authorize_if(request, |_, _| true)
    }

    /// As [`authorize`](Self::authorize), for the realms `keep` takes only (given the
    /// header name, [`HeaderName::Authorization`] or [`HeaderName::ProxyAuthorization`],
    /// and the realm): the others' nonce counts are left as they were. E.g. a user-to-user
    /// realm's credentials (a 401) go to the server that asked for them only.
    pub fn authorize_if(
        &mut self,
        request: &SipMessage,
        mut keep: impl FnMut(HeaderName, &str) -> bool,
    ) -> Result<Vec<AuthorizationHeader>, DigestError> {
        let (method, uri) = request_parts(request)?;
        Ok(self
            .realms
            .iter_mut()
            .filter(|state| keep(state.name, &state.challenge.realm))
            .map(|state| {
                state.stale_in_row = 0;
                next_header(state, method, &uri, request.body())
            })
            .collect())
    }
}

fn request_parts(request: &SipMessage) -> Result<(&str, String), DigestError> {
    let method = request.method().ok_or(DigestError::NotARequest)?.as_str();
    let uri = request
        .request_uri_bytes()
        .ok_or(DigestError::NotARequest)?;
    Ok((method, String::from_utf8_lossy(uri).into_owned()))
}

/// The nonce and nonce count of the Digest credentials `request` carried for `realm` (no
/// count without qop).
fn sent_credentials(
    request: &SipMessage,
    name: HeaderName,
    realm: &str,
) -> Option<(String, Option<u32>)> {
    request.auth(name).flatten().find_map(|v| {
        if !v.scheme().eq_ignore_ascii_case("Digest")
            || v.param("realm")?.as_ref() != realm.as_bytes()
        {
            return None;
        }
        let nonce = String::from_utf8_lossy(&v.param("nonce")?).into_owned();
        let nc = v
            .param("nc")
            .and_then(|n| u32::from_str_radix(std::str::from_utf8(&n).ok()?, 16).ok());
        Some((nonce, nc))
    })
}

fn next_header(
    state: &mut RealmState,
    method: &str,
    uri: &str,
    body: &[u8],
) -> AuthorizationHeader {
    state.nc = state.nc.saturating_add(1);
    let c = &state.challenge;
    let qop = if c.qop.contains(&Qop::Auth) {
        Some(Qop::Auth)
    } else {
        c.qop.first().copied()
    };
    let response = ResponseInput {
        algorithm: c.algorithm,
        ha1: &state.ha1,
        nonce: &c.nonce,
        cnonce: &state.cnonce,
        nc: state.nc,
        qop,
        method,
        uri,
        body,
    }
    .compute();
    let username = if c.userhash {
        c.algorithm.userhash(&state.username, &c.realm)
    } else {
        state.username.clone()
    };
    let mut v = String::from("Digest ");
    push_quoted(&mut v, "username", &username);
    push_quoted(&mut v, "realm", &c.realm);
    push_quoted(&mut v, "nonce", &c.nonce);
    push_quoted(&mut v, "uri", uri);
    push_quoted(&mut v, "response", &response);
    push_token(&mut v, "algorithm", c.algorithm.as_str());
    if qop.is_some() || c.algorithm.is_session() {
        push_quoted(&mut v, "cnonce", &state.cnonce);
    }
    if let Some(o) = &c.opaque {
        push_quoted(&mut v, "opaque", o);
    }
    if let Some(q) = qop {
        push_token(&mut v, "qop", q.as_str());
        push_token(&mut v, "nc", &format_nc(state.nc));
    }
    if c.userhash {
        push_token(&mut v, "userhash", "true");
    }
    AuthorizationHeader {
        name: state.name,
        realm: c.realm.clone(),
        value: v,
    }
}
