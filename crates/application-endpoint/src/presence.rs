//! Publishing the endpoint owner's own presence (RFC 3903 PUBLISH with a PIDF body,
//! RFC 3863): initial publication, modification and refresh with `SIP-If-Match`, removal
//! with `Expires: 0`. The presentity is always the endpoint's owner, an on-premises
//! address: there is no way to publish for anyone else, a federated user least of all.

use crate::core::EndpointCore;
use crate::pidf::{self, Availability, PresenceDocument};
use crate::registration::spread_refresh_after;
use crate::{EndpointError, EndpointState};
use bytes::Bytes;
use collaboration_platform::{OutgoingRequest, RequestError};
use sip_core::{HeaderName, Method, SipMessage};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// Default lifetime asked for a publication (seconds).
pub const DEFAULT_PUBLICATION_EXPIRES: u32 = 600;

#[derive(Default)]
struct Published {
    etag: Option<String>,
    document: Option<Bytes>,
    refresher: Option<JoinHandle<()>>,
    /// The server's Min-Expires after a 423 (0: none): asked for from then on.
    min_expires: u32,
}

impl Drop for Published {
    fn drop(&mut self) {
        // Nobody can modify or remove the publication any more (the endpoint and every
        // clone are gone): its refreshes end with it.
        if let Some(t) = self.refresher.take() {
            t.abort();
        }
    }
}

/// A [`LocalOwnerPresence`] held by weak references, so that its holder alone keeps
/// neither the publication nor the endpoint alive: what the refresh task holds, and the
/// platform-stop hook (`registration::terminate_on_platform_stop`).
pub(crate) struct WeakPresence {
    core: Weak<EndpointCore>,
    expires: u32,
    state: Weak<Mutex<Published>>,
}

impl WeakPresence {
    pub(crate) fn upgrade(&self) -> Option<LocalOwnerPresence> {
        Some(LocalOwnerPresence {
            core: self.core.upgrade()?,
            expires: self.expires,
            state: self.state.upgrade()?,
        })
    }
}

/// The owner's presence as published by this endpoint (UCMA's `LocalOwnerPresence`).
/// Cheap to clone; all clones share one publication. It is refreshed while the endpoint
/// or a clone holds it: dropping them all without [`remove`](Self::remove) stops the
/// refreshes, and the publication expires at the server.
#[derive(Clone)]
pub struct LocalOwnerPresence {
    core: Arc<EndpointCore>,
    expires: u32,
    state: Arc<Mutex<Published>>,
}

impl std::fmt::Debug for LocalOwnerPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalOwnerPresence")
            .field("presentity", &self.core.owner().uri())
            .finish_non_exhaustive()
    }
}

impl LocalOwnerPresence {
    pub(crate) fn downgrade(&self) -> WeakPresence {
        WeakPresence {
            core: Arc::downgrade(&self.core),
            expires: self.expires,
            state: Arc::downgrade(&self.state),
        }
    }

    pub(crate) fn new(core: Arc<EndpointCore>) -> Self {
        LocalOwnerPresence {
            core,
            expires: DEFAULT_PUBLICATION_EXPIRES,
            state: Arc::new(Mutex::new(Published::default())),
        }
    }

    /// The presentity (the endpoint's owner).
    pub fn presentity(&self) -> &str {
        self.core.owner().uri()
    }

    /// Publishes `availability` with an optional note.
    ///
    /// Cancel safety: not cancel safe (a PUBLISH may be sent without its entity tag being
    /// kept; the next call starts a new publication).
    pub async fn publish_availability(
        &self,
        availability: Availability,
        note: Option<&str>,
    ) -> Result<(), EndpointError> {
        let doc = PresenceDocument::from_availability(self.presentity(), availability, note);
        self.publish(&doc).await
    }

