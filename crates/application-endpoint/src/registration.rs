//! REGISTER (RFC 3261 §10) for an endpoint: digest authentication with sip-core's client,
//! refresh before expiry, re-registration after the front end's connection drops, and
//! removal on terminate. A wrong password, or a registrar that does not know the address
//! of record (404), ends it with a typed error, never a retry loop.

use crate::core::EndpointCore;
use crate::state::EndpointState;
use crate::EndpointError;
use bytes::Bytes;
use collaboration_platform::{Address, OnPremises, OutgoingRequest, RequestError};
use sip_core::auth::{Credentials, DigestClient, DigestError};
use sip_core::{Contact, HeaderName, Method, SipMessage};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tracing::{debug, warn};

/// Shortest and longest wait between attempts while the registrar is unreachable. Short on
/// purpose: after a front-end restart the endpoint is back within about a second.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// REGISTERs sent at most for one registration: a fresh challenge, one stale=true restart
/// and one 423 Interval Too Brief, plus the first.
const REGISTER_ROUNDS: usize = 4;

/// Refuses to register `owner` when it has no domain (a `tel:` URI): the registrar is
/// `sip:` + the owner's domain, so its REGISTER could not even be built (it failed as
/// "malformed URI: empty host", which named nothing the application could fix).
pub(crate) fn registrable(owner: &Address<OnPremises>) -> Result<(), EndpointError> {
    if owner.domain().is_empty() {
        return Err(EndpointError::NotRegistrable {
            uri: owner.uri().to_string(),
        });
    }
    Ok(())
}

/// What the registrar granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// Seconds until the binding expires.
    pub expires: u32,
    /// The public GRUU (RFC 5627), when the registrar granted one.
    pub gruu: Option<String>,
}

/// One endpoint's registration state: Call-ID and CSeq kept across refreshes (§10.2.4),
/// digest state kept across challenges.
pub(crate) struct Registration {
    core: Arc<EndpointCore>,
    registrar: String,
    call_id: String,
    from_tag: String,
    cseq: u32,
    expires: u32,
    instance: Option<String>,
    digest: Option<DigestClient>,
    /// The credentials, when given for any realm: a user's requests answer the realms the
    /// registrar challenges with too (see `share_realms`).
    any_realm: Option<Credentials>,
}

impl Registration {
    pub(crate) fn new(
        core: Arc<EndpointCore>,
        credentials: Option<Credentials>,
        expires: u32,
        instance: Option<String>,
    ) -> Self {
        let registrar = format!("sip:{}", core.owner().domain());
        Registration {
            core,
            registrar,
            call_id: crate::ids::call_id(),
            from_tag: crate::ids::tag(),
            cseq: 0,
            expires,
            instance,
            any_realm: credentials.clone().filter(|c| c.realm().is_none()),
            digest: credentials.map(DigestClient::new),
        }
    }

    /// The realms the registrar challenged with are home realms: a user endpoint's
    /// requests answer them with the same password (`UserEndpoint`'s
    /// `home_realm_credentials`). After every granted REGISTER, not only the first: a
    /// refresh or a re-registration after a lost connection may meet a realm the first
    /// did not (another pool of front ends).
    fn share_realms(&self) {
        let (Some(auth), Some(creds), Some(digest)) =
            (self.core.client_auth(), &self.any_realm, &self.digest)
        else {
            return;
        };
        for realm in digest.answered_realms() {
            auth.add_credentials(creds.clone().for_realm(realm));
        }
    }

