//! `RemotePresenceView` against the real peers (peer-harness): Kamailio 5.6 front ends for
//! contoso.test (home) and fabrikam.test (federated), each with its presence server
//! (`presence` + `presence_xml`, every watcher authorised).
//!
//! Every wait is bounded. Without kamailio these tests fail with the install hint.
//!
//! What Kamailio cannot be made to do on demand (forked NOTIFYs, 423, a lost NOTIFY, a
//! 503 to a refresh) is played by a scripted front end over mutual TLS (`scripted`,
//! transport-tls): those tests need no external peer.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use application_endpoint::pidf::Availability;
use application_endpoint::{
    ApplicationEndpoint, ApplicationEndpointSettings, Endpoint, EndpointError, RemotePresenceView,
};
use collaboration_platform::WireLog;
use collaboration_platform::{
    Address, CollaborationPlatform, Listener, OutboundProxy, ServerPlatformSettings, Topology,
    TopologyError,
};
use interop_support::{bounded, federation, identity, loopback0, roots, runtime, WAIT};
use peer_harness::{Deployment, Federation};
use std::sync::Arc;

/// The trusted application of `deployment`, its front end over mutual TLS, its home
/// domain in the topology.
fn settings(fed: &Federation, deployment: Deployment) -> ServerPlatformSettings {
    let fe = match deployment {
        Deployment::Contoso => fed.contoso(),
        Deployment::Fabrikam => fed.fabrikam(),
    };
    ServerPlatformSettings::new(
        "ucma-rs presence interop",
        deployment.application(),
        identity(fed.pki().application(deployment)),
        roots(fed),
        OutboundProxy::tls(fe.mtls_addr(), fe.fqdn()),
    )
    .listen(Listener::mutual_tls(loopback0()))
    .topology(Topology::new([deployment.domain()]))
}

/// An established application endpoint for `uri` (no registration: the NOTIFYs go to the
/// Contact of the SUBSCRIBE).
async fn endpoint(platform: &CollaborationPlatform, uri: &str) -> ApplicationEndpoint {
    let owner = Address::assume_on_premises(uri).expect("owner URI");
    let ep = ApplicationEndpoint::new(platform, ApplicationEndpointSettings::new(owner));
    bounded("establish", ep.establish())
        .await
        .unwrap_or_else(|e| panic!("establishing {uri}: {e}"));
    ep
}

/// A notification as the tests look at it (the view's own types are read through their
/// fields and methods).
#[derive(Debug)]
struct Seen {
    target: String,
    homing: &'static str,
    state: &'static str,
    availability: Option<Availability>,
    note: Option<String>,
    has_document: bool,
    tuples: Vec<(String, Option<&'static str>)>,
    error: Option<String>,
    endpoint_error: Option<EndpointError>,
    federation_refusal: bool,
}

/// Waits for the next notification about `target` that satisfies `want`; panics with
/// everything seen (and the front ends' logs) when none comes within the bound.
async fn wait_for<N>(
    rx: &mut tokio::sync::mpsc::Receiver<N>,
    fed: &Federation,
    target: &str,
    what: &str,
    see: impl Fn(&N) -> Seen,
    want: impl Fn(&Seen) -> bool,
) -> Seen {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(n)) => {
                let s = see(&n);
                eprintln!("notification: {s:?}");
                if s.target == target && want(&s) {
                    return s;
                }
                seen.push(s);
            }
            Ok(None) => panic!("{what}: notification stream closed; seen {seen:#?}"),
            Err(_) => panic!(
                "{what}: not within {WAIT:?}; seen {seen:#?}\n{}",
                fed.log_tails(40)
            ),
        }
    }
}

/// `see(n)`, with the closure's argument type taken from `n`.
fn apply<N>(n: &N, see: impl Fn(&N) -> Seen) -> Seen {
    see(n)
}

/// Reads a notification of the view into a [`Seen`] (a closure: the notification type is
/// only reached through the view's API).
macro_rules! see {
    () => {
        |n| Seen {
            target: n.target.clone(),
            homing: n.homing,
            state: n.state.name(),
            availability: n.availability,
            note: n
                .document
                .as_ref()
                .and_then(|d| d.note().map(str::to_string)),
            has_document: n.document.is_some(),
            tuples: n
                .document
                .as_ref()
                .map(|d| {
                    d.tuples
                        .iter()
                        .map(|t| (t.id.clone(), t.basic.map(|b| b.as_str())))
                        .collect()
                })
                .unwrap_or_default(),
            error: n.error.as_ref().map(|e| e.to_string()),
            endpoint_error: n.error.as_ref().and_then(|e| e.endpoint_error().cloned()),
            federation_refusal: n.is_federation_refusal(),
        }
    };
}

#[test]
fn home_presence_reaches_a_watcher_and_follows_changes() {
    let fed = federation();
    runtime().block_on(async {
        let platform = CollaborationPlatform::start(settings(&fed, Deployment::Contoso))
            .await
            .expect("platform");
        let bot = endpoint(&platform, "sip:bot@contoso.test").await;
        let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
        bounded(
            "PUBLISH Busy",
            bot.local_owner_presence()
                .publish_availability(Availability::Busy, Some("in a meeting")),
        )
        .await
        .unwrap_or_else(|e| panic!("PUBLISH: {e}\n{}", fed.log_tails(30)));

        let view = RemotePresenceView::new(&watcher);
        let mut rx = view.notifications();
        let target = "sip:bot@contoso.test";
        bounded("subscribe", view.subscribe([target.to_string()]))
            .await
            .expect("subscribe");
        let busy = wait_for(&mut rx, &fed, target, "Busy", see!(), |s| {
            s.availability == Some(Availability::Busy)
        })
        .await;
        assert_eq!(busy.note.as_deref(), Some("in a meeting"));
        assert_eq!(busy.homing, "on-premises");
        assert_eq!(busy.state, "Subscribed");
        assert!(busy.error.is_none(), "{busy:?}");
        assert_eq!(view.state(target).map(|s| s.name()), Some("Subscribed"));

        bounded(
            "PUBLISH Online",
            bot.local_owner_presence()
                .publish_availability(Availability::Online, None),
        )
        .await
        .expect("PUBLISH Online");
        let online = wait_for(&mut rx, &fed, target, "Online", see!(), |s| {
            s.availability == Some(Availability::Online)
        })
        .await;
        assert_eq!(online.note, None);

        // The publisher goes away: its publication is removed (PUBLISH Expires: 0).
        bounded("terminate the publisher", bot.terminate()).await;
        // Kamailio's presence_xml then notifies the last tuple it knew, closed: the
        // presentity is offline (not an empty NOTIFY, not a terminated subscription).
        let gone = wait_for(&mut rx, &fed, target, "publication removed", see!(), |s| {
            s.has_document && s.availability != Some(Availability::Online)
        })
        .await;
        assert_eq!(gone.availability, Some(Availability::Offline), "{gone:?}");
        assert_eq!(
            gone.tuples,
            vec![("ucma".to_string(), Some("closed"))],
            "{gone:?}"
        );
        assert_eq!(gone.note, None);
        assert_eq!(gone.state, "Subscribed");
        assert_eq!(view.availability(target), Some(Availability::Offline));

        bounded("terminate the view", view.terminate()).await;
        assert_eq!(view.state(target), None);
        platform.shutdown().await;
    });
}

