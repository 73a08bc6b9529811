//! [`CollaborationPlatform`]: start, send, register endpoints, shut down.

use crate::auth::Resend;
use crate::dispatch::EndpointId;
use crate::error::{PlatformError, RequestError};
use crate::failover::ProxyPool;
use crate::federation::{strip_home_trust, strip_impersonated_names, OwnIdentities};
use crate::incoming::IncomingRequest;
use crate::invite::OutgoingInvite;
use crate::request::OutgoingRequest;
use crate::runtime::{BoundListener, Command, Driver, DriverConfig, ShutdownReport};
use crate::settings::{Common, ListenerKind, PlatformSettings, ProxyHost, ProxyTransport};
use crate::topology::{Address, Homed, OnPremises, Topology, TopologyError};
use bytes::Bytes;
use sip_core::{DialogId, Method, SipMessage};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;
use transport_tls::{
    ClientAuth, SipTransport, Target, TlsClientSettings, TlsServerSettings, TransportKind,
};

/// The running platform: transports, the runtime that drives sip-core's transaction
/// machines, the topology, and dispatch to endpoints. Cheap to clone (all clones are the
/// same platform); when the last clone is dropped the platform shuts down with no grace.
#[derive(Clone)]
pub struct CollaborationPlatform {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    topology: Topology,
    via: String,
    own_uri: String,
    /// The identities the application speaks as itself (see [`OwnIdentities`]).
    identities: Arc<OwnIdentities>,
    user_agent: String,
    listeners: Vec<BoundListener>,
    /// The proxy's server in use, written by the runtime when it fails over.
    proxy: tokio::sync::watch::Sender<Target>,
    next_endpoint: AtomicU64,
    endpoint_capacity: usize,
    proxy_losses: tokio::sync::watch::Sender<u64>,
    dialog_endings: tokio::sync::broadcast::Sender<crate::DialogEnded>,
    /// True from the moment a shutdown begins (written by the runtime).
    stopping: tokio::sync::watch::Receiver<bool>,
    grace: std::time::Duration,
}

impl std::fmt::Debug for CollaborationPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollaborationPlatform")
            .field("own_uri", &self.inner.own_uri)
            .field("proxy", &*self.inner.proxy.borrow())
            .field("listeners", &self.inner.listeners)
            .finish_non_exhaustive()
    }
}