    fn build(&mut self, expires: u32) -> Result<SipMessage, EndpointError> {
        self.cseq += 1;
        let aor = self.core.owner().uri();
        let mut contact = format!("<{}>", self.core.contact());
        if let Some(i) = &self.instance {
            contact.push_str(&format!(";+sip.instance=\"<{i}>\""));
        }
        let mut b = SipMessage::request(Method::Register, Bytes::from(self.registrar.clone()))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, format!("<{aor}>;tag={}", self.from_tag))
            .header(HeaderName::To, format!("<{aor}>"))
            .header(HeaderName::CallId, self.call_id.clone())
            .header(HeaderName::CSeq, format!("{} REGISTER", self.cseq))
            .header(HeaderName::Contact, contact)
            .header(HeaderName::Expires, expires.to_string());
        if self.instance.is_some() {
            b = b.header(HeaderName::Supported, "gruu");
        }
        // The platform adds its own Via when it sends the message
        // (`OutgoingRequest::from_message`), but `build` validates a request, and a request
        // without Via is invalid: validate with a stand-in Via, then remove it.
        let mut request = b
            .header(
                HeaderName::Via,
                "SIP/2.0/TLS ucma.invalid;branch=z9hG4bKstandin",
            )
            .build()
            .map_err(|e| EndpointError::Request(RequestError::Invalid(e.to_string())))?;
        request.remove_header(HeaderName::Via);
        Ok(request)
    }

    /// One REGISTER with `expires` (0 removes the binding), answering digest challenges and
    /// a 423 Interval Too Brief (asked again with the registrar's Min-Expires, which later
    /// refreshes keep, RFC 3261 §10.2.8).
    pub(crate) async fn register(&mut self, expires: u32) -> Result<Granted, EndpointError> {
        let mut expires = expires;
        let mut request = self.build(expires)?;
        if let Some(d) = &mut self.digest {
            // Credentials learnt from the last challenge, with the next nonce count.
            for h in d.authorize(&request).unwrap_or_default() {
                let _ = request.push_header(h.name, h.value);
            }
        }
        // A fresh challenge, then one stale=true restart at most, one 423, then give up with
        // what the registrar answered last: the caller (establish, the refresh task) decides
        // from it whether to try again, so a registrar that keeps raising Min-Expires must
        // not pass for one that refuses the credentials (which ends the endpoint).
        let mut last_failure = None;
        for _ in 0..REGISTER_ROUNDS {
            let sent = request.clone();
            match self
                .core
                .platform()
                .send_request(OutgoingRequest::from_message(request))
                .await
            {
                Ok(ok) => {
                    self.share_realms();
                    return Ok(granted(&ok, self.core.contact(), expires));
                }
                Err(RequestError::Status {
                    code: code @ (401 | 407),
                    reason,
                    response,
                }) => {
                    let Some(d) = &mut self.digest else {
                        return Err(EndpointError::Authentication {
                            status: code,
                            reason: format!("{reason} (no credentials configured)"),
                        });
                    };
                    let headers = match d.handle_challenge(&response, &sent) {
                        Ok(h) => h,
                        Err(
                            e @ (DigestError::Rejected { .. } | DigestError::NoCredentials { .. }),
                        ) => {
                            return Err(EndpointError::Authentication {
                                status: code,
                                reason: e.to_string(),
                            })
                        }
                        Err(e) => {
                            return Err(EndpointError::Authentication {
                                status: code,
                                reason: e.to_string(),
                            })
                        }
                    };
                    request = self.build(expires)?;
                    for h in headers {
                        let _ = request.push_header(h.name, h.value);
                    }
                    last_failure = Some(EndpointError::Authentication {
                        status: code,
                        reason: format!(
                            "{reason}: challenged again after answering, \
                             gave up after {REGISTER_ROUNDS} REGISTERs"
                        ),
                    });
                }
                Err(RequestError::Status {
                    code: 423,
                    reason,
                    response,
                }) if expires != 0 => {
                    let Some(min) = min_expires_above(&response, expires) else {
                        return Err(EndpointError::Request(RequestError::Status {
                            code: 423,
                            reason: "Interval Too Brief without a usable Min-Expires".into(),
                            response,
                        }));
                    };
                    debug!(
                        asked = expires,
                        min, "registrar wants a longer registration"
                    );
                    expires = min;
                    self.expires = min;
                    request = self.build(expires)?;
                    if let Some(d) = &mut self.digest {
                        for h in d.authorize(&request).unwrap_or_default() {
                            let _ = request.push_header(h.name, h.value);
                        }
                    }
                    last_failure = Some(EndpointError::Request(RequestError::Status {
                        code: 423,
                        reason: format!(
                            "{reason}: still asking for a longer registration \
                             (Min-Expires {min}) after {REGISTER_ROUNDS} REGISTERs; gave up"
                        ),
                        response,
                    }));
                }
                Err(RequestError::Status {
                    code: 403,
                    reason,
                    response,
                }) => {
                    // With what the registrar said about why (a Lync / Skype for Business
                    // registrar says it in ms-diagnostics).
                    return Err(EndpointError::Authentication {
                        status: 403,
                        reason: reason + &collaboration_platform::peer_diagnostics(&response),
                    });
                }
                Err(e) => return Err(EndpointError::Request(e)),
            }
        }
        // Every round that did not return set `last_failure`, and there is at least one.
        Err(last_failure.unwrap_or_else(|| {
            EndpointError::Request(RequestError::Invalid("no REGISTER was sent".into()))
        }))
    }

    /// The requested expiry.
    pub(crate) fn expires(&self) -> u32 {
        self.expires
    }
}