#[test]
fn federated_presence_arrives_through_the_federation_route() {
    let fed = federation();
    runtime().block_on(async {
        let contoso = CollaborationPlatform::start(settings(&fed, Deployment::Contoso))
            .await
            .expect("contoso platform");
        let fabrikam = CollaborationPlatform::start(settings(&fed, Deployment::Fabrikam))
            .await
            .expect("fabrikam platform");
        let bob = endpoint(&fabrikam, "sip:bob@fabrikam.test").await;
        bounded(
            "PUBLISH at fabrikam",
            bob.local_owner_presence()
                .publish_availability(Availability::Away, Some("back at two")),
        )
        .await
        .unwrap_or_else(|e| panic!("PUBLISH at fabrikam: {e}\n{}", fed.log_tails(30)));

        let watcher = endpoint(&contoso, "sip:watcher@contoso.test").await;
        let view = RemotePresenceView::new(&watcher);
        let mut rx = view.notifications();
        let target = "sip:bob@fabrikam.test";
        assert!(contoso.topology().classify(target).unwrap().is_federated());
        bounded("subscribe", view.subscribe([target.to_string()]))
            .await
            .expect("subscribe");
        let away = wait_for(&mut rx, &fed, target, "initial state", see!(), |s| {
            s.has_document
        })
        .await;
        assert_eq!(away.homing, "federated");
        assert_eq!(away.availability, Some(Availability::Away), "{away:?}");
        assert_eq!(away.note.as_deref(), Some("back at two"));
        assert_eq!(away.state, "Subscribed");
        assert!(away.error.is_none(), "{away:?}");

        bounded(
            "PUBLISH change at fabrikam",
            bob.local_owner_presence()
                .publish_availability(Availability::DoNotDisturb, Some("presenting")),
        )
        .await
        .expect("PUBLISH change");
        let dnd = wait_for(&mut rx, &fed, target, "change", see!(), |s| s.has_document).await;
        assert_eq!(
            dnd.availability,
            Some(Availability::DoNotDisturb),
            "{dnd:?}"
        );
        assert_eq!(dnd.note.as_deref(), Some("presenting"));

        // The requests crossed the federation route (contoso logs each one it relays).
        let log = std::fs::read_to_string(fed.contoso().log_path()).unwrap_or_default();
        assert!(
            log.contains("federation: SUBSCRIBE sip:bob@fabrikam.test"),
            "contoso did not relay the SUBSCRIBE over federation:\n{}",
            fed.log_tails(30)
        );

        bounded("terminate the view", view.terminate()).await;
        assert_eq!(view.state(target), None);
        bob.terminate().await;
        contoso.shutdown().await;
        fabrikam.shutdown().await;
    });
}

/// (request line, Call-ID) of each SUBSCRIBE the platform `wire` watches sent, in order.
fn subscribes(wire: &WireLog) -> Vec<(String, String)> {
    wire.sent_requests("SUBSCRIBE")
        .iter()
        .map(|r| {
            let text = r.text();
            let mut lines = text.split("\r\n");
            let first = lines.next().unwrap_or_default().to_string();
            let call_id = lines
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    let name = name.trim();
                    (name.eq_ignore_ascii_case("call-id") || name == "i").then(|| value.trim())
                })
                .unwrap_or_default()
                .to_string();
            (first, call_id)
        })
        .collect()
}

#[test]
fn one_shot_query_for_a_home_user_and_refusal_for_a_federated_one() {
    let fed = federation();
    runtime().block_on(async {
        let sent = WireLog::new();
        let platform = CollaborationPlatform::start(
            settings(&fed, Deployment::Contoso).observer(sent.as_observer()),
        )
        .await
        .expect("platform");
        let bot = endpoint(&platform, "sip:bot@contoso.test").await;
        bounded(
            "PUBLISH",
            bot.local_owner_presence()
                .publish_availability(Availability::Away, Some("lunch")),
        )
        .await
        .expect("PUBLISH");
        let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
        let view = RemotePresenceView::new(&watcher);

        let n = bounded("query", view.query("sip:bot@contoso.test"))
            .await
            .unwrap_or_else(|e| panic!("query: {e}\n{}", fed.log_tails(30)));
        assert_eq!(n.target, "sip:bot@contoso.test");
        assert_eq!(n.homing, "on-premises");
        assert_eq!(n.state.name(), "Terminated");
        assert_eq!(n.availability, Some(Availability::Away), "{n:?}");
        assert_eq!(
            n.document.as_ref().and_then(|d| d.note()),
            Some("lunch"),
            "{n:?}"
        );
        assert!(n.error.is_none(), "{n:?}");
        // A fetch leaves nothing behind: no subscription, no dialog route.
        assert_eq!(view.state("sip:bot@contoso.test"), None);
        assert_eq!(watcher.core().live_dialogs(), 0);
        let lines = |sent: &WireLog| -> Vec<String> {
            subscribes(sent).into_iter().map(|(l, _)| l).collect()
        };
        assert_eq!(
            lines(&sent),
            vec!["SUBSCRIBE sip:bot@contoso.test SIP/2.0".to_string()]
        );

        // Federated: persistent subscriptions only; refused before anything is sent.
        let refused = bounded("federated query", view.query("sip:bob@fabrikam.test")).await;
        match refused {
            Err(EndpointError::FederationRestricted { operation, uri }) => {
                assert_eq!(operation, "one-shot presence query");
                assert_eq!(uri, "sip:bob@fabrikam.test");
            }
            other => panic!("expected FederationRestricted, got {other:?}"),
        }
        assert_eq!(lines(&sent).len(), 1, "{:?}", lines(&sent));
        let log = std::fs::read_to_string(fed.contoso().log_path()).unwrap_or_default();
        assert!(!log.contains("federation: SUBSCRIBE"), "{log}");

        bot.terminate().await;
        platform.shutdown().await;
    });
}

