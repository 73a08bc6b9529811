//! `RemotePresenceView` against the real peers (peer-harness): Kamailio 5.6 front ends for
//! contoso.test (home) and fabrikam.test (federated), each with its presence server
//! (`presence` + `presence_xml`, every watcher authorised).
//!
//! Every wait is bounded. Without kamailio these tests fail with the install hint.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use application_endpoint::pidf::Availability;
use application_endpoint::{
    ApplicationEndpoint, ApplicationEndpointSettings, Endpoint, EndpointError, RemotePresenceView,
};
use collaboration_platform::{
    Address, CollaborationPlatform, Identity, Listener, OutboundProxy, ServerPlatformSettings,
    Topology, TopologyError, TrustRoots,
};
use collaboration_platform::{MessageObserver, WireDirection};
use peer_harness::{CertFiles, Deployment, Federation};
use std::sync::{Arc, Mutex};

/// Bound of every single wait.
const WAIT: Duration = Duration::from_secs(15);

fn federation() -> Federation {
    Federation::start().unwrap_or_else(|e| panic!("starting the real peers failed: {e}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no outcome within {WAIT:?}"))
}

fn identity(c: &CertFiles) -> Identity {
    Identity::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes()).expect("identity PEM")
}

fn roots(fed: &Federation) -> TrustRoots {
    TrustRoots::from_pem(fed.pki().ca_pem().as_bytes()).expect("CA PEM")
}

fn loopback0() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

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

/// Records the request line and Call-ID of every request the platform sends.
#[derive(Default)]
struct Sent(Mutex<Vec<(String, String)>>);

impl Sent {
    /// (request line, Call-ID) of each SUBSCRIBE sent, in order.
    fn subscribes(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| l.starts_with("SUBSCRIBE "))
            .cloned()
            .collect()
    }
}

impl MessageObserver for Sent {
    fn observe(&self, direction: WireDirection, _remote: SocketAddr, wire: &bytes::Bytes) {
        if direction != WireDirection::Sent {
            return;
        }
        let text = String::from_utf8_lossy(wire);
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or_default().to_string();
        if first.starts_with("SIP/2.0") {
            return;
        }
        let call_id = lines
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                let name = name.trim();
                (name.eq_ignore_ascii_case("call-id") || name == "i").then(|| value.trim())
            })
            .unwrap_or_default()
            .to_string();
        self.0.lock().unwrap().push((first, call_id));
    }
}

#[test]
fn one_shot_query_for_a_home_user_and_refusal_for_a_federated_one() {
    let fed = federation();
    runtime().block_on(async {
        let sent = Arc::new(Sent::default());
        let platform = CollaborationPlatform::start(
            settings(&fed, Deployment::Contoso).observer(sent.clone()),
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
        let lines = |sent: &Sent| -> Vec<String> {
            sent.subscribes().into_iter().map(|(l, _)| l).collect()
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
    let sent = Arc::new(Sent::default());
    let target = "sip:bot@contoso.test";
    let (platform, bot, watcher, view, mut rx) = rt.block_on(async {
        let platform = CollaborationPlatform::start(
            settings(&fed, Deployment::Contoso).observer(sent.clone()),
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
        let subs = sent.subscribes();
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
                let subs = sent.subscribes();
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