/// Reads the binding the registrar granted for `contact`: its `expires` parameter (else the
/// Expires header, else what was asked) and its `pub-gruu`. Our binding is found by URI
/// equivalence (RFC 3261 §19.1.4), as a registrar may echo it with another case or its
/// parameters reordered; another binding of the AOR (another device) is never read.
fn granted(ok: &SipMessage, contact: &str, asked: u32) -> Granted {
    let ours = sip_core::Uri::parse(contact.as_bytes()).ok();
    let binding = ok.contacts().flatten().find_map(|c| {
        let Contact::Addr(a) = &c else { return None };
        let same = match &ours {
            Some(ours) => a.uri().is_equivalent(ours),
            None => a.uri().as_bytes() == contact.as_bytes(),
        };
        same.then(|| {
            let gruu = a
                .params()
                .get_unquoted("pub-gruu")
                .map(|g| String::from_utf8_lossy(&g).into_owned());
            (c.expires(), gruu)
        })
    });
    let (expires, gruu) = binding.unwrap_or_default();
    let expires = expires
        .or_else(|| ok.expires().and_then(Result::ok))
        .unwrap_or(asked);
    Granted { expires, gruu }
}

/// The `Min-Expires` of a 423 Interval Too Brief answer (RFC 3261 §21.4.17), when it asks
/// for more than `asked`: the lifetime to ask for instead, for REGISTER, SUBSCRIBE and
/// PUBLISH alike.
pub(crate) fn min_expires_above(response: &SipMessage, asked: u32) -> Option<u32> {
    let min = response.header(HeaderName::MinExpires)?;
    let min = std::str::from_utf8(min).ok()?.trim().parse::<u32>().ok()?;
    (min > asked).then_some(min)
}

/// When to refresh a binding of `expires` seconds: at 80 % of it, at least 1 s before
/// the end when that is sooner (never less than 1 s from now).
pub(crate) fn refresh_after(expires: u32) -> Duration {
    let e = u64::from(expires.max(1)) * 1000;
    let at = (e * 8 / 10).min(e.saturating_sub(1000)).max(1000);
    Duration::from_millis(at)
}

/// The least time kept between a registration refresh and the binding's end (half the
/// grant when that is less): room for a challenge, a 423 and a slow registrar.
const REFRESH_MARGIN_MS: u64 = 5_000;