#[test]
fn a_blocked_target_fails_alone_while_the_others_subscribe() {
    let fed = federation();
    runtime().block_on(async {
        let platform = CollaborationPlatform::start(
            settings(&fed, Deployment::Contoso)
                .topology(Topology::new(["contoso.test"]).block("blocked.test")),
        )
        .await
        .expect("platform");
        let bot = endpoint(&platform, "sip:bot@contoso.test").await;
        bounded(
            "PUBLISH",
            bot.local_owner_presence()
                .publish_availability(Availability::Online, Some("here")),
        )
        .await
        .expect("PUBLISH");
        let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
        let view = RemotePresenceView::new(&watcher);
        let mut rx = view.notifications();
        let (home, blocked, federated) = (
            "sip:bot@contoso.test",
            "sip:eve@blocked.test",
            "sip:bob@fabrikam.test",
        );
        bounded(
            "subscribe",
            view.subscribe([home, blocked, federated].map(String::from)),
        )
        .await
        .expect("subscribe: one refused target must not fail the call");

        let refusal = wait_for(&mut rx, &fed, blocked, "refusal", see!(), |_| true).await;
        assert_eq!(refusal.state, "Terminated");
        assert_eq!(refusal.homing, "federated");
        assert!(refusal.federation_refusal, "{refusal:?}");
        match &refusal.endpoint_error {
            Some(EndpointError::Topology(TopologyError::Blocked(d))) => {
                assert_eq!(d, "blocked.test")
            }
            other => panic!("expected a Blocked topology error, got {other:?}"),
        }
        assert_eq!(view.state(blocked).map(|s| s.name()), Some("Terminated"));

        let online = wait_for(&mut rx, &fed, home, "home state", see!(), |s| {
            s.has_document
        })
        .await;
        assert_eq!(online.availability, Some(Availability::Online));
        // fabrikam's bob published nothing: the federated subscription is active all the
        // same.
        bounded("federated subscription", async {
            while view.state(federated).map(|s| s.name()) != Some("Subscribed") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert_eq!(view.state(home).map(|s| s.name()), Some("Subscribed"));
        assert_eq!(view.state(blocked).map(|s| s.name()), Some("Terminated"));

        // Ending one subscription leaves the others alone.
        bounded("unsubscribe", view.unsubscribe(home)).await;
        assert_eq!(view.state(home), None);
        assert_eq!(view.state(federated).map(|s| s.name()), Some("Subscribed"));

        // The subscriber's endpoint terminates: its subscriptions end with it, typed.
        bounded("terminate the watcher", watcher.terminate()).await;
        let ended = wait_for(
            &mut rx,
            &fed,
            federated,
            "end with the endpoint",
            see!(),
            |s| s.state == "Terminated",
        )
        .await;
        assert!(
            matches!(
                ended.endpoint_error,
                Some(EndpointError::NotEstablished(
                    application_endpoint::EndpointState::Terminated
                ))
            ),
            "{ended:?}"
        );
        assert_eq!(view.state(federated).map(|s| s.name()), Some("Terminated"));
        assert_eq!(watcher.core().live_dialogs(), 0);

        bounded("terminate", view.terminate()).await;
        assert!(view.targets().is_empty(), "{:?}", view.targets());
        bot.terminate().await;
        platform.shutdown().await;
    });
}

#[test]
fn subscriptions_are_refreshed_in_dialog_and_made_again_after_a_front_end_restart() {
    let mut fed = federation();
    let rt = runtime();
    let sent = WireLog::new();
    let target = "sip:bot@contoso.test";
    let (platform, bot, watcher, view, mut rx) = rt.block_on(async {
        let platform = CollaborationPlatform::start(
            settings(&fed, Deployment::Contoso).observer(sent.as_observer()),
        )
        .await
        .expect("platform");
        let bot = endpoint(&platform, target).await;
        bounded(
            "PUBLISH",
            bot.local_owner_presence()
                .publish_availability(Availability::Busy, None),
        )
        .await
        .expect("PUBLISH");
        let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
        // 4 s subscriptions: refreshed after 3 s.
        let view = RemotePresenceView::new(&watcher)
            .expires(4)
            .retry(Duration::from_millis(200), Duration::from_secs(2));
        let mut rx = view.notifications();
        bounded("subscribe", view.subscribe([target.to_string()]))
            .await
            .expect("subscribe");
        wait_for(&mut rx, &fed, target, "Busy", see!(), |s| {
            s.availability == Some(Availability::Busy)
        })
        .await;

        // Past the first lifetime: refreshed in the same dialog, never ended.
        tokio::time::sleep(Duration::from_millis(5500)).await;
        let subs = subscribes(&sent);
        assert!(subs.len() >= 2, "no refresh was sent: {subs:?}");
        assert!(
            subs.iter().all(|(_, c)| *c == subs[0].1),
            "a refresh must stay in the dialog (same Call-ID): {subs:?}"
        );
        assert!(
            subs[1..].iter().all(|(l, _)| l != &subs[0].0),
            "a refresh goes to the notifier's Contact: {subs:?}"
        );
        assert_eq!(view.state(target).map(|s| s.name()), Some("Subscribed"));
        while let Ok(n) = rx.try_recv() {
            let s = apply(&n, see!());
            assert_eq!(s.state, "Subscribed", "{s:?}");
        }
        (platform, bot, watcher, view, rx)
    });

    // The front end restarts: its subscriptions and publications are gone.
    fed.front_end_mut(Deployment::Contoso)
        .restart(Duration::from_secs(20))
        .expect("contoso restarted");

    rt.block_on(async {
        // The next refresh is refused (481): the view subscribes again in a new dialog.
        bounded("a new subscription", async {
            loop {
                let subs = subscribes(&sent);
                let first = &subs[0].1;
                let fresh = subs.iter().any(|(_, c)| c != first);
                if fresh && view.state(target).map(|s| s.name()) == Some("Subscribed") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        // The publisher publishes again (its entity tag is unknown now: 412, then anew).
        bounded(
            "PUBLISH after the restart",
            bot.local_owner_presence()
                .publish_availability(Availability::Away, Some("after restart")),
        )
        .await
        .unwrap_or_else(|e| panic!("PUBLISH after restart: {e}\n{}", fed.log_tails(30)));
        let away = wait_for(&mut rx, &fed, target, "state after restart", see!(), |s| {
            s.availability == Some(Availability::Away)
        })
        .await;
        assert_eq!(away.note.as_deref(), Some("after restart"));
        assert_eq!(away.state, "Subscribed");

        bounded("terminate", view.terminate()).await;
        assert_eq!(watcher.core().live_dialogs(), 0);
        bot.terminate().await;
        platform.shutdown().await;
    });
}

// ---------------------------------------------------------------------------------------
// A scripted front end, for what Kamailio cannot be made to do on demand (forked NOTIFYs,
// 423 Interval Too Brief): a mutual-TLS listener the test drives message by message.
// ---------------------------------------------------------------------------------------

mod scripted {
    use super::*;
    use bytes::Bytes;
    use collaboration_platform::loopback::LoopbackPki;
    use sip_core::{HeaderName, Method, SipMessage};
    use std::collections::VecDeque;
    use tokio::sync::mpsc;
    use transport_tls::{
        ReceivedMessage, SipTransport, TlsServerSettings, TransportEvent, TransportSettings,
    };

    const FRONT_END: &str = "fe.contoso.test";
    const APPLICATION: &str = "app.contoso.test";

    /// The front end, as the test scripts it.
    pub struct FrontEnd {
        pki: LoopbackPki,
        transport: SipTransport,
        events: mpsc::Receiver<TransportEvent>,
        addr: SocketAddr,
        /// Requests that arrived while a NOTIFY waited for its answer.
        held: VecDeque<ReceivedMessage>,
        /// Final answers to NOTIFYs that arrived while another one was waited for.
        answers: Vec<SipMessage>,
        branch: u32,
    }

    impl Drop for FrontEnd {
        fn drop(&mut self) {
            self.transport.shutdown();
        }
    }

    impl FrontEnd {
        pub async fn start() -> FrontEnd {
            let pki = LoopbackPki::new().expect("loopback CA");
            let identity = pki.identity(FRONT_END).expect("front-end identity");
            let (transport, events) =
                SipTransport::new(TransportSettings::new()).expect("transport");
            let addr = transport
                .listen_tls(
                    loopback0(),
                    &TlsServerSettings::mutual(identity, pki.roots()),
                )
                .await
                .expect("listener");
            FrontEnd {
                pki,
                transport,
                events,
                addr,
                held: VecDeque::new(),
                answers: Vec::new(),
                branch: 0,
            }
        }

        /// A platform whose outbound proxy is this front end.
        pub async fn platform(&self) -> CollaborationPlatform {
            self.platform_with(Topology::new(["contoso.test"])).await
        }

        /// A platform whose outbound proxy is this front end, with `topology`.
        pub async fn platform_with(&self, topology: Topology) -> CollaborationPlatform {
            self.platform_custom(|s| s.topology(topology)).await
        }

        /// A platform whose outbound proxy is this front end, its settings changed by `f`.
        pub async fn platform_custom(
            &self,
            f: impl FnOnce(ServerPlatformSettings) -> ServerPlatformSettings,
        ) -> CollaborationPlatform {
            let settings = ServerPlatformSettings::new(
                "ucma-rs scripted presence",
                APPLICATION,
                self.pki
                    .identity(APPLICATION)
                    .expect("application identity"),
                self.pki.roots(),
                OutboundProxy::tls(self.addr, FRONT_END),
            )
            .listen(Listener::mutual_tls(loopback0()))
            .topology(Topology::new(["contoso.test"]));
            CollaborationPlatform::start(f(settings))
                .await
                .expect("platform")
        }

        /// The next message from the platform (OPTIONS are answered on the way).
        async fn next(&mut self, what: &str) -> ReceivedMessage {
            loop {
                let ev = bounded(what, self.events.recv()).await;
                match ev {
                    Some(TransportEvent::Message(rm)) => {
                        if rm.message.method() == Some(&Method::Options) {
                            self.reply(&rm, 200, None, &[]).await;
                            continue;
                        }
                        return rm;
                    }
                    Some(_) => {}
                    None => panic!("{what}: the transport stopped"),
                }
            }
        }

        /// The next request of `method`.
        pub async fn request(&mut self, method: Method, what: &str) -> ReceivedMessage {
            if let Some(i) = self
                .held
                .iter()
                .position(|r| r.message.method() == Some(&method))
            {
                return self.held.remove(i).expect("held request");
            }
            loop {
                let rm = self.next(what).await;
                if rm.message.method() == Some(&method) {
                    return rm;
                }
                if rm.message.is_request() {
                    self.held.push_back(rm);
                }
            }
        }

        pub async fn reply(
            &self,
            rm: &ReceivedMessage,
            status: u16,
            to_tag: Option<&str>,
            headers: &[(&str, &str)],
        ) {
            let mut r =
                SipMessage::response_to(&rm.message, status, sip_core::reason_phrase(status))
                    .expect("response");
            if let Some(t) = to_tag {
                r.set_to_tag(t).expect("To tag");
            }
            for (n, v) in headers {
                r.push_header(*n, v.to_string()).expect("header");
            }
            self.transport.reply(rm, &r).await.expect("reply sent");
        }

        /// Sends a NOTIFY for `subscribe`'s subscription from the notifier tagged
        /// `from_tag` (a fork of its own when it differs from the 2xx's) and returns the
        /// status of its final answer.
        pub async fn notify(
            &mut self,
            subscribe: &ReceivedMessage,
            from_tag: &str,
            cseq: u32,
            state: &str,
            body: Option<&str>,
        ) -> u16 {
            let sent = self
                .send_notify(subscribe, from_tag, cseq, state, body)
                .await;
            self.answer(sent).await
        }

        /// Sends a NOTIFY as [`notify`](Self::notify) does, without waiting for its
        /// answer; returns what [`answer`](Self::answer) takes.
        pub async fn send_notify(
            &mut self,
            subscribe: &ReceivedMessage,
            from_tag: &str,
            cseq: u32,
            state: &str,
            body: Option<&str>,
        ) -> u32 {
            let headers = format!("Event: presence\r\nSubscription-State: {state}\r\n");
            self.send_notify_with(subscribe, from_tag, cseq, &headers, body)
                .await
        }

        /// Sends a NOTIFY as [`send_notify`](Self::send_notify) does, with `headers`
        /// (whole lines) in place of its Event and Subscription-State.
        pub async fn send_notify_with(
            &mut self,
            subscribe: &ReceivedMessage,
            from_tag: &str,
            cseq: u32,
            headers: &str,
            body: Option<&str>,
        ) -> u32 {
            let s = &subscribe.message;
            let text = |h| String::from_utf8_lossy(s.header(h).unwrap_or_default()).into_owned();
            let contact = text(HeaderName::Contact);
            let contact = contact.trim().trim_start_matches('<').trim_end_matches('>');
            let target = text(HeaderName::To);
            self.branch += 1;
            let body = body.unwrap_or_default();
            let content_type = if body.is_empty() {
                String::new()
            } else {
                format!(
                    "Content-Type: {}\r\n",
                    application_endpoint::pidf::CONTENT_TYPE
                )
            };
            let notify = format!(
                "NOTIFY {contact} SIP/2.0\r\n\
                 Via: SIP/2.0/TLS {addr};branch=z9hG4bKscripted{branch}\r\n\
                 Max-Forwards: 70\r\n\
                 From: {target};tag={from_tag}\r\n\
                 To: {from}\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: {cseq} NOTIFY\r\n\
                 Contact: <sip:notifier@{addr};transport=tls>\r\n\
                 {headers}{content_type}Content-Length: {len}\r\n\r\n{body}",
                addr = self.addr,
                branch = self.branch,
                from = text(HeaderName::From),
                call_id = text(HeaderName::CallId),
                len = body.len(),
            );
            let connection = subscribe.connection_id().expect("a TLS connection");
            self.transport
                .send_raw(connection, Bytes::from(notify))
                .await
                .expect("NOTIFY sent");
            self.branch
        }

        /// The status of the final answer to the NOTIFY `sent`.
        pub async fn answer(&mut self, sent: u32) -> u16 {
            let branch = format!("z9hG4bKscripted{sent};");
            let ours = |m: &SipMessage| {
                m.header(HeaderName::Via).is_some_and(|v| {
                    format!("{};", String::from_utf8_lossy(v).trim()).contains(&branch)
                })
            };
            if let Some(i) = self.answers.iter().position(ours) {
                let m = self.answers.swap_remove(i);
                return m.status().unwrap_or_default();
            }
            loop {
                let rm = self.next("the answer to a NOTIFY").await;
                if rm.message.is_request() {
                    self.held.push_back(rm);
                    continue;
                }
                match rm.message.status() {
                    Some(code) if code >= 200 && ours(&rm.message) => return code,
                    Some(code) if code >= 200 => self.answers.push(rm.message),
                    _ => {}
                }
            }
        }
    }

    /// A header of a received request, as text.
    pub fn header(rm: &ReceivedMessage, name: HeaderName) -> Option<String> {
        rm.message
            .header(name)
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
    }

    /// The To tag of a received request, if any.
    pub fn to_tag(rm: &ReceivedMessage) -> Option<String> {
        let to = rm.message.to().ok()?;
        to.tag().map(|t| String::from_utf8_lossy(t).into_owned())
    }

    /// A presence document for `entity` with `availability`.
    pub fn pidf(entity: &str, availability: Availability) -> String {
        application_endpoint::pidf::PresenceDocument::from_availability(entity, availability, None)
            .to_xml()
    }
}

/// Waits for the next notification about `target` that satisfies `want` (no front-end
/// logs to show: the front end is the test).
async fn wait_scripted<N>(
    rx: &mut tokio::sync::mpsc::Receiver<N>,
    target: &str,
    what: &str,
    see: impl Fn(&N) -> Seen,
    want: impl Fn(&Seen) -> bool,
) -> Seen {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(n)) => {
                let s = see(&n);
                if s.target == target && want(&s) {
                    return s;
                }
                seen.push(s);
            }
            Ok(None) => panic!("{what}: notification stream closed; seen {seen:#?}"),
            Err(_) => panic!("{what}: not within {WAIT:?}; seen {seen:#?}"),
        }
    }
}

/// Ends the subscription of `subscribe` at the scripted front end as a notifier does: 200
/// to the un-SUBSCRIBE in dialog `tag`, then the final NOTIFY.
async fn script_unsubscribe(
    fe: &mut scripted::FrontEnd,
    subscribe: &transport_tls::ReceivedMessage,
    tag: &str,
    cseq: u32,
) {
    let end = fe
        .request(sip_core::Method::Subscribe, "the un-SUBSCRIBE")
        .await;
    assert_eq!(scripted::to_tag(&end).as_deref(), Some(tag));
    assert_eq!(
        scripted::header(&end, sip_core::HeaderName::Expires).as_deref(),
        Some("0")
    );
    fe.reply(&end, 200, None, &[("Expires", "0")]).await;
    let _ = fe
        .notify(subscribe, tag, cseq, "terminated;reason=timeout", None)
        .await;
}

#[test]
fn a_notify_of_another_fork_is_refused_and_leaves_the_subscription_alone() {
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe.platform().await;
        let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
        let view = RemotePresenceView::new(&watcher);
        let mut rx = view.notifications();
        let target = "sip:bob@contoso.test";
        bounded("subscribe", view.subscribe([target.to_string()]))
            .await
            .expect("subscribe");
        let sub = fe
            .request(sip_core::Method::Subscribe, "the SUBSCRIBE")
            .await;

        // The SUBSCRIBE forked: both notifiers notify before the 2xx (RFC 6665 §4.1.2.4).
        // The first is kept; the other fork is refused, which ends it at its notifier.
        let online = scripted::pidf(target, Availability::Online);
        let a = fe
            .notify(&sub, "forkA", 1, "active;expires=600", Some(&online))
            .await;
        assert_eq!(a, 200, "the first fork's NOTIFY");
        let b = fe
            .notify(&sub, "forkB", 1, "active;expires=600", Some(&online))
            .await;
        assert_eq!(b, 481, "another fork's NOTIFY");
        fe.reply(&sub, 200, Some("forkA"), &[("Expires", "600")])
            .await;
        wait_scripted(&mut rx, target, "Online", see!(), |s| {
            s.availability == Some(Availability::Online) && s.state == "Subscribed"
        })
        .await;

        // The other fork ending does not end the subscription kept.
        let b = fe
            .notify(&sub, "forkB", 2, "terminated;reason=noresource", None)
            .await;
        assert_eq!(b, 481, "another fork's final NOTIFY");
        let away = scripted::pidf(target, Availability::Away);
        let a = fe
            .notify(&sub, "forkA", 2, "active;expires=600", Some(&away))
            .await;
        assert_eq!(a, 200, "the kept fork's NOTIFY");
        let seen = wait_scripted(&mut rx, target, "Away", see!(), |s| {
            s.availability == Some(Availability::Away)
        })
        .await;
        assert_eq!(seen.state, "Subscribed", "{seen:?}");
        assert!(seen.error.is_none(), "{seen:?}");
        assert_eq!(view.state(target).map(|s| s.name()), Some("Subscribed"));

        let ((), ()) = bounded(
            "terminate",
            futures_join(
                view.terminate(),
                script_unsubscribe(&mut fe, &sub, "forkA", 3),
            ),
        )
        .await;
        assert_eq!(watcher.core().live_dialogs(), 0);
        watcher.terminate().await;
        platform.shutdown().await;
    });
}