    /// Publishes a whole PIDF document: the first call creates the publication, later
    /// ones modify it (`SIP-If-Match`). It is refreshed before it expires until
    /// [`remove`](Self::remove) or the endpoint terminates. A server that finds the
    /// lifetime too brief (423 with `Min-Expires`) is asked again with its minimum, kept
    /// for later PUBLISHes.
    ///
    /// Cancel safety: as [`publish_availability`](Self::publish_availability).
    pub async fn publish(&self, document: &PresenceDocument) -> Result<(), EndpointError> {
        self.core.established_id()?;
        if !describes(&document.entity, self.core.owner()) {
            return Err(EndpointError::NotThePresentity {
                entity: document.entity.clone(),
            });
        }
        let body = Bytes::from(document.to_xml());
        let mut st = self.state.lock().await;
        let etag = st.etag.clone();
        let result = match self
            .send_kept(&mut st.min_expires, etag.as_deref(), Some(body.clone()))
            .await
        {
            // The publication expired or the server forgot it (412): start a new one.
            Err(EndpointError::Request(RequestError::Status { code: 412, .. }))
                if etag.is_some() =>
            {
                self.send_kept(&mut st.min_expires, None, Some(body.clone()))
                    .await
            }
            r => r,
        };
        let (etag, expires) = match result {
            Ok(granted) => granted,
            Err(e @ EndpointError::NoEntityTag { .. }) => {
                // Accepted, but it cannot be named any more: nothing to refresh, modify
                // or remove (what was published before is replaced, or lapses).
                forget(&mut st);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        st.etag = Some(etag);
        st.document = Some(body);
        if let Some(t) = st.refresher.take() {
            t.abort();
        }
        let refreshing = self.downgrade();
        let ended = self.core.watch_state();
        st.refresher = Some(tokio::spawn(refresh(refreshing, expires, ended)));
        Ok(())
    }

    /// Removes the publication (`Expires: 0`). Nothing to do when nothing is published, nor
    /// when the server no longer has it (412: it expired, or the server restarted). A
    /// refresh on its way is waited for, so that the removal names the entity tag it brings.
    ///
    /// Cancel safety: not cancel safe (the refresh stops either way).
    pub async fn remove(&self) -> Result<(), EndpointError> {
        let mut st = self.state.lock().await;
        if let Some(t) = st.refresher.take() {
            t.abort();
        }
        st.document = None;
        let Some(etag) = st.etag.take() else {
            return Ok(());
        };
        match self.send(Some(&etag), None, 0).await {
            // The server no longer has it (it expired, or the server restarted): there is
            // nothing left to remove. A removal needs no entity tag back.
            Ok(_)
            | Err(EndpointError::NoEntityTag { .. })
            | Err(EndpointError::Request(RequestError::Status { code: 412, .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The entity tag of the current publication, if any.
    pub async fn etag(&self) -> Option<String> {
        self.state.lock().await.etag.clone()
    }

    /// One PUBLISH asking for the configured lifetime or the server's `min_expires`, asked
    /// again at once with the server's Min-Expires after a 423 Interval Too Brief (RFC 3903
    /// §6), which `min_expires` keeps for later PUBLISHes.
    async fn send_kept(
        &self,
        min_expires: &mut u32,
        if_match: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<(String, u32), EndpointError> {
        let asked = self.expires.max(*min_expires);
        match self.send(if_match, body.clone(), asked).await {
            Err(e) => match e.longer_expires(asked) {
                Some(min) => {
                    debug!(asked, min, "publication too brief (423)");
                    *min_expires = min;
                    self.send(if_match, body, min).await
                }
                None => Err(e),
            },
            ok => ok,
        }
    }

    /// One PUBLISH; returns the new entity tag and the granted lifetime.
    async fn send(
        &self,
        if_match: Option<&str>,
        body: Option<Bytes>,
        expires: u32,
    ) -> Result<(String, u32), EndpointError> {
        let aor = self.core.owner().uri().to_string();
        let mut r = OutgoingRequest::new(Method::Publish, aor.clone())
            .from(format!("<{aor}>"))
            .to(format!("<{aor}>"))
            .header("Event", "presence")
            .header("Expires", expires.to_string());
        if let Some(e) = if_match {
            r = r.header("SIP-If-Match", e.to_string());
        }
        if let Some(b) = body {
            r = r.body(pidf::CONTENT_TYPE, b);
        }
        let ok = self.core.send_request(r).await?;
        publication_of(&ok, expires)
    }
}

/// Drops the publication's entity tag, document and refresh.
fn forget(st: &mut Published) {
    st.etag = None;
    st.document = None;
    if let Some(t) = st.refresher.take() {
        t.abort();
    }
}

/// The entity tag and lifetime a 2xx to PUBLISH grants (RFC 3903 §11.3). The ESC MUST
/// send a SIP-ETag: a 2xx without one (or with an empty one) leaves nothing to name the
/// publication by, so it is an error rather than a publication refreshed as `""`.
fn publication_of(ok: &SipMessage, asked: u32) -> Result<(String, u32), EndpointError> {
    let etag = ok
        .header(HeaderName::SipEtag)
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .filter(|e| !e.is_empty())
        .ok_or(EndpointError::NoEntityTag {
            status: ok.status().unwrap_or(200),
        })?;
    let expires = ok.expires().and_then(Result::ok).unwrap_or(asked);
    Ok((etag, expires))
}

/// Shortest and longest wait before a failed refresh is tried again (doubling between).
const REFRESH_RETRY_MIN: Duration = Duration::from_secs(1);
const REFRESH_RETRY_MAX: Duration = Duration::from_secs(60);

/// How long to wait before trying a refresh again after its `failures`-th failure in a
/// row: the server's Retry-After when it gave one (RFC 3261 §21.5.4), else a doubling
/// backoff, so a server that is down or overloaded is not asked every second by every
/// publication. `None` when the platform has stopped: there is nothing to retry with.
fn refresh_retry(error: &EndpointError, failures: u32) -> Option<Duration> {
    let EndpointError::Request(e) = error else {
        return Some(REFRESH_RETRY_MAX);
    };
    if matches!(e, RequestError::Shutdown) {
        return None;
    }
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let backoff = REFRESH_RETRY_MIN
        .checked_mul(factor)
        .unwrap_or(REFRESH_RETRY_MAX)
        .min(REFRESH_RETRY_MAX);
    // The server's Retry-After, but never sooner than the backoff ("Retry-After: 0" is no
    // licence to loop), as for registrations.
    Some(crate::registration::retry_after(error).map_or(backoff, |r| r.max(backoff)))
}

/// Refreshes the publication until it is removed, and removes it when the endpoint ends
/// without `terminate()` having done so (a registration refused for good, a `terminate()`
/// cancelled half way): otherwise watchers saw the owner as last published until the
/// publication lapsed, and it was refreshed for as long as the endpoint object lived.
async fn refresh(
    refreshing: WeakPresence,
    expires: u32,
    mut state: tokio::sync::watch::Receiver<crate::StateChange>,
) {
    let mut wait = spread_refresh_after(expires, crate::ids::random());
    let mut failures = 0u32;
    loop {
        let ended = tokio::select! {
            () = tokio::time::sleep(wait) => false,
            // An error is the endpoint gone: the upgrade below fails then.
            _ = state.wait_for(|c| c.state == EndpointState::Terminated) => true,
        };
        let Some(p) = refreshing.upgrade() else {
            return;
        };
        // Held across the PUBLISH: a publish() or remove() asked meanwhile waits for the
        // entity tag this refresh brings instead of naming the one it replaces (a 412, and
        // the refreshed publication left at the server until it expires).
        let mut st = p.state.lock().await;
        let Some(etag) = st.etag.clone() else {
            return;
        };
        if ended {
            st.etag = None;
            st.document = None;
            // This task's own handle: dropped, not aborted.
            st.refresher = None;
            let removed = p.send(Some(&etag), None, 0).await;
            debug!(?removed, "publication of a terminated endpoint removed");
            return;
        }
        let document = st.document.clone();
        let result = match p.send_kept(&mut st.min_expires, Some(&etag), None).await {
            Err(EndpointError::Request(RequestError::Status { code: 412, .. })) => {
                // The server lost it: publish the document again from scratch.
                p.send_kept(&mut st.min_expires, None, document).await
            }
            r => r,
        };
        match result {
            Ok((etag, granted)) => {
                debug!(granted, "publication refreshed");
                st.etag = Some(etag);
                failures = 0;
                wait = spread_refresh_after(granted, crate::ids::random());
            }
            Err(e @ EndpointError::NoEntityTag { .. }) => {
                // Refreshed, but with no entity tag to refresh it by next time.
                warn!(error = %e, "publication no longer refreshed");
                st.etag = None;
                st.document = None;
                return;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let Some(retry) = refresh_retry(&e, failures) else {
                    debug!(error = %e, "publication no longer refreshed");
                    return;
                };
                warn!(error = %e, ?retry, "publication refresh failed; retrying");
                wait = retry;
            }
        }
    }
}

/// Does a PIDF `entity` (`pres:`, `sip:` or `sips:` URI) name `owner`? User parts compare
/// exactly, domains case-insensitively; parameters are ignored.
fn describes(
    entity: &str,
    owner: &collaboration_platform::Address<collaboration_platform::OnPremises>,
) -> bool {
    let rest = ["pres:", "sip:", "sips:"].iter().find_map(|scheme| {
        entity
            .get(..scheme.len())
            .filter(|s| s.eq_ignore_ascii_case(scheme))
            .map(|_| &entity[scheme.len()..])
    });
    let Some(rest) = rest else {
        return false;
    };
    let addr = rest.split([';', '?']).next().unwrap_or_default();
    let (user, domain) = match addr.rsplit_once('@') {
        Some((u, d)) => (Some(u), d),
        None => (None, addr),
    };
    user == owner.user() && domain.eq_ignore_ascii_case(owner.domain())
}

#[cfg(test)]
mod tests {
    use super::{describes, publication_of, refresh_retry, EndpointError, REFRESH_RETRY_MAX};
    use collaboration_platform::{Address, RequestError};
    use std::time::Duration;

    fn status(code: u16, extra: &str) -> EndpointError {
        let text = format!(
            "SIP/2.0 {code} {}\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n\
             From: <sip:a@contoso.test>;tag=1\r\nTo: <sip:a@contoso.test>;tag=2\r\n\
             Call-ID: c\r\nCSeq: 1 PUBLISH\r\n{extra}Content-Length: 0\r\n\r\n",
            sip_core::reason_phrase(code)
        );
        let response = sip_core::SipMessage::parse_datagram(
            bytes::Bytes::from(text),
            &sip_core::Limits::DEFAULT,
        )
        .expect("test response");
        EndpointError::Request(RequestError::Status {
            code,
            reason: sip_core::reason_phrase(code).to_string(),
            response: Box::new(response),
        })
    }

    #[test]
    fn a_failed_refresh_backs_off_or_stops() {
        let secs = Duration::from_secs;
        let timeout = EndpointError::Request(RequestError::Timeout);
        let waits: Vec<_> = (1..=8).map(|n| refresh_retry(&timeout, n)).collect();
        let want: Vec<_> = [1, 2, 4, 8, 16, 32, 60, 60].map(|s| Some(secs(s))).into();
        assert_eq!(waits, want);
        assert_eq!(refresh_retry(&timeout, u32::MAX), Some(REFRESH_RETRY_MAX));
        assert_eq!(
            refresh_retry(&status(503, "Retry-After: 30\r\n"), 1),
            Some(secs(30))
        );
        assert_eq!(refresh_retry(&status(500, ""), 2), Some(secs(2)));
        // Retry-After: 0 does not make a tight loop.
        assert_eq!(
            refresh_retry(&status(503, "Retry-After: 0\r\n"), 3),
            Some(secs(4))
        );
        // The platform stopped: nothing can be refreshed any more.
        let stopped = EndpointError::Request(RequestError::Shutdown);
        assert_eq!(refresh_retry(&stopped, 1), None);
    }

    #[test]
    fn a_2xx_must_carry_an_entity_tag() {
        let ok = |extra: &str| {
            let text = format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n\
                 From: <sip:a@contoso.test>;tag=1\r\nTo: <sip:a@contoso.test>;tag=2\r\n\
                 Call-ID: c\r\nCSeq: 1 PUBLISH\r\n{extra}Content-Length: 0\r\n\r\n"
            );
            sip_core::SipMessage::parse_datagram(
                bytes::Bytes::from(text),
                &sip_core::Limits::DEFAULT,
            )
            .expect("test response")
        };
        let granted = publication_of(&ok("SIP-ETag: e1\r\nExpires: 60\r\n"), 600);
        assert_eq!(granted.ok(), Some(("e1".to_string(), 60)));
        assert_eq!(
            publication_of(&ok("SIP-ETag: e2\r\n"), 600).ok(),
            Some(("e2".to_string(), 600))
        );
        for without in ["Expires: 60\r\n", "SIP-ETag: \r\n"] {
            assert!(
                matches!(
                    publication_of(&ok(without), 600),
                    Err(EndpointError::NoEntityTag { status: 200 })
                ),
                "{without:?}"
            );
        }
    }

    #[test]
    fn a_document_must_describe_the_owner() {
        let alice = Address::assume_on_premises("sip:alice@contoso.test").unwrap();
        for same in [
            "sip:alice@contoso.test",
            "pres:alice@Contoso.Test",
            "SIP:alice@contoso.test;transport=tls",
        ] {
            assert!(describes(same, &alice), "{same}");
        }
        for other in [
            "sip:bob@fabrikam.test",
            "pres:Alice@contoso.test",
            "sip:alice@contoso.test.evil",
            "alice@contoso.test",
            "tel:+14255550100",
            "",
        ] {
            assert!(!describes(other, &alice), "{other}");
        }
    }
}