/// When to refresh a registration, subscription or publication granted for `expires`
/// seconds, `r` (any 64-bit value) picking the point: uniformly between 80 % and 90 % of
/// the grant, so that what was set up together (endpoints registered at a restart, a view
/// of thousands of presentities subscribed at once, a front end back after an outage)
/// does not all refresh in one burst; never later than [`REFRESH_MARGIN_MS`] before the
/// end, never sooner than 1 s from now. The 80–90 % window is what common UAs use; RFC
/// 5626 §4.5 randomises its re-registration waits for the same reason.
pub(crate) fn spread_refresh_after(expires: u32, r: u64) -> Duration {
    let e = u64::from(expires.max(1)) * 1000;
    let (early, late) = (e * 8 / 10, e * 9 / 10);
    let at = early + r % (late - early + 1);
    let latest = e - REFRESH_MARGIN_MS.min(e / 2);
    Duration::from_millis(at.min(latest).max(1000))
}

/// The status and reason of a refusal that retrying cannot change: credentials refused
/// (401/407 unanswerable, 403), or the registrar does not know the address of record (404,
/// 604) or declines it (603). Anything else (5xx, 408, 480, timeouts, transport) is worth
/// another attempt; so is a registrar that still answered 423 Interval Too Brief when the
/// rounds ran out: the next attempt starts from the longest Min-Expires it asked for.
fn refused_for_good(e: &EndpointError) -> Option<(u16, String)> {
    match e {
        EndpointError::Authentication { status, reason } => Some((*status, reason.clone())),
        EndpointError::Request(RequestError::Status {
            code: code @ (404 | 603 | 604),
            reason,
            ..
        }) => Some((*code, reason.clone())),
        _ => None,
    }
}

/// The longest Retry-After honoured (RFC 5626 §4.5's max-time): a registrar's "one day"
/// would otherwise leave the endpoint unregistered for a day.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(1800);

/// The Retry-After of a failure response, at most [`RETRY_AFTER_MAX`].
pub(crate) fn retry_after(e: &EndpointError) -> Option<Duration> {
    let EndpointError::Request(RequestError::Status { response, .. }) = e else {
        return None;
    };
    let secs = crate::view::retry_after_of(response)?;
    Some(Duration::from_secs(u64::from(secs)).min(RETRY_AFTER_MAX))
}

/// What the registrar granted last, shared by the task keeping the registration alive
/// (which writes every grant) and the endpoint (which reports it).
type LastGrant = Arc<std::sync::Mutex<Granted>>;