/// Both futures, run together.
async fn futures_join<A, B>(a: impl Future<Output = A>, b: impl Future<Output = B>) -> (A, B) {
    tokio::join!(a, b)
}

#[test]
fn a_subscription_too_brief_for_the_notifier_is_asked_again_with_its_min_expires() {
    use sip_core::{HeaderName, Method};
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe.platform().await;
        let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
        let view = RemotePresenceView::new(&watcher).expires(2);
        let mut rx = view.notifications();
        let target = "sip:bob@contoso.test";
        bounded("subscribe", view.subscribe([target.to_string()]))
            .await
            .expect("subscribe");
        let expires =
            |rm: &transport_tls::ReceivedMessage| scripted::header(rm, HeaderName::Expires);

        // 423 to the first SUBSCRIBE: a new one asks for the notifier's minimum.
        let first = fe.request(Method::Subscribe, "the SUBSCRIBE").await;
        assert_eq!(expires(&first).as_deref(), Some("2"));
        fe.reply(&first, 423, None, &[("Min-Expires", "3")]).await;
        let sub = fe
            .request(Method::Subscribe, "the SUBSCRIBE after a 423")
            .await;
        assert_eq!(scripted::to_tag(&sub), None, "a new dialog");
        assert_eq!(expires(&sub).as_deref(), Some("3"));
        fe.reply(&sub, 200, Some("n1"), &[("Expires", "3")]).await;
        let online = scripted::pidf(target, Availability::Online);
        let ok = fe
            .notify(&sub, "n1", 1, "active;expires=3", Some(&online))
            .await;
        assert_eq!(ok, 200);
        wait_scripted(&mut rx, target, "Subscribed", see!(), |s| {
            s.state == "Subscribed"
        })
        .await;

        // 423 to a refresh: the refresh is asked again, in the dialog, with the minimum.
        let refresh = fe.request(Method::Subscribe, "the refresh").await;
        assert_eq!(scripted::to_tag(&refresh).as_deref(), Some("n1"));
        assert_eq!(expires(&refresh).as_deref(), Some("3"));
        fe.reply(&refresh, 423, None, &[("Min-Expires", "5")]).await;
        let refresh = fe
            .request(Method::Subscribe, "the refresh after a 423")
            .await;
        assert_eq!(scripted::to_tag(&refresh).as_deref(), Some("n1"));
        assert_eq!(expires(&refresh).as_deref(), Some("5"));
        fe.reply(&refresh, 200, None, &[("Expires", "5")]).await;
        assert_eq!(view.state(target).map(|s| s.name()), Some("Subscribed"));

        let ((), ()) = bounded(
            "terminate",
            futures_join(view.terminate(), script_unsubscribe(&mut fe, &sub, "n1", 2)),
        )
        .await;
        assert_eq!(watcher.core().live_dialogs(), 0);
        watcher.terminate().await;
        platform.shutdown().await;
    });
}