impl CollaborationPlatform {
    /// Opens the listeners, prepares the TLS client (presenting the application's
    /// certificate), locates the outbound proxy, and starts the runtime. Must run inside a
    /// tokio runtime.
    ///
    /// A proxy given by domain ([`OutboundProxy::tls_domain`](crate::OutboundProxy::tls_domain))
    /// is connected to here: its servers are tried in the order located (RFC 3263 §4.3) and
    /// the first that opens (TCP connect, then for TLS the handshake, after which the server
    /// must keep the connection: a keep-alive ping is answered, or nothing closes it for up
    /// to 2 s) is used; if none does, start fails with [`PlatformError::ProxyUnreachable`]
    /// naming each server and why (a front end that refuses the platform's certificate is
    /// named so, also under TLS 1.3 where it refuses after the handshake). Each dead server
    /// costs at most the transport's `TransportLimits::handshake_timeout` (default 10 s; a
    /// refused port, at once); a TLS server that accepts and never pongs costs those 2 s once.
    /// A proxy given by address is connected to by the first request, as there is nothing to
    /// choose.
    ///
    /// Cancel safety: cancel safe; if cancelled, listeners already opened close again when
    /// the transport they belong to is dropped.
    pub async fn start(
        settings: impl Into<PlatformSettings>,
    ) -> Result<CollaborationPlatform, PlatformError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(PlatformError::NoRuntime);
        }
        let settings = settings.into();
        let (common, identity, fqdn, listeners, trusted_peers): (
            Common,
            _,
            Option<String>,
            _,
            Vec<String>,
        ) = match settings {
            PlatformSettings::Server(s) => (
                s.common,
                Some(s.identity),
                Some(s.fqdn),
                s.listeners,
                s.trusted_peers,
            ),
            PlatformSettings::Client(c) => {
                let peers = c.common.proxy.server_name().map(str::to_string);
                (
                    c.common,
                    c.identity,
                    None,
                    Vec::new(),
                    peers.into_iter().collect(),
                )
            }
        };
        // Compared with a certificate's names as DNS names, the way the topology compares
        // domains: `FE.contoso.test.` is the front end `fe.contoso.test`.
        let trusted_peers: Vec<String> = trusted_peers
            .iter()
            .map(|n| crate::topology::domain_key(n).into_owned())
            .collect();
        let mut tls_client = TlsClientSettings::new(common.roots.clone());
        if let Some(id) = &identity {
            tls_client = tls_client.identity(id.clone());
        }
        let (transport, events) =
            SipTransport::new(common.transport.clone().tls_client(tls_client))?;
        let mut bound = Vec::new();
        for l in &listeners {
            let addr = match l.kind {
                ListenerKind::MutualTls => {
                    let Some(id) = &identity else { continue };
                    let auth = if l.allow_untrusted {
                        ClientAuth::Optional(common.roots.clone())
                    } else {
                        ClientAuth::Required(common.roots.clone())
                    };
                    let tls = TlsServerSettings::new(id.clone(), auth);
                    transport.listen_tls(l.addr, &tls).await?
                }
                ListenerKind::Tcp => transport.listen_tcp(l.addr).await?,
                ListenerKind::Udp => transport.bind_udp(l.addr).await?,
            };
            bound.push(BoundListener {
                kind: l.kind,
                addr,
                allow_untrusted: l.allow_untrusted,
            });
        }
        let (proxy, pool) = match &common.proxy.host {
            ProxyHost::Addr(a) => (common.proxy.transport.target(*a), None),
            // RFC 3263: overrides, then NAPTR/SRV/A for the proxy's domain; the servers are
            // tried in that order and the first that connects is used (§4.3).
            ProxyHost::Domain(d) => {
                let pool = Self::choose_proxy(&transport, &common, d).await?;
                (pool.target(pool.servers[pool.current]), Some(pool))
            }
        };
        let via_transport = proxy.transport;
        let sent_by = bound
            .iter()
            .find(|l| match via_transport {
                TransportKind::Tls => l.kind == ListenerKind::MutualTls,
                _ => l.kind == ListenerKind::Tcp,
            })
            .map(|l| l.addr.to_string())
            .or_else(|| fqdn.clone())
            .unwrap_or_else(|| "ucma.invalid".to_string());
        let via = format!("SIP/2.0/{} {sent_by};rport", via_transport.as_str());
        let own_uri = match &fqdn {
            Some(f) => format!("sip:{f}"),
            None => "sip:anonymous@anonymous.invalid".to_string(),
        };
        let identities = Arc::new(OwnIdentities::default());
        if let Ok(own) = Address::<OnPremises>::assume_on_premises(&own_uri) {
            identities.insert(&own);
        }
        let (commands, commands_rx) = mpsc::channel(common.command_capacity);
        let proxy_losses = tokio::sync::watch::Sender::new(0u64);
        let proxy_now = tokio::sync::watch::Sender::new(proxy.clone());
        let dialog_endings = tokio::sync::broadcast::Sender::new(crate::dialog_end::CAPACITY);
        let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
        let server = bytes::Bytes::copy_from_slice(common.user_agent.as_bytes());
        let (driver, feedback) = Driver::new(DriverConfig {
            transport,
            proxy: proxy.clone(),
            proxy_pool: pool,
            proxy_now: proxy_now.clone(),
            listeners: bound.clone(),
            trusted_peers,
            topology: common.topology.clone(),
            server: server.clone(),
            transaction: common.transaction,
            commands: commands.downgrade(),
            observer: common.observer.clone(),
            via: via.clone(),
            identities: identities.clone(),
            user_agent: server.clone(),
            proxy_losses: proxy_losses.clone(),
            dialog_endings: dialog_endings.clone(),
            stopping,
        });
        tokio::spawn(
            driver
                .run(commands_rx, events, feedback)
                .instrument(tracing::info_span!("ucma_platform", uri = %own_uri)),
        );
        Ok(CollaborationPlatform {
            inner: Arc::new(Inner {
                commands,
                topology: common.topology,
                via,
                own_uri,
                identities,
                user_agent: common.user_agent,
                listeners: bound,
                proxy: proxy_now,
                next_endpoint: AtomicU64::new(1),
                proxy_losses,
                dialog_endings,
                stopping: stopping_rx,
                endpoint_capacity: common.endpoint_capacity,
                grace: common.shutdown_grace,
            }),
        })
    }

    /// Sends an out-of-dialog request to the outbound proxy and returns its 2xx final
    /// response, or why there was none. A request for a federated party (classified by the
    /// [`Topology`] from the Request-URI) leaves without home-trust headers; one for a
    /// blocked or not-allowed partner is not sent ([`RequestError::Refused`]).
    ///
    /// An INVITE is refused ([`RequestError::Invalid`], nothing sent): its 2xx needs an ACK
    /// and makes a dialog, which [`invite`](Self::invite) takes care of and this does not.
    ///
    /// Cancel safety: if cancelled while waiting for room in the command queue, nothing was
    /// sent. Cancelled later, the request is sent and its transaction runs to its end; only
    /// the response is lost.
    pub async fn send_request(
        &self,
        request: impl Into<OutgoingRequest>,
    ) -> Result<SipMessage, RequestError> {
        let request = request.into();
        if request.method() == Method::Invite {
            return Err(RequestError::Invalid(
                "an INVITE is sent with invite or invite_without_offer (its 2xx is ACKed)".into(),
            ));
        }
        let Prepared {
            mut message,
            span,
            resend,
            ..
        } = self.prepare(request)?;
        let Some(mut resend) = resend else {
            return self.send_once(message, span).await;
        };
        let mut span = span;
        loop {
            let sent = message.clone();
            match self.send_once(message, span).await {
                Err(e) => {
                    message = resend.retry(&sent, e, &self.inner.via)?;
                    span = resent_span(&message);
                }
                ok => return ok,
            }
        }
    }

    /// One non-INVITE client transaction for `message`; its 2xx or why there was none.
    async fn send_once(
        &self,
        message: SipMessage,
        span: tracing::Span,
    ) -> Result<SipMessage, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Send {
                request: message,
                reply,
                span,
            })
            .await
            .map_err(|_| RequestError::Shutdown)?;
        rx.await.unwrap_or(Err(RequestError::Shutdown))
    }

    /// Sends an INVITE on behalf of `endpoint` and returns at once with a handle that
    /// yields its provisional responses, can cancel it, and gives its outcome: the 2xx
    /// (the platform has sent the ACK and the dialog is confirmed; its requests go to
    /// `endpoint`) or why there was none. A request without a Contact gets the endpoint's
    /// (see [`contact_uri`](Self::contact_uri)), as does the SUBSCRIBE or REFER of
    /// [`subscribe`](Self::subscribe).
    ///
    /// A request the callee sends in the dialog before its 2xx reaches us (it can overtake
    /// the 2xx on another connection) is held until the INVITE's final response, then
    /// taken in the dialog that response made (or answered 481 if none was made); at most
    /// 16 per INVITE, past which they get 481 at once.
    ///
    /// Cancel safety: if cancelled while waiting for room in the command queue, nothing was
    /// sent; later, the INVITE is sent and answered without the caller.
    pub async fn invite(
        &self,
        endpoint: EndpointId,
        request: impl Into<OutgoingRequest>,
    ) -> Result<OutgoingInvite, RequestError> {
        self.start_invite(endpoint, request.into(), false).await
    }

    /// Sends an INVITE without an offer (a delayed offer, RFC 3261 §13.2.1: the request
    /// has no body), as [`invite`](Self::invite) does, except for the ACK: the 2xx brings
    /// the offer and the ACK must carry the answer (§13.2.2.4), which only the application
    /// can write. So the platform holds the ACK until
    /// [`send_ack_answer`](Self::send_ack_answer) gives the answer (the 2xx's
    /// retransmissions are absorbed meanwhile), then sends that ACK for each of them.
    /// Without an answer within 64·T1 (how long the far end waits for an ACK) the
    /// platform ACKs with an answer that refuses every stream, sends BYE and announces
    /// [`DialogEndReason::NoAnswer`](crate::DialogEndReason::NoAnswer). A 2xx after
    /// [`OutgoingInvite::cancel`], or from a fork other than the one the caller got (for
    /// 64·T1 after the outcome), is refused the same way at once.
    ///
    /// Cancel safety: as [`invite`](Self::invite).
    pub async fn invite_without_offer(
        &self,
        endpoint: EndpointId,
        request: impl Into<OutgoingRequest>,
    ) -> Result<OutgoingInvite, RequestError> {
        self.start_invite(endpoint, request.into(), true).await
    }

    /// Sends the ACK held for the 2xx of an INVITE sent by
    /// [`invite_without_offer`](Self::invite_without_offer) (or of a re-INVITE without an
    /// offer sent by [`send_in_dialog`](Self::send_in_dialog)), with `body` (the answer to
    /// the 2xx's offer, e.g. `application/sdp`) in it. Fails with
    /// [`RequestError::NoDialog`] if `dialog` has no ACK waiting for an answer (it was
    /// sent, given up on, or the dialog ended).
    ///
    /// Cancel safety: if cancelled before the platform took the command, no ACK was sent;
    /// later, it is sent without the caller.
    pub async fn send_ack_answer(
        &self,
        dialog: &DialogId,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Result<(), RequestError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::AckAnswer {
                dialog: dialog.clone(),
                content_type: content_type.to_owned(),
                body: body.into(),
                reply,
            })
            .await
            .map_err(|_| RequestError::Shutdown)?;
        rx.await.unwrap_or(Err(RequestError::Shutdown))
    }

    async fn start_invite(
        &self,
        endpoint: EndpointId,
        request: OutgoingRequest,
        hold_ack: bool,
    ) -> Result<OutgoingInvite, RequestError> {
        let Prepared {
            message,
            branch,
            span,
            resend,
        } = self.prepare(request)?;
        if message.method() != Some(&Method::Invite) {
            return Err(RequestError::Invalid("not an INVITE".into()));
        }
        if hold_ack && !message.body().is_empty() {
            return Err(RequestError::Invalid(
                "an INVITE without an offer has no body".into(),
            ));
        }
        let resend = resend.map(|resend| crate::invite::InviteResend {
            resend,
            sent: message.clone(),
            endpoint,
            hold_ack,
            via: self.inner.via.clone(),
        });
        let (ptx, prx) = mpsc::channel(8);
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::SendDialogCreating {
                request: message,
                endpoint,
                provisional: Some(ptx),
                hold_ack,
                reply,
                span,
            })
            .await
            .map_err(|_| RequestError::Shutdown)?;
        Ok(OutgoingInvite::new(
            branch,
            prx,
            rx,
            self.inner.commands.clone(),
            resend,
        ))
    }

    /// Sends a SUBSCRIBE (or REFER) on behalf of `endpoint` and returns its 2xx with the
    /// subscription's dialog; the NOTIFYs of the subscription (even one that overtakes the
    /// 2xx) go to `endpoint`.
    ///
    /// Cancel safety: as [`send_request`](Self::send_request).
    pub async fn subscribe(
        &self,
        endpoint: EndpointId,
        request: impl Into<OutgoingRequest>,
    ) -> Result<(SipMessage, DialogId), RequestError> {
        let Prepared {
            mut message,
            mut span,
            mut resend,
            ..
        } = self.prepare(request.into())?;
        let (response, made) = loop {
            let sent = resend.as_ref().map(|_| message.clone());
            let (reply, rx) = oneshot::channel();
            self.inner
                .commands
                .send(Command::SendDialogCreating {
                    request: message,
                    endpoint,
                    provisional: None,
                    hold_ack: false,
                    reply,
                    span,
                })
                .await
                .map_err(|_| RequestError::Shutdown)?;
            match (
                rx.await.unwrap_or(Err(RequestError::Shutdown)),
                &mut resend,
                sent,
            ) {
                (Err(e), Some(resend), Some(sent)) => {
                    message = resend.retry(&sent, e, &self.inner.via)?;
                    span = resent_span(&message);
                }
                (outcome, _, _) => break outcome?,
            }
        };
        // A subscription's 2xx without a To tag makes no dialog (only an INVITE's gets a
        // null remote tag): there is none to name.
        let dialog = made
            .or_else(|| {
                response.to().ok()?.tag()?;
                crate::runtime::uac_dialog_id(&response)
            })
            .ok_or_else(|| RequestError::Invalid("2xx without a To tag".into()))?;
        Ok((response, dialog))
    }

    /// Sends `request` inside `dialog`: its method, headers and body are kept; Request-URI,
    /// Route, From, To, Call-ID and CSeq come from the dialog (RFC 3261 §12.2.1.1). A BYE
    /// ends the dialog when sent. Returns the 2xx, or why there was none; a 481, a 408 or
    /// no response at all ends the dialog ([`RequestError::NoDialog`] once it is gone), and
    /// for a request of the call itself (not SUBSCRIBE, NOTIFY or REFER) a 408 or no
    /// response also sends BYE, as the far side may still hold the call.
    ///
    /// A re-INVITE's 2xx is ACKed by the platform; for a re-INVITE without an offer whose
    /// 2xx brings one, the ACK waits for the answer as after
    /// [`invite_without_offer`](Self::invite_without_offer) (give it with
    /// [`send_ack_answer`](Self::send_ack_answer)). The 2xx of a target refresh request (re-INVITE, UPDATE, SUBSCRIBE,
    /// NOTIFY) moves the dialog's remote target to its Contact (§12.2.1.2). Such a request
    /// carries the local target (§12.2.1.1): given none, it gets the dialog's (the Contact
    /// of our request or response that made the dialog, or of the last target refresh
    /// request sent in it with one); one given is kept and becomes the local target.
    ///
    /// In a dialog whose 2xx (ours, as callee) is not ACKed yet, the request waits for the
    /// ACK: the caller learns of the dialog from that 2xx, which the request could overtake
    /// on another connection (a BYE there is forbidden anyway, §15). If no ACK comes within
    /// 64·T1 the call ends: a BYE waiting goes, anything else fails with
    /// [`RequestError::NoDialog`].
    ///
    /// Cancel safety: as [`send_request`](Self::send_request).
    pub async fn send_in_dialog(
        &self,
        dialog: &DialogId,
        request: impl Into<OutgoingRequest>,
    ) -> Result<SipMessage, RequestError> {
        self.queue_in_dialog(dialog, request).await?.await
    }

    /// [`send_in_dialog`](Self::send_in_dialog) in two steps: returns once the platform
    /// has taken the request, with the future of its outcome. What is taken is sent (or
    /// held for the ACK of our 2xx) even if that future is dropped, and a
    /// [`shutdown`](Self::shutdown) asked afterwards finds it and lets it finish within
    /// its grace period: e.g. the BYE of an application that ends its calls and then
    /// stops the platform, without waiting for the peers' answers.
    ///
    /// Cancel safety: cancel safe (if cancelled before the platform took it, nothing was
    /// sent).
    pub async fn queue_in_dialog(
        &self,
        dialog: &DialogId,
        request: impl Into<OutgoingRequest>,
    ) -> Result<
        impl std::future::Future<Output = Result<SipMessage, RequestError>> + Send + 'static,
        RequestError,
    > {
        let parts = request.into().into_in_dialog();
        let span = tracing::debug_span!(
            "sip_transaction",
            side = "client",
            method = %parts.method.as_str(),
            call_id = %String::from_utf8_lossy(dialog.call_id()),
        );
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::SendInDialog {
                dialog: dialog.clone(),
                parts,
                reply,
                span,
            })
            .await
            .map_err(|_| RequestError::Shutdown)?;
        Ok(async move { rx.await.unwrap_or(Err(RequestError::Shutdown)) })
    }

    /// Forgets `dialog` without sending anything (a subscription that ended, a call whose
    /// BYE was received): requests that still arrive in it get 481.
    ///
    /// Cancel safety: cancel safe.
    pub async fn end_dialog(&self, dialog: &DialogId) {
        let _ = self
            .inner
            .commands
            .send(Command::EndDialog {
                dialog: dialog.clone(),
            })
            .await;
    }

    /// What the typed endpoints refuse at compile time, refused here for requests given as
    /// text: a REGISTER whose address of record (To) is not on-premises, a PUBLISH whose
    /// presentity (Request-URI) is not. The application never acts as a federated user.
    fn refuse_acting_for_federated(&self, message: &SipMessage) -> Result<(), RequestError> {
        let to = message.to().ok();
        let party = match message.method() {
            Some(Method::Register) => to.as_ref().map(|t| t.uri().as_bytes()),
            Some(Method::Publish) => message.request_uri_bytes(),
            _ => None,
        };
        let Some(party) = party.map(String::from_utf8_lossy) else {
            return Ok(());
        };
        match self.inner.topology.classify(&party) {
            Ok(Homed::OnPremises(_)) => Ok(()),
            Ok(Homed::Federated(_)) => Err(RequestError::Refused(TopologyError::NotOnPremises(
                party.into_owned(),
            ))),
            Err(e) => Err(RequestError::Refused(e)),
        }
    }

    /// Builds an out-of-dialog request: defaults filled in, home-trust headers and
    /// impersonated display names stripped toward federated parties, refused for blocked
    /// partners and when it would act as a federated user. Its credentials, if any, are
    /// added and kept for the answers to challenges; toward a federated party they answer
    /// the home proxy's 407 only (`ClientAuth::toward_federated_end`).
    fn prepare(&self, mut request: OutgoingRequest) -> Result<Prepared, RequestError> {
        let homed = self
            .inner
            .topology
            .classify(&request.request_uri())
            .map_err(RequestError::Refused)?;
        let auth = request.auth.take();
        let (mut message, branch) =
            request.build(&self.inner.via, &self.inner.own_uri, &self.inner.user_agent)?;
        self.refuse_acting_for_federated(&message)?;
        let federated = matches!(homed, Homed::Federated(_));
        if federated {
            strip_home_trust(&mut message);
            strip_impersonated_names(&mut message, &self.inner.identities);
        }
        let resend = auth.map(|auth| {
            let auth = if federated {
                auth.toward_federated_end()
            } else {
                auth
            };
            auth.authorize(&mut message);
            Resend::new(auth)
        });
        let span = transaction_span(&message, &branch);
        Ok(Prepared {
            message,
            branch,
            span,
            resend,
        })
    }

    /// Declares `owner` an identity of the application itself (an application endpoint's,
    /// not a user's). Toward a federated party a From or Referred-By naming it keeps its
    /// display name; naming any other home user, the application can only be speaking for
    /// them, and the name is removed (impersonation carries the URI, not the name).
    pub fn declare_application_identity(&self, owner: &Address<OnPremises>) {
        self.inner.identities.insert(owner);
    }

    /// Routes requests to a new endpoint acting for `owner` (an on-premises address: a
    /// federated user cannot be hosted here), for its `gruu` if any, and — with
    /// `default_routing` — for every request no other endpoint owns. Requests arrive on the
    /// returned receiver (with the ACKs that carry an answer: see [`IncomingRequest`]);
    /// when the queue is full the platform answers 503 for it, when the receiver is
    /// dropped the endpoint is forgotten (480).
    ///
    /// Cancel safety: cancel safe while waiting for room in the command queue (nothing was
    /// registered); once queued the registration happens and the receiver is dropped, so the
    /// endpoint is forgotten at its first request.
    pub async fn register_endpoint(
        &self,
        owner: Address<OnPremises>,
        gruu: Option<String>,
        default_routing: bool,
    ) -> Result<(EndpointId, mpsc::Receiver<IncomingRequest>), PlatformError> {
        let id = EndpointId(self.inner.next_endpoint.fetch_add(1, Ordering::Relaxed));
        let (sender, rx) = mpsc::channel(self.inner.endpoint_capacity);
        let contact = self
            .contact_uri(&Self::contact_user(&owner))
            .map(|uri| Bytes::from(format!("<{uri}>")));
        self.inner
            .commands
            .send(Command::Register {
                id,
                owner,
                gruu,
                default_routing,
                sender,
                contact,
            })
            .await
            .map_err(|_| PlatformError::Shutdown)?;
        Ok((id, rx))
    }

    /// Makes a [`shutdown`](Self::shutdown) wait, within its grace period, until `endpoint`
    /// is [unregistered](Self::unregister_endpoint): for an endpoint layer that ends its
    /// calls (BYE, CANCEL) when [`stopping`](Self::stopping) resolves and then unregisters,
    /// so that those requests leave before the platform stops. `application-endpoint`'s
    /// endpoints do this. Without it a shutdown waits only for transactions already under
    /// way.
    ///
    /// Cancel safety: cancel safe.
    pub async fn hold_shutdown_for(&self, endpoint: EndpointId) {
        let _ = self
            .inner
            .commands
            .send(Command::HoldShutdown { id: endpoint })
            .await;
    }

    /// Makes the requests `endpoint` sends inside its dialogs (a call's MESSAGEs, re-INVITEs
    /// and BYE, whichever side made the call; a subscription's refreshes; the BYEs the
    /// platform sends for it) answer a proxy's `407 Proxy Authentication Required` with
    /// `auth`, as its out-of-dialog requests do ([`OutgoingRequest::authenticate`]): the
    /// request goes again with the dialog's next CSeq and the credentials (RFC 3261
    /// §22.2), and the caller gets the outcome of that one. Inside a dialog nothing goes up
    /// front, the other party's 401 is not answered, and in a dialog with a federated party
    /// nothing is answered (a 407 could come from its side as well as from the home proxy:
    /// trust is not transitive). `UserEndpoint`s do this; a trusted application is not
    /// challenged. Until the endpoint is unregistered.
    ///
    /// Cancel safety: cancel safe (if cancelled before queued, nothing changed).
    pub async fn authenticate_dialogs(&self, endpoint: EndpointId, auth: crate::ClientAuth) {
        let _ = self
            .inner
            .commands
            .send(Command::AuthenticateDialogs { id: endpoint, auth })
            .await;
    }

    /// Stops routing requests to `endpoint`.
    ///
    /// Cancel safety: cancel safe (if cancelled before queued, nothing changed).
    pub async fn unregister_endpoint(&self, endpoint: EndpointId) {
        let _ = self
            .inner
            .commands
            .send(Command::Unregister { id: endpoint })
            .await;
    }

    /// Stops the platform: no new requests are accepted (sends fail with
    /// [`RequestError::Shutdown`], incoming requests get 503; BYE excepted both ways, so
    /// calls can end), endpoints that [hold the shutdown](Self::hold_shutdown_for) end
    /// their calls, live transactions get the configured grace period to finish, the
    /// rest are cancelled with a definite outcome, and every connection is closed. Returns
    /// what finished and what was cancelled.
    ///
    /// Cancel safety: cancel safe; once the request to stop is queued the platform stops
    /// whether or not the caller waits for the report.
    pub async fn shutdown(&self) -> ShutdownReport {
        self.shutdown_within(self.inner.grace).await
    }

    /// As [`shutdown`](Self::shutdown) with an explicit grace period.
    ///
    /// Cancel safety: as [`shutdown`](Self::shutdown).
    pub async fn shutdown_within(&self, grace: std::time::Duration) -> ShutdownReport {
        let (done, rx) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Shutdown { grace, done })
            .await
            .is_err()
        {
            return ShutdownReport::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Resolves once a [`shutdown`](Self::shutdown) has begun (or the platform is gone).
    /// An endpoint layer waits on this to end its calls while their BYEs can still go (see
    /// [`hold_shutdown_for`](Self::hold_shutdown_for)).
    ///
    /// Cancel safety: cancel safe.
    pub async fn stopping(&self) {
        let mut rx = self.inner.stopping.clone();
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// Whether a [`shutdown`](Self::shutdown) has begun.
    pub fn is_stopping(&self) -> bool {
        *self.inner.stopping.borrow()
    }

    /// The deployment's topology.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The platform's own URI (`sip:FQDN`), the default From of requests it sends.
    pub fn own_uri(&self) -> &str {
        &self.inner.own_uri
    }

    /// The bound address of each listener, in the order configured.
    pub fn listen_addrs(&self) -> Vec<(crate::ListenerKind, SocketAddr)> {
        self.inner
            .listeners
            .iter()
            .map(|l| (l.kind, l.addr))
            .collect()
    }

    /// The address of the first listener of `kind`: where peers reach the platform once a
    /// listener given port 0 is bound. `None` if no listener is of that kind.
    pub fn listen_addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.inner
            .listeners
            .iter()
            .find(|l| l.kind == kind)
            .map(|l| l.addr)
    }

    /// A contact URI reaching `user` (written as given, so already escaped) at this platform
    /// over its first listener of the outbound proxy's transport
    /// (`sip:bot@127.0.0.1:5061;transport=tls`). With [`contact_user`](Self::contact_user)
    /// as `user` it is what an endpoint registers, and the GRUU-like address the front end
    /// then sends to.
    pub fn contact_uri(&self, user: &str) -> Option<String> {
        let want = match self.inner.proxy.borrow().transport {
            TransportKind::Tls => ListenerKind::MutualTls,
            _ => ListenerKind::Tcp,
        };
        let l = self.inner.listeners.iter().find(|l| l.kind == want)?;
        let t = match want {
            ListenerKind::MutualTls => "tls",
            _ => "tcp",
        };
        Some(format!("sip:{user}@{};transport={t}", l.addr))
    }

    /// The user part of the contact of an endpoint acting as `owner`, for
    /// [`contact_uri`](Self::contact_uri): the whole address, `alice%40contoso.test`, so
    /// that endpoints for `alice` in two home domains hosted here get different contacts
    /// (requests sent to a contact are routed by it, whole). Escaped for the RFC 3261 user
    /// grammar; a domain cannot hold `@`, so no two owners share one. The domain alone for
    /// an owner without a user part, the number for `tel:`.
    pub fn contact_user(owner: &Address<OnPremises>) -> String {
        let mut out = String::new();
        let escape = |out: &mut String, text: &str| {
            for &b in text.as_bytes() {
                // Unreserved and user-unreserved but `;` and `?`, which some parsers take
                // for the start of parameters or headers.
                if b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,/".contains(&b) {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        };
        match (owner.user(), owner.domain()) {
            (Some(user), "") => escape(&mut out, user),
            (Some(user), domain) => {
                escape(&mut out, user);
                out.push_str("%40");
                escape(&mut out, domain);
            }
            (None, domain) => escape(&mut out, domain),
        }
        out
    }

    /// A counter of how often the connection to the outbound proxy was lost (closed by the
    /// peer or failed, not closed by us) and of moves to another of its servers: endpoints
    /// watch it to re-register after a front-end restart or at the new server.
    pub fn proxy_losses(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.proxy_losses.subscribe()
    }

    /// The dialogs the platform ends on its own account from now on (a 2xx never ACKed):
    /// endpoints listen to end their calls, which would otherwise look established for
    /// ever. A listener that falls more than a few hundred behind misses some
    /// (`RecvError::Lagged`).
    pub fn dialog_endings(&self) -> tokio::sync::broadcast::Receiver<crate::DialogEnded> {
        self.inner.dialog_endings.subscribe()
    }

    /// The outbound proxy's server in use now (address, transport, TLS name). For a proxy
    /// given by domain it changes when the platform fails over to another of its servers.
    pub fn proxy(&self) -> Target {
        self.inner.proxy.borrow().clone()
    }

    /// Watches the server in use ([`proxy`](Self::proxy)): changes when the platform moves
    /// to another of the proxy's servers after losing the one in use (each move is also
    /// logged at info level).
    pub fn proxy_changes(&self) -> tokio::sync::watch::Receiver<Target> {
        self.inner.proxy.subscribe()
    }

    /// The servers of a proxy given by domain, tried in order until one connects.
    async fn choose_proxy(
        transport: &SipTransport,
        common: &Common,
        domain: &str,
    ) -> Result<ProxyPool, PlatformError> {
        let locate = match &common.proxy.transport {
            ProxyTransport::Tls { .. } => crate::locate::LocateTarget::sips_domain(domain),
            ProxyTransport::Tcp => {
                crate::locate::LocateTarget::sip_domain(domain).with_transport(TransportKind::Tcp)
            }
        };
        let mut pool = ProxyPool {
            domain: domain.to_string(),
            locate,
            locator: common.locator.clone(),
            transport: common.proxy.transport.clone(),
            servers: Vec::new(),
            current: 0,
        };
        pool.servers = pool.resolve().await?;
        match pool.first_reachable(transport, 0..pool.servers.len()).await {
            Ok(i) => {
                pool.current = i;
                if i > 0 {
                    tracing::info!(
                        domain,
                        proxy = %pool.servers[i],
                        skipped = i,
                        "outbound proxy: using a later server, the first ones are unreachable"
                    );
                }
                Ok(pool)
            }
            Err(attempts) => Err(PlatformError::ProxyUnreachable {
                proxy: domain.to_string(),
                attempts,
            }),
        }
    }
}

/// The span of the client transaction that sends `message`, whose top Via has `branch`.
/// Its fields are computed only when the span is enabled (not per request otherwise).
pub(crate) fn transaction_span(message: &SipMessage, branch: &str) -> tracing::Span {
    tracing::debug_span!(
        "sip_transaction",
        side = "client",
        method = %message.method().map_or("", |m| m.as_str()),
        branch = %branch,
        call_id = %String::from_utf8_lossy(message.call_id().unwrap_or_default()),
    )
}

/// The span of a request built again after a challenge (its new branch read back).
pub(crate) fn resent_span(message: &SipMessage) -> tracing::Span {
    let via = message.top_via().ok();
    transaction_span(
        message,
        via.as_ref().and_then(|v| v.branch()).unwrap_or_default(),
    )
}

/// An out-of-dialog request ready to go, as `prepare` makes it.
struct Prepared {
    message: SipMessage,
    branch: String,
    span: tracing::Span,
    /// The answers to 401/407 challenges, for a request with credentials.
    resend: Option<Resend>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact_user(uri: &str) -> String {
        CollaborationPlatform::contact_user(&Address::assume_on_premises(uri).unwrap())
    }

    #[test]
    fn contact_users_name_the_whole_owner_and_stay_valid_user_parts() {
        assert_eq!(
            contact_user("sip:alice@contoso.test"),
            "alice%40contoso.test"
        );
        assert_eq!(
            contact_user("sip:alice@Fabrikam.TEST"),
            "alice%40fabrikam.test"
        );
        // Decoded by the topology, escaped again: `;`, `?`, `@` and spaces too.
        assert_eq!(
            contact_user("sip:a%20b;c%40d@contoso.test"),
            "a%20b%3Bc%40d%40contoso.test"
        );
        assert_eq!(contact_user("sip:contoso.test"), "contoso.test");
        assert_eq!(contact_user("tel:+1-201-555-0123"), "+1-201-555-0123");
        for owner in ["sip:alice@contoso.test", "sip:a%20b;c%40d@contoso.test"] {
            let uri = format!("sip:{}@127.0.0.1:5061;transport=tls", contact_user(owner));
            let Ok(sip_core::Uri::Sip(u)) = sip_core::Uri::parse(uri.as_bytes()) else {
                panic!("{uri}")
            };
            assert_eq!(u.params().count(), 1, "{uri}");
        }
    }
}