/// Keeps a registration alive until aborted: refreshes, and re-registers (state
/// Reestablishing, then Established) after failures or a lost front-end connection.
/// Each grant replaces `last`: a registrar may grant a refresh another lifetime or GRUU.
///
/// `losses` was subscribed before the first REGISTER went out: a loss of the front-end
/// connection from then on, even one before this task first runs, makes it register again.
/// (Subscribed here, a loss between the grant and the task's start went unseen, and the
/// endpoint stayed Established on a dead flow until its next refresh.)
pub(crate) async fn keep_alive(
    reg: Arc<Mutex<Registration>>,
    last: LastGrant,
    mut losses: tokio::sync::watch::Receiver<u64>,
) {
    let core = reg.lock().await.core.clone();
    // This task starts before `establish()` has moved the endpoint to Established. A
    // loss acted on before then re-registered unseen: the move to Reestablishing needs
    // Established, and `establish()` then reported Established over the lost flow.
    let mut state = core.watch_state();
    if state
        .wait_for(|c| c.state != EndpointState::Establishing)
        .await
        .is_err()
    {
        return;
    }
    drop(state);
    let first = last.lock().unwrap_or_else(|p| p.into_inner()).expires;
    let mut wait = spread_refresh_after(first, crate::ids::random());
    let mut backoff = RETRY_MIN;
    loop {
        let lost = tokio::select! {
            () = tokio::time::sleep(wait) => false,
            changed = losses.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
        };
        // Ended meanwhile (its platform shut down, a terminate() cancelled half way):
        // nothing to keep.
        if core.state() == EndpointState::Terminated {
            return;
        }
        // Only an Established endpoint shows Reestablishing: a Draining one stays
        // Draining (coming back as Established would end the drain in the state), and a
        // terminating one is not revived.
        if lost {
            let _ = core.transition(
                &[EndpointState::Established],
                EndpointState::Reestablishing,
                "connection to the front end lost",
            );
        }
        // What to ask for is read each time: a 423 may have raised it.
        let result = {
            let mut r = reg.lock().await;
            let asked = r.expires();
            r.register(asked).await
        };
        match result {
            Ok(g) => {
                backoff = RETRY_MIN;
                let _ = core.transition(
                    &[EndpointState::Reestablishing],
                    EndpointState::Established,
                    format!("registered again for {} s", g.expires),
                );
                debug!(expires = g.expires, "registration refreshed");
                wait = spread_refresh_after(g.expires, crate::ids::random());
                *last.lock().unwrap_or_else(|p| p.into_inner()) = g;
            }
            Err(EndpointError::Request(RequestError::Shutdown)) => {
                // Nothing will be sent again: not a failure to retry every 2 s for ever.
                core.platform_gone();
                return;
            }
            Err(e) => {
                if let Some((status, reason)) = refused_for_good(&e) {
                    warn!(status, %reason, "registration refused; endpoint terminated");
                    let why = format!("registration refused: {status} {reason}");
                    // Not over a terminate() under way: that one ends the endpoint (and this
                    // task) itself.
                    let live = [
                        EndpointState::Established,
                        EndpointState::Reestablishing,
                        EndpointState::Draining,
                    ];
                    if core
                        .transition(&live, EndpointState::Terminating, why.clone())
                        .is_ok()
                    {
                        core.begin_drain();
                        core.detach_terminated(why).await;
                    }
                    return;
                }
                let _ = core.transition(
                    &[EndpointState::Established],
                    EndpointState::Reestablishing,
                    format!("registration failed: {e}"),
                );
                // A registrar that says when to come back (503 Retry-After, overloaded) is
                // not asked every 2 s meanwhile, by every endpoint it hosts.
                // Never sooner than the backoff: "Retry-After: 0" is no licence to loop.
                wait = retry_after(&e).map_or(backoff, |r| r.max(backoff));
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

/// An endpoint's registration over its life, shared by both endpoint kinds: the first
/// REGISTER, the task keeping it alive, the removal on terminate.
#[derive(Default)]
pub(crate) struct Registered {
    state: Mutex<Option<Running>>,
}

struct Running {
    registration: Arc<Mutex<Registration>>,
    keep_alive: tokio::task::JoinHandle<()>,
    granted: LastGrant,
}

/// An endpoint dropped without `terminate()` stops refreshing: the task holds the core,
/// so left running it would keep the endpoint (and its binding) alive for ever. The
/// binding then lapses at the registrar.
impl Drop for Running {
    fn drop(&mut self) {
        self.keep_alive.abort();
    }
}

impl Registered {
    /// Registers (answering digest challenges) and keeps the registration alive. On
    /// failure the endpoint stops being routed (its handler streams kept) and goes back to
    /// Idle.
    pub(crate) async fn start(
        &self,
        core: &Arc<EndpointCore>,
        credentials: Option<Credentials>,
        expires: u32,
        instance: Option<String>,
    ) -> Result<Granted, EndpointError> {
        let reg = Arc::new(Mutex::new(Registration::new(
            core.clone(),
            credentials,
            expires,
            instance,
        )));
        // Losses count from before the REGISTER (see `keep_alive`).
        let mut losses = core.platform().proxy_losses();
        losses.mark_unchanged();
        let granted = reg.lock().await.register(expires).await;
        let granted = match granted {
            Ok(g) => g,
            Err(e) => {
                // The handler streams stay: the application may establish again.
                core.unroute().await;
                // Not over a terminate() that came meanwhile.
                let _ = core.transition(
                    &[EndpointState::Establishing],
                    EndpointState::Idle,
                    format!("registration failed: {e}"),
                );
                return Err(e);
            }
        };
        let mut state = self.state.lock().await;
        // A terminate() while the REGISTER was out found nothing to stop: the binding it
        // made is for nobody, so it is removed here and nothing keeps it alive. (Checked
        // under the lock: a terminate() from now on finds the running registration.)
        if core.state() != EndpointState::Establishing {
            drop(state);
            let _ = reg.lock().await.register(0).await;
            return Err(EndpointError::NotEstablished(core.state()));
        }
        let last = Arc::new(std::sync::Mutex::new(granted.clone()));
        *state = Some(Running {
            keep_alive: tokio::spawn(keep_alive(reg.clone(), last.clone(), losses)),
            registration: reg,
            granted: last,
        });
        Ok(granted)
    }

    /// What the registrar granted last (the first REGISTER or the latest refresh), while
    /// registered.
    pub(crate) async fn granted(&self) -> Option<Granted> {
        let last = self.state.lock().await.as_ref()?.granted.clone();
        let granted = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(granted)
    }

    /// Stops refreshing and removes the binding; says how that went after `cause` (for
    /// the Terminated state's reason).
    async fn stop(&self, cause: &str) -> String {
        let Some(run) = self.state.lock().await.take() else {
            return cause.to_string();
        };
        run.keep_alive.abort();
        let outcome = run.registration.lock().await.register(0).await;
        match outcome {
            Ok(_) => format!("{cause}; unregistered"),
            Err(e) => format!("{cause}; unregistration failed: {e}"),
        }
    }
}

/// `terminate()` of both endpoint kinds: presence removed, unregistered, unrouted. Calls
/// after the first return when it has finished.
pub(crate) async fn terminate(
    core: &Arc<EndpointCore>,
    presence: &crate::LocalOwnerPresence,
    registered: &Registered,
) {
    end(core, presence, registered, Ending::Terminate).await;
}

/// Makes a platform shutdown end the endpoint as [`terminate`] does (the platform still
/// sends unregistrations, presence removals and BYEs then), through weak references: the
/// hook lives in the core and must not keep the endpoint alive.
pub(crate) fn terminate_on_platform_stop(
    core: &Arc<EndpointCore>,
    presence: &crate::LocalOwnerPresence,
    registered: &Arc<Registered>,
) {
    let weak_core = Arc::downgrade(core);
    let weak_presence = presence.downgrade();
    let weak_registered = Arc::downgrade(registered);
    core.set_stop_hook(Box::new(move || {
        let core = weak_core.upgrade()?;
        let presence = weak_presence.upgrade()?;
        let registered = weak_registered.upgrade()?;
        Some(Box::pin(async move {
            end(&core, &presence, &registered, Ending::PlatformShutDown).await;
        }))
    }));
}

/// Why an endpoint ends the way `terminate()` ends it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    Terminate,
    PlatformShutDown,
}

impl Ending {
    /// The reason the endpoint's states give.
    fn cause(self) -> &'static str {
        match self {
            Ending::Terminate => "terminate() called",
            Ending::PlatformShutDown => "the platform shut down",
        }
    }
}

/// [`terminate`], for `why`.
async fn end(
    core: &Arc<EndpointCore>,
    presence: &crate::LocalOwnerPresence,
    registered: &Registered,
    why: Ending,
) {
    let cause = why.cause();
    let live = [
        EndpointState::Idle,
        EndpointState::Establishing,
        EndpointState::Established,
        EndpointState::Reestablishing,
        EndpointState::Draining,
    ];
    if core
        .transition(&live, EndpointState::Terminating, cause)
        .is_err()
    {
        // Another terminate() (or a refused refresh) is under way: this one is done when
        // that one is, rather than racing it to Terminated with half the work done.
        let mut state = core.watch_state();
        let _ = state
            .wait_for(|c| c.state == EndpointState::Terminated)
            .await;
        return;
    }
    // Calls in progress may still end; new ones are declined (503 with Retry-After) while
    // presence and registration are removed, not accepted into an endpoint about to go.
    core.begin_drain();
    let mut unfinished = Unfinished(Some(core.clone()));
    let _ = presence.remove().await;
    let reason = registered.stop(cause).await;
    if why == Ending::PlatformShutDown {
        // A REGISTER granted to an establish() under way is removed by it; the platform,
        // which stops once the endpoint unroutes (in detach), must still be there for that.
        core.establish_ended().await;
    }
    core.detach_terminated(reason).await;
    unfinished.0 = None;
}

/// Ends a `terminate()` whose future was dropped half way: unrouted and Terminated all the
/// same, or later calls (which wait for Terminated) would wait for ever.
struct Unfinished(Option<Arc<EndpointCore>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(core) = self.0.take() else { return };
        let reason = "terminate() was cancelled; the unregistration may not have been sent";
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    core.detach_terminated(reason).await;
                });
            }
            Err(_) => core.set_state(EndpointState::Terminated, reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_and_capped() {
        let failure = |retry_after: &str| {
            let response = SipMessage::parse_datagram(
                Bytes::from(format!(
                    "SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n\
                     From: <sip:a@d>;tag=1\r\nTo: <sip:a@d>;tag=2\r\nCall-ID: c\r\n\
                     CSeq: 2 REGISTER\r\n{retry_after}Content-Length: 0\r\n\r\n"
                )),
                &sip_core::Limits::DEFAULT,
            )
            .unwrap();
            EndpointError::Request(RequestError::Status {
                code: 503,
                reason: "Service Unavailable".into(),
                response: Box::new(response),
            })
        };
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(retry_after(&failure("Retry-After: 120\r\n")), secs(120));
        assert_eq!(
            retry_after(&failure("Retry-After: 18 (lunch);duration=60\r\n")),
            secs(18)
        );
        assert_eq!(retry_after(&failure("Retry-After: 86400\r\n")), secs(1800));
        assert_eq!(
            retry_after(&failure("Retry-After: 99999999999999999999999\r\n")),
            secs(1800)
        );
        assert_eq!(retry_after(&failure("Retry-After: soon\r\n")), None);
        assert_eq!(retry_after(&failure("")), None);
    }

    #[test]
    fn refresh_happens_before_expiry() {
        assert_eq!(refresh_after(600), Duration::from_secs(480));
        assert_eq!(refresh_after(10), Duration::from_secs(8));
        assert_eq!(refresh_after(3), Duration::from_secs(2));
        assert_eq!(refresh_after(1), Duration::from_secs(1));
        assert_eq!(refresh_after(0), Duration::from_secs(1));
    }

    #[test]
    fn registration_refreshes_are_spread_within_bounds() {
        let ms = |d: Duration| d.as_millis() as u64;
        // Any 64-bit value, the extremes included, lands within the bounds.
        let mut draws: Vec<u64> = vec![0, 1, u64::MAX, u64::MAX / 2];
        draws.extend((0..2000).map(|_| crate::ids::random()));
        for expires in [0u32, 1, 2, 3, 9, 10, 11, 30, 60, 600, 3600, u32::MAX] {
            let e = u64::from(expires.max(1)) * 1000;
            let latest = e - 5000u64.min(e / 2);
            let (low, high) = ((e * 8 / 10).min(latest).max(1000), latest.max(1000));
            for &r in &draws {
                let at = ms(spread_refresh_after(expires, r));
                assert!(at >= low && at <= high, "{expires} s, r {r}: at {at} ms");
                assert!(at <= e * 9 / 10 || at == 1000, "{expires} s: at {at} ms");
            }
        }
        // 600 s: between 480 and 540 s, and really spread (not one instant for all).
        let at: Vec<u64> = draws[4..]
            .iter()
            .map(|&r| ms(spread_refresh_after(600, r)))
            .collect();
        let (min, max) = (at.iter().min().unwrap(), at.iter().max().unwrap());
        assert!(*min >= 480_000 && *max <= 540_000, "{min}..{max}");
        assert!(max - min >= 30_000, "spread over {min}..{max} ms only");
        // 30 s: 24–27 s, but at least 5 s before the end: 24–25 s.
        assert!(draws
            .iter()
            .all(|&r| (24_000..=25_000).contains(&ms(spread_refresh_after(30, r)))));
        // Short grants keep the old floor: a 1 s grant is refreshed after 1 s.
        assert_eq!(spread_refresh_after(1, 12345), Duration::from_secs(1));
    }

    #[test]
    fn granted_reads_our_contact_expiry_and_gruu() {
        let ok = SipMessage::parse_datagram(
            Bytes::from(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n\
                 From: <sip:a@d>;tag=1\r\nTo: <sip:a@d>;tag=2\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n\
                 Contact: <sip:a@10.0.0.1>;expires=50\r\n\
                 Contact: <sip:a@127.0.0.1:5061;transport=tls>;expires=30;pub-gruu=\"sip:a@d;gr=urn:uuid:1\"\r\n\
                 Content-Length: 0\r\n\r\n",
            ),
            &sip_core::Limits::DEFAULT,
        )
        .unwrap();
        let g = granted(&ok, "sip:a@127.0.0.1:5061;transport=tls", 600);
        assert_eq!(g.expires, 30);
        assert_eq!(g.gruu.as_deref(), Some("sip:a@d;gr=urn:uuid:1"));
        let g = granted(&ok, "sip:other@x", 600);
        assert_eq!(
            g,
            Granted {
                expires: 600,
                gruu: None
            }
        );
    }

    fn ok_with(contacts: &str, expires_header: Option<u32>) -> SipMessage {
        let expires = expires_header.map_or(String::new(), |e| format!("Expires: {e}\r\n"));
        SipMessage::parse_datagram(
            Bytes::from(format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n\
                 From: <sip:a@d>;tag=1\r\nTo: <sip:a@d>;tag=2\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n\
                 {contacts}{expires}Content-Length: 0\r\n\r\n"
            )),
            &sip_core::Limits::DEFAULT,
        )
        .unwrap()
    }

    #[test]
    fn granted_finds_our_contact_echoed_in_another_spelling() {
        // Another device's binding first, then ours with the scheme and host upper-cased
        // and its parameters reordered and added to.
        let ok = ok_with(
            "Contact: <sip:a@10.0.0.1>;expires=50;pub-gruu=\"sip:a@d;gr=urn:uuid:other\"\r\n\
             Contact: <SIP:a%40d@HOST.example:5061;ob;Transport=TLS>;expires=30;\
             pub-gruu=\"sip:a@d;gr=urn:uuid:1\"\r\n",
            None,
        );
        let g = granted(&ok, "sip:a%40d@host.example:5061;transport=tls", 600);
        assert_eq!(
            g,
            Granted {
                expires: 30,
                gruu: Some("sip:a@d;gr=urn:uuid:1".into())
            }
        );
    }

    #[test]
    fn granted_never_takes_another_bindings_expiry() {
        let others = "Contact: <sip:a@10.0.0.1>;expires=50;pub-gruu=\"sip:a@d;gr=x\"\r\n\
                      Contact: <sip:a@10.0.0.2;transport=tls>;expires=70\r\n";
        // Ours not listed: the Expires header, else what was asked.
        let ours = "sip:a@10.0.0.2";
        let g = granted(&ok_with(others, Some(120)), ours, 600);
        assert_eq!(
            g,
            Granted {
                expires: 120,
                gruu: None
            }
        );
        let g = granted(&ok_with(others, None), ours, 600);
        assert_eq!(
            g,
            Granted {
                expires: 600,
                gruu: None
            }
        );
        // Listed without its own expires: the Expires header.
        let listed = format!("{others}Contact: <sip:a@10.0.0.2>\r\n");
        let g = granted(&ok_with(&listed, Some(120)), ours, 600);
        assert_eq!(g.expires, 120);
    }
}