#[test]
fn a_publication_too_brief_for_the_server_is_asked_again_with_its_min_expires() {
    use sip_core::{HeaderName, Method};
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe.platform().await;
        let bot = endpoint(&platform, "sip:bot@contoso.test").await;
        let presence = bot.local_owner_presence();
        let header = |rm: &transport_tls::ReceivedMessage, h| scripted::header(rm, h);

        let script = async {
            let first = fe.request(Method::Publish, "the PUBLISH").await;
            assert_eq!(header(&first, HeaderName::SipIfMatch), None);
            fe.reply(&first, 423, None, &[("Min-Expires", "900")]).await;
            let again = fe.request(Method::Publish, "the PUBLISH after a 423").await;
            assert_eq!(
                header(&again, HeaderName::SipIfMatch),
                None,
                "still initial"
            );
            assert_eq!(header(&again, HeaderName::Expires).as_deref(), Some("900"));
            assert!(!again.message.body().is_empty(), "with its document");
            fe.reply(&again, 200, None, &[("SIP-ETag", "e1"), ("Expires", "900")])
                .await;
        };
        let (published, ()) = bounded(
            "PUBLISH",
            futures_join(
                presence.publish_availability(Availability::Busy, None),
                script,
            ),
        )
        .await;
        published.expect("published after the 423");
        assert_eq!(presence.etag().await.as_deref(), Some("e1"));

        // The minimum is kept: a modification asks for it at once.
        let script = async {
            let modify = fe.request(Method::Publish, "the modifying PUBLISH").await;
            assert_eq!(
                header(&modify, HeaderName::SipIfMatch).as_deref(),
                Some("e1")
            );
            assert_eq!(header(&modify, HeaderName::Expires).as_deref(), Some("900"));
            fe.reply(
                &modify,
                200,
                None,
                &[("SIP-ETag", "e2"), ("Expires", "900")],
            )
            .await;
            let remove = fe.request(Method::Publish, "the removing PUBLISH").await;
            assert_eq!(
                header(&remove, HeaderName::SipIfMatch).as_deref(),
                Some("e2")
            );
            assert_eq!(header(&remove, HeaderName::Expires).as_deref(), Some("0"));
            fe.reply(&remove, 200, None, &[("SIP-ETag", "e2"), ("Expires", "0")])
                .await;
        };
        let (done, ()) = bounded(
            "modify and remove",
            futures_join(
                async {
                    presence
                        .publish_availability(Availability::Away, None)
                        .await?;
                    presence.remove().await
                },
                script,
            ),
        )
        .await;
        done.expect("modified and removed");
        bot.terminate().await;
        platform.shutdown().await;
    });
}

/// `presence` publishes `availability`; the scripted front end grants it with entity tag
/// `e1` for `expires` seconds.
async fn publish_first(
    fe: &mut scripted::FrontEnd,
    presence: &application_endpoint::LocalOwnerPresence,
    availability: Availability,
    expires: &str,
) {
    let script = async {
        let first = fe.request(sip_core::Method::Publish, "the PUBLISH").await;
        fe.reply(
            &first,
            200,
            None,
            &[("SIP-ETag", "e1"), ("Expires", expires)],
        )
        .await;
    };
    let (published, ()) = bounded(
        "PUBLISH",
        futures_join(presence.publish_availability(availability, None), script),
    )
    .await;
    published.expect("published");
}

#[test]
fn a_removal_during_a_refresh_waits_for_the_refreshed_entity_tag() {
    use sip_core::{HeaderName, Method};
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe.platform().await;
        let bot = endpoint(&platform, "sip:bot@contoso.test").await;
        let presence = bot.local_owner_presence();
        let header = |rm: &transport_tls::ReceivedMessage, h| scripted::header(rm, h);

        // Granted 2 s: refreshed after 1 s.
        publish_first(&mut fe, presence, Availability::Busy, "2").await;
        let refresh = fe.request(Method::Publish, "the refresh").await;
        assert_eq!(
            header(&refresh, HeaderName::SipIfMatch).as_deref(),
            Some("e1")
        );
        assert!(refresh.message.body().is_empty(), "a refresh has no body");

        // remove() is asked while the refresh waits for its answer (it is polled first):
        // it must name the entity tag the refresh gets, not the one the refresh replaced.
        let script = async {
            fe.reply(&refresh, 200, None, &[("SIP-ETag", "e2"), ("Expires", "2")])
                .await;
            let remove = fe.request(Method::Publish, "the removing PUBLISH").await;
            let if_match = header(&remove, HeaderName::SipIfMatch);
            let status = if if_match.as_deref() == Some("e2") {
                200
            } else {
                412
            };
            fe.reply(&remove, status, None, &[("Expires", "0")]).await;
            if_match
        };
        let (removed, if_match) = bounded("remove", futures_join(presence.remove(), script)).await;
        assert_eq!(
            if_match.as_deref(),
            Some("e2"),
            "the removal named a replaced entity tag: the publication stays at the server"
        );
        removed.expect("removed");
        assert_eq!(presence.etag().await, None);
        bot.terminate().await;
        platform.shutdown().await;
    });
}

#[test]
fn a_dropped_endpoint_stops_refreshing_its_publication() {
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe.platform().await;
        let bot = endpoint(&platform, "sip:bot@contoso.test").await;
        let core = Arc::downgrade(bot.core());
        // Granted 2 s: refreshed after 1 s while anyone holds the publication.
        publish_first(&mut fe, bot.local_owner_presence(), Availability::Busy, "2").await;

        // Dropped without terminate(): nothing holds the publication any more, so nothing
        // may keep refreshing it (nor keep the endpoint alive to do so).
        drop(bot);
        bounded("the endpoint to be freed", async {
            while core.strong_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        platform.shutdown().await;
    });
}

#[test]
fn removing_a_publication_the_server_no_longer_has_succeeds() {
    use sip_core::{HeaderName, Method};
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe.platform().await;
        let bot = endpoint(&platform, "sip:bot@contoso.test").await;
        let presence = bot.local_owner_presence();
        publish_first(&mut fe, presence, Availability::Online, "600").await;

        // The server forgot it (it restarted, or the publication expired): 412. What
        // remove() is for is done.
        let script = async {
            let remove = fe.request(Method::Publish, "the removing PUBLISH").await;
            assert_eq!(
                scripted::header(&remove, HeaderName::SipIfMatch).as_deref(),
                Some("e1")
            );
            fe.reply(&remove, 412, None, &[]).await;
        };
        let (removed, ()) = bounded("remove", futures_join(presence.remove(), script)).await;
        removed.expect("nothing left to remove is not a failure");
        assert_eq!(presence.etag().await, None);
        bot.terminate().await;
        platform.shutdown().await;
    });
}

#[test]
fn a_failed_refresh_is_retried_after_the_servers_retry_after() {
    use sip_core::{HeaderName, Method};
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe.platform().await;
        let bot = endpoint(&platform, "sip:bot@contoso.test").await;
        let presence = bot.local_owner_presence();
        publish_first(&mut fe, presence, Availability::Online, "2").await;

        // The server is overloaded: the next refresh waits as long as it asks.
        let refresh = fe.request(Method::Publish, "the refresh").await;
        fe.reply(&refresh, 503, None, &[("Retry-After", "3")]).await;
        let refused = tokio::time::Instant::now();
        let again = fe.request(Method::Publish, "the refresh retried").await;
        let waited = refused.elapsed();
        assert!(
            waited >= Duration::from_millis(2900),
            "retried after {waited:?}, not after the 3 s the server asked for"
        );
        assert_eq!(
            scripted::header(&again, HeaderName::SipIfMatch).as_deref(),
            Some("e1")
        );
        fe.reply(&again, 200, None, &[("SIP-ETag", "e2"), ("Expires", "600")])
            .await;

        let script = async {
            let remove = fe.request(Method::Publish, "the removing PUBLISH").await;
            assert_eq!(
                scripted::header(&remove, HeaderName::SipIfMatch).as_deref(),
                Some("e2")
            );
            fe.reply(&remove, 200, None, &[("Expires", "0")]).await;
        };
        let (removed, ()) = bounded("remove", futures_join(presence.remove(), script)).await;
        removed.expect("removed");
        bot.terminate().await;
        platform.shutdown().await;
    });
}

#[test]
fn a_subscription_whose_notify_never_comes_is_made_again() {
    use sip_core::Method;
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe.platform().await;
        let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
        let view = RemotePresenceView::new(&watcher)
            .notify_wait(Duration::from_millis(300))
            .retry(Duration::from_millis(100), Duration::from_millis(200));
        let mut rx = view.notifications();
        let target = "sip:bob@contoso.test";
        bounded("subscribe", view.subscribe([target.to_string()]))
            .await
            .expect("subscribe");

        // Accepted, but its NOTIFY never comes (lost, or the Contact unreachable): the
        // subscription failed (RFC 6665 §4.1.2.4, Timer N) and is made again.
        let lost = fe.request(Method::Subscribe, "the SUBSCRIBE").await;
        fe.reply(&lost, 200, Some("n1"), &[("Expires", "600")])
            .await;
        let failed = wait_scripted(&mut rx, target, "the failure", see!(), |s| {
            s.state == "WaitingForRetry"
        })
        .await;
        assert!(failed.error.is_some(), "{failed:?}");
        let again = fe
            .request(Method::Subscribe, "the SUBSCRIBE made again")
            .await;
        assert_eq!(scripted::to_tag(&again), None, "a new dialog");
        fe.reply(&again, 200, Some("n2"), &[("Expires", "600")])
            .await;
        let online = scripted::pidf(target, Availability::Online);
        let ok = fe
            .notify(&again, "n2", 1, "active;expires=600", Some(&online))
            .await;
        assert_eq!(ok, 200);
        wait_scripted(&mut rx, target, "Online", see!(), |s| {
            s.availability == Some(Availability::Online) && s.state == "Subscribed"
        })
        .await;

        let ((), ()) = bounded(
            "terminate",
            futures_join(
                view.terminate(),
                script_unsubscribe(&mut fe, &again, "n2", 2),
            ),
        )
        .await;
        assert_eq!(watcher.core().live_dialogs(), 0);
        watcher.terminate().await;
        platform.shutdown().await;
    });
}

#[test]
fn a_one_shot_query_refuses_the_notifies_of_other_forks() {
    use sip_core::{HeaderName, Method};
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe.platform().await;
        let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
        let view = RemotePresenceView::new(&watcher);
        let target = "sip:bob@contoso.test";
        let script = async {
            let sub = fe
                .request(Method::Subscribe, "the fetching SUBSCRIBE")
                .await;
            assert_eq!(
                scripted::header(&sub, HeaderName::Expires).as_deref(),
                Some("0")
            );
            // The SUBSCRIBE forked and both notifiers answer the fetch before the 2xx.
            let away = scripted::pidf(target, Availability::Away);
            let online = scripted::pidf(target, Availability::Online);
            let final_state = "terminated;reason=timeout";
            let a = fe
                .send_notify(&sub, "forkA", 1, final_state, Some(&away))
                .await;
            let b = fe
                .send_notify(&sub, "forkB", 1, final_state, Some(&online))
                .await;
            fe.reply(&sub, 200, Some("forkA"), &[("Expires", "0")])
                .await;
            (fe.answer(a).await, fe.answer(b).await)
        };
        let (fetched, (a, b)) = bounded("query", futures_join(view.query(target), script)).await;
        let fetched = fetched.expect("fetched");
        assert_eq!(fetched.availability, Some(Availability::Away));
        assert_eq!(a, 200, "the NOTIFY kept");
        assert_eq!(b, 481, "another fork's NOTIFY");
        assert_eq!(watcher.core().live_dialogs(), 0);
        watcher.terminate().await;
        platform.shutdown().await;
    });
}

#[test]
fn a_notify_without_presence_information_forgets_the_last_availability() {
    use sip_core::Method;
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe.platform().await;
        let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
        let view = RemotePresenceView::new(&watcher);
        let mut rx = view.notifications();
        let target = "sip:bob@contoso.test";
        bounded("subscribe", view.subscribe([target.to_string()]))
            .await
            .expect("subscribe");
        let sub = fe.request(Method::Subscribe, "the SUBSCRIBE").await;
        fe.reply(&sub, 200, Some("n1"), &[("Expires", "600")]).await;
        let busy = scripted::pidf(target, Availability::Busy);
        let ok = fe
            .notify(&sub, "n1", 1, "active;expires=600", Some(&busy))
            .await;
        assert_eq!(ok, 200);
        wait_scripted(&mut rx, target, "Busy", see!(), |s| {
            s.availability == Some(Availability::Busy)
        })
        .await;
        assert_eq!(view.availability(target), Some(Availability::Busy));

        // The presentity's state is gone (its publication removed): every NOTIFY carries
        // the whole state, so an empty one says nothing is known any more.
        let ok = fe.notify(&sub, "n1", 2, "active;expires=600", None).await;
        assert_eq!(ok, 200);
        let empty = wait_scripted(&mut rx, target, "the empty NOTIFY", see!(), |s| {
            !s.has_document
        })
        .await;
        assert_eq!(empty.state, "Subscribed");
        assert_eq!(view.availability(target), None, "a stale availability");

        let ((), ()) = bounded(
            "terminate",
            futures_join(view.terminate(), script_unsubscribe(&mut fe, &sub, "n1", 3)),
        )
        .await;
        watcher.terminate().await;
        platform.shutdown().await;
    });
}

#[test]
fn a_notify_for_another_event_or_id_is_refused_and_leaves_the_subscription_alone() {
    use sip_core::Method;
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe.platform().await;
        let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
        let view = RemotePresenceView::new(&watcher);
        let mut rx = view.notifications();
        let target = "sip:bob@contoso.test";
        bounded("subscribe", view.subscribe([target.to_string()]))
            .await
            .expect("subscribe");
        let sub = fe.request(Method::Subscribe, "the SUBSCRIBE").await;
        fe.reply(&sub, 200, Some("n1"), &[("Expires", "600")]).await;
        let online = scripted::pidf(target, Availability::Online);
        let ok = fe
            .notify(&sub, "n1", 1, "active;expires=600", Some(&online))
            .await;
        assert_eq!(ok, 200);
        wait_scripted(&mut rx, target, "Online", see!(), |s| {
            s.availability == Some(Availability::Online) && s.state == "Subscribed"
        })
        .await;

        // In the subscription's dialog, NOTIFYs whose Event is not the SUBSCRIBE's
        // (`presence`, no id): an id the SUBSCRIBE did not have, another package, the
        // package in another case (compared byte by byte, RFC 6665 §8.2.1). They belong
        // to no subscription (481) and change nothing; one without Event is malformed.
        let busy = scripted::pidf(target, Availability::Busy);
        let refused = [
            (
                "Event: presence;id=7\r\nSubscription-State: active\r\n",
                481,
            ),
            ("Event: dialog\r\nSubscription-State: active\r\n", 481),
            ("Event: Presence\r\nSubscription-State: active\r\n", 481),
            (
                "Event: presence;id=7\r\nSubscription-State: terminated;reason=rejected\r\n",
                481,
            ),
            ("Subscription-State: active\r\n", 400),
        ];
        for (cseq, (headers, want)) in (2..).zip(refused) {
            let sent = fe
                .send_notify_with(&sub, "n1", cseq, headers, Some(&busy))
                .await;
            assert_eq!(fe.answer(sent).await, want, "{headers:?}");
        }
        assert_eq!(view.availability(target), Some(Availability::Online));
        assert_eq!(view.state(target).map(|s| s.name()), Some("Subscribed"));

        // The subscription is still the dialog's: its next NOTIFY is taken.
        let away = scripted::pidf(target, Availability::Away);
        let ok = fe
            .notify(&sub, "n1", 10, "active;expires=600", Some(&away))
            .await;
        assert_eq!(ok, 200);
        let seen = wait_scripted(&mut rx, target, "Away", see!(), |s| s.has_document).await;
        assert_eq!(seen.availability, Some(Availability::Away), "{seen:?}");
        assert_eq!(seen.state, "Subscribed", "{seen:?}");

        let ((), ()) = bounded(
            "terminate",
            futures_join(
                view.terminate(),
                script_unsubscribe(&mut fe, &sub, "n1", 11),
            ),
        )
        .await;
        assert_eq!(watcher.core().live_dialogs(), 0);
        watcher.terminate().await;
        platform.shutdown().await;
    });
}

#[test]
fn a_notify_without_subscription_state_is_refused_and_changes_nothing() {
    use sip_core::Method;
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe.platform().await;
        let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
        let view = RemotePresenceView::new(&watcher);
        let mut rx = view.notifications();
        let target = "sip:bob@contoso.test";
        bounded("subscribe", view.subscribe([target.to_string()]))
            .await
            .expect("subscribe");
        let sub = fe.request(Method::Subscribe, "the SUBSCRIBE").await;
        fe.reply(&sub, 202, Some("n1"), &[("Expires", "600")]).await;
        // Held pending: the presentity has not authorised the watcher yet.
        let ok = fe.notify(&sub, "n1", 1, "pending;expires=600", None).await;
        assert_eq!(ok, 200);
        wait_scripted(&mut rx, target, "pending", see!(), |s| {
            s.state == "Subscribing"
        })
        .await;

        // Subscription-State is mandatory (RFC 6665 §4.1.3, §8.2.3): a NOTIFY without it,
        // or with one that cannot be read, is malformed and says nothing about the
        // subscription; it is not taken as `active`.
        let busy = scripted::pidf(target, Availability::Busy);
        for (cseq, headers) in (2..).zip([
            "Event: presence\r\n",
            "Event: presence\r\nSubscription-State: ;expires=600\r\n",
        ]) {
            let sent = fe
                .send_notify_with(&sub, "n1", cseq, headers, Some(&busy))
                .await;
            assert_eq!(fe.answer(sent).await, 400, "{headers:?}");
        }
        assert_eq!(view.state(target).map(|s| s.name()), Some("Subscribing"));
        assert_eq!(view.availability(target), None);

        // Authorised: the subscription becomes active with its NOTIFY.
        let online = scripted::pidf(target, Availability::Online);
        let ok = fe
            .notify(&sub, "n1", 4, "active;expires=600", Some(&online))
            .await;
        assert_eq!(ok, 200);
        let seen = wait_scripted(&mut rx, target, "active", see!(), |s| s.has_document).await;
        assert_eq!(seen.availability, Some(Availability::Online), "{seen:?}");
        assert_eq!(seen.state, "Subscribed", "{seen:?}");

        let ((), ()) = bounded(
            "terminate",
            futures_join(view.terminate(), script_unsubscribe(&mut fe, &sub, "n1", 5)),
        )
        .await;
        assert_eq!(watcher.core().live_dialogs(), 0);
        watcher.terminate().await;
        platform.shutdown().await;
    });
}

#[test]
fn a_publication_accepted_without_an_entity_tag_fails_and_is_not_refreshed() {
    use sip_core::{HeaderName, Method};
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe.platform().await;
        let bot = endpoint(&platform, "sip:bot@contoso.test").await;
        let presence = bot.local_owner_presence();

        // A 2xx without SIP-ETag (RFC 3903 §11.3: the server MUST send one): there is
        // nothing to refresh, modify or remove the publication by.
        let script = async {
            let first = fe.request(Method::Publish, "the PUBLISH").await;
            fe.reply(&first, 200, None, &[("Expires", "2")]).await;
        };
        let (published, ()) = bounded(
            "PUBLISH",
            futures_join(
                presence.publish_availability(Availability::Busy, None),
                script,
            ),
        )
        .await;
        match published {
            Err(EndpointError::NoEntityTag { status: 200 }) => {}
            other => panic!("expected NoEntityTag, got {other:?}"),
        }
        assert_eq!(presence.etag().await, None);
        // Granted 2 s: a refresh would come after about 1 s. None comes.
        let refresh = tokio::time::timeout(
            Duration::from_millis(2500),
            fe.request(Method::Publish, "no refresh"),
        )
        .await;
        if let Ok(r) = refresh {
            panic!(
                "refreshed a publication without entity tag: SIP-If-Match {:?}",
                scripted::header(&r, HeaderName::SipIfMatch)
            );
        }

        // The next publish starts a new publication, which works as usual.
        let script = async {
            let again = fe.request(Method::Publish, "the new PUBLISH").await;
            assert_eq!(scripted::header(&again, HeaderName::SipIfMatch), None);
            fe.reply(&again, 200, None, &[("SIP-ETag", "e1"), ("Expires", "600")])
                .await;
            let remove = fe.request(Method::Publish, "the removing PUBLISH").await;
            assert_eq!(
                scripted::header(&remove, HeaderName::SipIfMatch).as_deref(),
                Some("e1")
            );
            fe.reply(&remove, 200, None, &[("Expires", "0")]).await;
        };
        let (done, ()) = bounded(
            "publish and remove",
            futures_join(
                async {
                    presence
                        .publish_availability(Availability::Online, None)
                        .await?;
                    presence.remove().await
                },
                script,
            ),
        )
        .await;
        done.expect("published and removed");
        bot.terminate().await;
        platform.shutdown().await;
    });
}

/// A hybrid deployment's homing directory in which one user, bob, can be moved to the
/// cloud and back while the platform runs (a user migrated between the two).
#[derive(Default)]
struct MovableBob {
    in_cloud: std::sync::atomic::AtomicBool,
}

impl collaboration_platform::HomingDirectory for MovableBob {
    fn is_cloud_homed(&self, user: &str, domain: &str) -> bool {
        user == "bob"
            && domain == "contoso.test"
            && self.in_cloud.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn a_target_subscribed_again_or_retried_is_homed_where_the_topology_says_now() {
    use sip_core::Method;
    use std::sync::atomic::Ordering::SeqCst;
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let directory = Arc::new(MovableBob::default());
        let topology = Topology::new(["contoso.test"]).with_directory(directory.clone());
        let platform = fe.platform_with(topology).await;
        let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
        let view = RemotePresenceView::new(&watcher)
            .retry(Duration::from_millis(100), Duration::from_millis(200));
        let mut rx = view.notifications();
        let target = "sip:bob@contoso.test";
        let refused = |s: &Seen| s.state == "Terminated" && s.error.is_some();

        // Homed on-premises: a 403 is the home deployment's own refusal.
        bounded("subscribe", view.subscribe([target.to_string()]))
            .await
            .expect("subscribe");
        let first = fe.request(Method::Subscribe, "the first SUBSCRIBE").await;
        fe.reply(&first, 403, None, &[]).await;
        let seen = wait_scripted(&mut rx, target, "the first 403", see!(), refused).await;
        assert_eq!(seen.homing, "on-premises", "{seen:?}");
        assert!(!seen.federation_refusal, "{seen:?}");

        // Moved to the cloud, then subscribed again: the same 403 is now the far side of
        // federation refusing.
        directory.in_cloud.store(true, SeqCst);
        bounded("subscribe again", view.subscribe([target.to_string()]))
            .await
            .expect("subscribe again");
        let second = fe.request(Method::Subscribe, "the second SUBSCRIBE").await;
        fe.reply(&second, 403, None, &[]).await;
        let seen = wait_scripted(&mut rx, target, "the second 403", see!(), refused).await;
        assert_eq!(seen.homing, "federated", "{seen:?}");
        assert!(seen.federation_refusal, "{seen:?}");

        // Back on-premises and subscribed; the notifier ends it on probation and the user
        // moves to the cloud before the retry: the retry is homed afresh too.
        directory.in_cloud.store(false, SeqCst);
        bounded(
            "subscribe a third time",
            view.subscribe([target.to_string()]),
        )
        .await
        .expect("subscribe a third time");
        let third = fe.request(Method::Subscribe, "the third SUBSCRIBE").await;
        fe.reply(&third, 200, Some("n3"), &[("Expires", "600")])
            .await;
        let online = scripted::pidf(target, Availability::Online);
        let ok = fe
            .notify(&third, "n3", 1, "active;expires=600", Some(&online))
            .await;
        assert_eq!(ok, 200);
        let seen = wait_scripted(&mut rx, target, "Subscribed", see!(), |s| {
            s.state == "Subscribed" && s.availability == Some(Availability::Online)
        })
        .await;
        assert_eq!(seen.homing, "on-premises", "{seen:?}");
        directory.in_cloud.store(true, SeqCst);
        let ended = fe
            .notify(&third, "n3", 2, "terminated;reason=probation", None)
            .await;
        assert_eq!(ended, 200);
        let retry = fe.request(Method::Subscribe, "the retry").await;
        assert_eq!(scripted::to_tag(&retry), None, "a new dialog");
        fe.reply(&retry, 403, None, &[]).await;
        let seen = wait_scripted(&mut rx, target, "the retry's 403", see!(), refused).await;
        assert_eq!(seen.homing, "federated", "{seen:?}");
        assert!(seen.federation_refusal, "{seen:?}");

        bounded("terminate", view.terminate()).await;
        assert_eq!(watcher.core().live_dialogs(), 0);
        watcher.terminate().await;
        platform.shutdown().await;
    });
}

#[test]
fn a_one_shot_query_ends_the_subscription_of_a_fork_that_keeps_it_alive() {
    use sip_core::{HeaderName, Method};
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe.platform().await;
        let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
        let view = RemotePresenceView::new(&watcher);
        let target = "sip:bob@contoso.test";
        let script = async {
            let sub = fe
                .request(Method::Subscribe, "the fetching SUBSCRIBE")
                .await;
            // The SUBSCRIBE forked: the 2xx comes from fork A, the NOTIFY from fork B,
            // whose notifier keeps the subscription alive despite `Expires: 0`. Each
            // fork is a subscription of its own (RFC 6665 §4.1.2.4): B's must be ended
            // in B's dialog.
            let away = scripted::pidf(target, Availability::Away);
            let b = fe
                .send_notify(&sub, "forkB", 1, "active;expires=600", Some(&away))
                .await;
            fe.reply(&sub, 200, Some("forkA"), &[("Expires", "0")])
                .await;
            assert_eq!(fe.answer(b).await, 200, "fork B's NOTIFY");
            let end = fe
                .request(Method::Subscribe, "the un-SUBSCRIBE of fork B")
                .await;
            assert_eq!(
                scripted::to_tag(&end).as_deref(),
                Some("forkB"),
                "the un-SUBSCRIBE goes to the fork that notified"
            );
            assert_eq!(
                scripted::header(&end, HeaderName::Expires).as_deref(),
                Some("0")
            );
            fe.reply(&end, 200, None, &[("Expires", "0")]).await;
            (sub, end)
        };
        let (fetched, (sub, _)) = bounded("query", futures_join(view.query(target), script)).await;
        let fetched = fetched.expect("fetched");
        assert_eq!(fetched.availability, Some(Availability::Away));
        // B's final NOTIFY, and A's only one, come after the query is over: answered
        // (481 by then), neither leaves a dialog behind.
        let b = fe
            .notify(&sub, "forkB", 2, "terminated;reason=timeout", None)
            .await;
        assert!(b == 200 || b == 481, "fork B's final NOTIFY: {b}");
        let a = fe
            .notify(&sub, "forkA", 1, "terminated;reason=timeout", None)
            .await;
        assert!(a == 200 || a == 481, "fork A's NOTIFY: {a}");
        assert_eq!(watcher.core().live_dialogs(), 0);
        watcher.terminate().await;
        platform.shutdown().await;
    });
}

// ---- retries that must neither give up on a passing overload nor loop ----

/// This platform's transaction table is full (`RequestError::Overloaded`, "try again
/// shortly"): the subscription is tried again, not given up for good.
#[test]
fn a_local_overload_does_not_give_a_subscription_up_for_good() {
    use sip_core::Method;
    runtime().block_on(async {
        let mut fe = scripted::FrontEnd::start().await;
        let platform = fe
            .platform_custom(|s| {
                s.transaction_timers(sip_core::transaction::TransactionConfig {
                    max_transactions: 1,
                    ..Default::default()
                })
            })
            .await;
        let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
        let view = RemotePresenceView::new(&watcher)
            .retry(Duration::from_millis(100), Duration::from_millis(200));
        let mut rx = view.notifications();
        let (bob, carol) = ("sip:bob@contoso.test", "sip:carol@contoso.test");
        bounded(
            "subscribe",
            view.subscribe([bob.to_string(), carol.to_string()]),
        )
        .await
        .expect("subscribe");
        // One SUBSCRIBE takes the only transaction and is left unanswered for now.
        let held = fe.request(Method::Subscribe, "the first SUBSCRIBE").await;
        let held_target = scripted::header(&held, sip_core::HeaderName::To).unwrap();
        let other = if held_target.contains("bob") {
            carol
        } else {
            bob
        };
        let seen = wait_scripted(&mut rx, other, "the overloaded one", see!(), |s| {
            s.error.is_some()
        })
        .await;
        assert_ne!(
            seen.state, "Terminated",
            "a transient local overload (RequestError::Overloaded, 'try again shortly') \
             gave {other} up for good: {seen:?}"
        );
        drop(held);
        watcher.terminate().await;
        platform.shutdown().await;
    });
}

/// How the scripted front end ends each subscription attempt in [`attempts_in_a_window`].
#[derive(Clone, Copy)]
enum ZeroRetryAfter {
    /// 503 with `Retry-After: 0`.
    Refused,
    /// 200, then NOTIFY `terminated;reason=probation;retry-after=0`.
    OnProbation,
}

/// SUBSCRIBEs for one target in 1.5 s when each attempt is ended with "retry after 0 s"
/// (default retry settings: at least 1 s between attempts).
async fn attempts_in_a_window(how: ZeroRetryAfter) -> u32 {
    use sip_core::Method;
    let mut fe = scripted::FrontEnd::start().await;
    let platform = fe.platform().await;
    let watcher = endpoint(&platform, "sip:watcher@contoso.test").await;
    let view = RemotePresenceView::new(&watcher);
    let _rx = view.notifications();
    bounded(
        "subscribe",
        view.subscribe(["sip:bob@contoso.test".to_string()]),
    )
    .await
    .expect("subscribe");
    let end = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut count = 0u32;
    while let Ok(sub) =
        tokio::time::timeout_at(end, fe.request(Method::Subscribe, "a SUBSCRIBE")).await
    {
        count += 1;
        match how {
            ZeroRetryAfter::Refused => fe.reply(&sub, 503, None, &[("Retry-After", "0")]).await,
            ZeroRetryAfter::OnProbation => {
                let tag = format!("n{count}");
                fe.reply(&sub, 200, Some(&tag), &[("Expires", "600")]).await;
                let state = "terminated;reason=probation;retry-after=0";
                let _ = fe.notify(&sub, &tag, 1, state, None).await;
            }
        }
        if count > 1000 {
            break;
        }
    }
    watcher.terminate().await;
    platform.shutdown().await;
    count
}

/// A SUBSCRIBE answered 503 with `Retry-After: 0` is tried again after the backoff, not at
/// once (that was hundreds of SUBSCRIBEs a second).
#[test]
fn a_retry_after_of_zero_is_no_licence_to_loop() {
    let count = runtime().block_on(attempts_in_a_window(ZeroRetryAfter::Refused));
    assert!(
        count <= 3,
        "{count} SUBSCRIBEs in 1.5 s: a tight retry loop"
    );
}

/// A notifier ending the subscription with `probation;retry-after=0` is subscribed to again
/// after the backoff, not at once.
#[test]
fn probation_with_retry_after_zero_is_no_licence_to_loop() {
    let count = runtime().block_on(attempts_in_a_window(ZeroRetryAfter::OnProbation));
    assert!(
        count <= 3,
        "{count} SUBSCRIBEs in 1.5 s: a tight resubscribe loop"
    );
}
