//! The endpoints against real peers (peer-harness): Kamailio 5.6 as the contoso front end
//! (mutual TLS for the trusted application, a TLS listener without client certificates
//! where users authenticate with digest, registrar with location lookup) and SIPp as the
//! users calling in.
//!
//! Every wait is bounded. Without kamailio or sipp these tests fail with the install hint.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use application_endpoint::{
    ApplicationEndpoint, ApplicationEndpointSettings, Credentials, Endpoint, EndpointError,
    EndpointState, Modality, StateChange, UserEndpoint, UserEndpointSettings,
};
use bytes::Bytes;
use collaboration_platform::{
    Address, ClientPlatformSettings, CollaborationPlatform, Homed, IncomingRequest, Listener,
    OnPremises, OutboundProxy, ServerLocator, ServerPlatformSettings, Topology, WireDirection,
    WireLog,
};
use interop_support::{bounded, bounded_by, federation, identity, loopback0, roots, runtime, WAIT};
use peer_harness::{
    scenarios, status_line, unique_token, Deployment, Federation, SipTcpClient, SippOutcome,
};
use sip_core::auth::DigestClient;
use sip_core::{Contact, HeaderName, Method, SipMessage};
use tokio::sync::{mpsc, watch};

fn home(uri: &str) -> Address<OnPremises> {
    Address::assume_on_premises(uri).expect("a SIP URI")
}

/// The trusted application `app.contoso.test`: its front end contoso over mutual TLS, which
/// does not challenge its REGISTERs.
fn trusted_settings(fed: &Federation) -> ServerPlatformSettings {
    let contoso = fed.contoso();
    ServerPlatformSettings::new(
        "ucma-rs endpoint interop",
        Deployment::Contoso.application(),
        identity(fed.pki().application(Deployment::Contoso)),
        roots(fed),
        OutboundProxy::tls(contoso.mtls_addr(), contoso.fqdn()),
    )
    .listen(Listener::mutual_tls(loopback0()))
    .topology(Topology::new([Deployment::Contoso.domain()]))
}

/// A client platform: no certificate, contoso's TLS listener for users, where REGISTER is
/// challenged with digest.
fn client_settings(fed: &Federation) -> ClientPlatformSettings {
    let contoso = fed.contoso();
    let addr = contoso
        .user_tls_addr()
        .expect("the fixture has a user TLS listener");
    ClientPlatformSettings::new(
        "ucma-rs endpoint interop",
        roots(fed),
        OutboundProxy::tls(addr, contoso.fqdn()),
    )
    .topology(Topology::new([Deployment::Contoso.domain()]))
}

/// Every message a platform sent or received, with the queries these tests make.
#[derive(Default)]
struct Wire(WireLog);

/// The value of header `name` (case-insensitive) in a message's text.
fn header_of<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

impl Wire {
    /// Messages that went `direction`, whose first line starts with `start` and whose From
    /// is `user`'s AOR at contoso.
    fn count(&self, direction: WireDirection, start: &str, user: &str) -> usize {
        let aor = format!("sip:{user}@contoso.test");
        self.0
            .matching(|r| {
                let text = r.text();
                r.direction == direction
                    && text.starts_with(start)
                    && header_of(&text, "From").is_some_and(|f| f.contains(&aor))
            })
            .len()
    }

    /// REGISTERs sent for `user`.
    fn registers_sent(&self, user: &str) -> usize {
        self.count(WireDirection::Sent, "REGISTER ", user)
    }

    /// 200 responses to REGISTER received for `user`.
    fn registers_granted(&self, user: &str) -> usize {
        let aor = format!("sip:{user}@contoso.test");
        self.0
            .matching(|r| {
                let text = r.text();
                r.direction == WireDirection::Received
                    && text.starts_with("SIP/2.0 200")
                    && header_of(&text, "CSeq").is_some_and(|c| c.ends_with("REGISTER"))
                    && header_of(&text, "From").is_some_and(|f| f.contains(&aor))
            })
            .len()
    }

    /// Texts of the responses sent whose first line starts with `start`.
    fn responses_sent(&self, start: &str) -> Vec<String> {
        self.0
            .matching(|r| r.direction == WireDirection::Sent && r.text().starts_with(start))
            .iter()
            .map(|r| r.text().into_owned())
            .collect()
    }
}

/// Records every state change after now, with when it happened.
fn record_states(mut rx: watch::Receiver<StateChange>) -> Arc<Mutex<Vec<(Instant, StateChange)>>> {
    rx.mark_unchanged();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let c = rx.borrow_and_update().clone();
            out.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((Instant::now(), c));
        }
    });
    seen
}

/// Waits (bounded by `limit`) until the watched state is `state`; returns the change.
async fn reach(
    rx: &mut watch::Receiver<StateChange>,
    state: EndpointState,
    limit: Duration,
    what: &str,
) -> StateChange {
    bounded_by(limit, what, rx.wait_for(|c| c.state == state))
        .await
        .expect("the endpoint is alive")
        .clone()
}

/// Answers every page-mode MESSAGE with 200 and reports (caller, body).
fn answer_pages(
    mut pages: mpsc::Receiver<IncomingRequest>,
) -> mpsc::UnboundedReceiver<(Homed, String)> {
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(mut req) = pages.recv().await {
            let body = String::from_utf8_lossy(req.body()).into_owned();
            let _ = tx.send((req.caller().clone(), body));
            req.respond(200, "OK", &[], None).await.expect("respond");
        }
    });
    seen
}

/// SIPp at contoso (TCP, as `alice`) sends `calls` page-mode MESSAGEs to `to_user`.
fn sipp_messages(fed: &Federation, name: &str, to_user: &str, calls: u64) -> SippOutcome {
    fed.sipp(name, scenarios::UAC_MESSAGE)
        .remote(fed.contoso().tcp_addr())
        .key("to_user", to_user)
        .key("to_domain", "contoso.test")
        .key("from_user", "alice")
        .key("from_domain", "contoso.test")
        .calls(calls)
        .run()
        .expect("SIPp ran")
}

/// One MESSAGE from a user connected to contoso over TCP to `to_user`; the final response.
fn message_over_tcp(fed: &Federation, to_user: &str) -> SipMessage {
    let mut c = SipTcpClient::connect(fed.contoso().tcp_addr(), WAIT).expect("connect");
    let uri = format!("sip:{to_user}@contoso.test");
    let req = c
        .request(Method::Message, &uri, "sip:alice@contoso.test", &uri)
        .body("text/plain", "anyone there?")
        .build()
        .unwrap();
    c.transaction(&req, WAIT).expect("an answer")
}

/// The bindings contoso's registrar holds for `user`: a REGISTER without Contact (a query,
/// RFC 3261 §10.2.3) authenticated with digest, over TCP. The 200 lists the contacts.
fn bindings(fed: &Federation, user: &str, password: &str) -> SipMessage {
    let mut c = SipTcpClient::connect(fed.contoso().tcp_addr(), WAIT).expect("connect");
    let aor = format!("sip:{user}@contoso.test");
    let call_id = format!("query-{}@endpoint-interop", unique_token());
    let first = c
        .request_in_call(Method::Register, "sip:contoso.test", &aor, &aor, &call_id)
        .build()
        .unwrap();
    let challenge = c.transaction(&first, WAIT).expect("challenge");
    assert_eq!(challenge.status(), Some(401), "{}", status_line(&challenge));
    let mut digest = DigestClient::new(Credentials::new(user, password));
    let mut b = c.request_in_call(Method::Register, "sip:contoso.test", &aor, &aor, &call_id);
    for h in digest.handle_challenge(&challenge, &first).expect("answer") {
        b = b.header(h.name, h.value);
    }
    let ok = c
        .transaction(&b.build().unwrap(), WAIT)
        .expect("query answered");
    assert_eq!(ok.status(), Some(200), "{}", status_line(&ok));
    ok
}

/// The remaining lifetime of the binding of `contact` in a registrar's 200, if listed.
fn binding_of(ok: &SipMessage, contact: &str) -> Option<u32> {
    ok.contacts().flatten().find_map(|c| match &c {
        Contact::Addr(a) if a.uri().as_bytes() == contact.as_bytes() => {
            Some(c.expires().unwrap_or(0))
        }
        _ => None,
    })
}

fn kamailio_log(fed: &Federation) -> String {
    std::fs::read_to_string(fed.contoso().log_path()).unwrap_or_default()
}

#[test]
fn application_endpoint_without_registration_then_reached_through_the_location_service() {
    let fed = federation();
    let rt = runtime();
    let platform = rt
        .block_on(CollaborationPlatform::start(trusted_settings(&fed)))
        .unwrap();

    // Without registration (UCMA's default): routing is set up, nothing is sent.
    let plain = ApplicationEndpoint::new(
        &platform,
        ApplicationEndpointSettings::new(home("sip:bot@contoso.test")),
    );
    rt.block_on(bounded("establish", plain.establish()))
        .unwrap_or_else(|e| panic!("establishing without registration: {e}"));
    assert_eq!(plain.state(), EndpointState::Established);
    let reason = plain.watch_state().borrow().reason.clone();
    assert!(reason.contains("no registration"), "{reason}");
    assert_eq!(rt.block_on(plain.gruu()), None);
    // The front end has no location for bot, so users cannot reach it.
    let r = message_over_tcp(&fed, "bot");
    assert_eq!(r.status(), Some(404), "{}", status_line(&r));
    rt.block_on(bounded("terminate", plain.terminate()));
    assert_eq!(plain.state(), EndpointState::Terminated);

    // With registration over mutual TLS: not challenged (trusted application).
    let bot = ApplicationEndpoint::new(
        &platform,
        ApplicationEndpointSettings::new(home("sip:bot@contoso.test"))
            .use_registration(true)
            .registration_expires(300),
    );
    let mut seen = rt.block_on(async {
        let pages = bot.core().pages();
        bounded("establish with registration", bot.establish())
            .await
            .unwrap_or_else(|e| panic!("registering bot: {e}\n{}", fed.log_tails(30)));
        answer_pages(pages)
    });
    assert_eq!(bot.state(), EndpointState::Established);
    let reason = bot.watch_state().borrow().reason.clone();
    assert_eq!(reason, "registered for 300 s");

    // alice (SIPp at contoso) -> contoso: lookup("location") finds bot's contact -> us.
    let uac = sipp_messages(&fed, "alice-to-bot", "bot", 2);
    assert!(uac.succeeded(), "{}\n{}", uac.report(), fed.log_tails(30));
    rt.block_on(async {
        for _ in 0..2 {
            let (caller, body) = bounded("page delivered", seen.recv()).await.unwrap();
            let Homed::OnPremises(a) = &caller else {
                panic!("alice is a home user: {caller:?}")
            };
            assert_eq!(a.uri(), "sip:alice@contoso.test");
            assert!(body.contains("Hello from SIPp"), "{body}");
        }
    });

    // Terminating unregisters: the front end forgets the contact.
    rt.block_on(bounded("terminate", bot.terminate()));
    assert_eq!(bot.state(), EndpointState::Terminated);
    let r = message_over_tcp(&fed, "bot");
    assert_eq!(r.status(), Some(404), "{}", status_line(&r));
    rt.block_on(platform.shutdown());
}

/// One MESSAGE from a user connected over TCP to the front end at `front_end` to `to_user`
/// at contoso; the final response.
fn message_via(front_end: SocketAddr, to_user: &str) -> SipMessage {
    let mut c = SipTcpClient::connect(front_end, WAIT).expect("connect");
    let uri = format!("sip:{to_user}@contoso.test");
    let req = c
        .request(Method::Message, &uri, "sip:alice@contoso.test", &uri)
        .body("text/plain", "anyone there?")
        .build()
        .unwrap();
    c.transaction(&req, WAIT).expect("an answer")
}

#[test]
fn a_registered_application_endpoint_follows_its_platform_to_the_next_front_end() {
    let mut fed = federation();
    let replica = fed
        .spawn_replica(Deployment::Contoso)
        .unwrap_or_else(|e| panic!("second contoso front end: {e}"));
    let contoso = fed.contoso();
    let fqdn = contoso.fqdn();
    let (first, second) = (contoso.mtls_addr(), replica.mtls_addr());
    // The front end by domain: its two servers, in order.
    let settings = ServerPlatformSettings::new(
        "ucma-rs endpoint interop",
        Deployment::Contoso.application(),
        identity(fed.pki().application(Deployment::Contoso)),
        roots(&fed),
        OutboundProxy::tls_domain(fqdn),
    )
    .listen(Listener::mutual_tls(loopback0()))
    .topology(Topology::new([Deployment::Contoso.domain()]))
    .locator(
        ServerLocator::new()
            .without_dns()
            .with_override(fqdn, first, fqdn)
            .with_override(fqdn, second, fqdn),
    );
    let rt = runtime();
    let platform = rt
        .block_on(bounded("start", CollaborationPlatform::start(settings)))
        .unwrap_or_else(|e| panic!("start: {e}"));
    let bot = ApplicationEndpoint::new(
        &platform,
        ApplicationEndpointSettings::new(home("sip:bot@contoso.test"))
            .use_registration(true)
            .registration_expires(300),
    );
    let mut seen = rt.block_on(async {
        let pages = bot.core().pages();
        bounded("establish with registration", bot.establish())
            .await
            .unwrap_or_else(|e| panic!("registering bot: {e}\n{}", fed.log_tails(30)));
        answer_pages(pages)
    });
    // Registered at the first server only: the second does not know bot.
    let r = message_via(replica.tcp_addr(), "bot");
    assert_eq!(r.status(), Some(404), "{}", status_line(&r));

    let mut moves = platform.proxy_changes();
    moves.mark_unchanged();
    let mut state = bot.watch_state();
    fed.front_end_mut(Deployment::Contoso).stop();
    rt.block_on(async {
        bounded("the platform moves to the second server", moves.changed())
            .await
            .expect("platform running");
        assert_eq!(platform.proxy().remote, second);
        // Registered again, now at the second server (a first attempt may have met the
        // dead one and failed: the move itself makes the endpoint try again).
        bounded(
            "bot registered at the second server",
            state.wait_for(|c| {
                c.state == EndpointState::Established && c.reason.starts_with("registered again")
            }),
        )
        .await
        .expect("the endpoint is alive");
    });
    let r = message_via(replica.tcp_addr(), "bot");
    assert_eq!(r.status(), Some(200), "{}", status_line(&r));
    rt.block_on(async {
        let (caller, body) = bounded("page delivered", seen.recv()).await.unwrap();
        assert_eq!(caller.uri(), "sip:alice@contoso.test");
        assert_eq!(body, "anyone there?");
        bounded("terminate", bot.terminate()).await;
        platform.shutdown().await;
    });
    drop(replica);
}

#[test]
fn user_endpoint_registers_with_digest_and_a_wrong_password_fails_at_once() {
    let fed = federation();
    let rt = runtime();
    let wire = Wire::default();
    let platform = rt
        .block_on(CollaborationPlatform::start(
            client_settings(&fed).observer(wire.0.as_observer()),
        ))
        .unwrap();

    // The right password: challenged once, answered, registered for what was asked.
    let alice = UserEndpoint::new(
        &platform,
        UserEndpointSettings::new(
            home("sip:alice@contoso.test"),
            Credentials::new("alice", "alice-secret"),
        )
        .registration_expires(300),
    );
    let granted = rt
        .block_on(bounded("alice registers", alice.establish()))
        .unwrap_or_else(|e| panic!("alice: {e}\n{}", fed.log_tails(30)));
    assert_eq!(granted.expires, 300);
    assert_eq!(alice.state(), EndpointState::Established);
    assert_eq!(alice.watch_state().borrow().reason, "registered for 300 s");
    assert_eq!(
        wire.registers_sent("alice"),
        2,
        "REGISTER, 401, REGISTER with credentials"
    );
    assert_eq!(wire.registers_granted("alice"), 1);
    let b = bindings(&fed, "alice", "alice-secret");
    let left = binding_of(&b, alice.core().contact());
    assert!(
        left.is_some_and(|s| s > 290 && s <= 300),
        "alice's binding {left:?} in\n{b}"
    );

    // A wrong password: a typed error, promptly, back to Idle, and exactly one retry.
    let carol = UserEndpoint::new(
        &platform,
        UserEndpointSettings::new(
            home("sip:carol@contoso.test"),
            Credentials::new("carol", "not-carols-password"),
        ),
    );
    let started = Instant::now();
    let result = rt.block_on(bounded("carol registers", carol.establish()));
    let took = started.elapsed();
    eprintln!("wrong password refused in {took:?}");
    match &result {
        Err(EndpointError::Authentication { status, reason }) => {
            assert_eq!(*status, 401, "{reason}");
        }
        other => panic!("expected an authentication error, got {other:?}"),
    }
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    assert_eq!(carol.state(), EndpointState::Idle);
    let reason = carol.watch_state().borrow().reason.clone();
    assert!(reason.starts_with("registration failed"), "{reason}");
    // Nothing more goes out afterwards: no retry loop.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        wire.registers_sent("carol"),
        2,
        "one REGISTER without credentials, exactly one with them"
    );
    assert_eq!(wire.registers_granted("carol"), 0);
    let failed = kamailio_log(&fed)
        .lines()
        .filter(|l| l.contains("failed digest for carol"))
        .count();
    assert_eq!(
        failed,
        1,
        "the registrar saw one wrong answer\n{}",
        fed.log_tails(30)
    );
    assert_eq!(carol.state(), EndpointState::Idle);

    rt.block_on(bounded("terminate", alice.terminate()));
    rt.block_on(platform.shutdown());
}

#[test]
fn a_short_registration_is_refreshed_before_it_expires() {
    let fed = federation();
    let rt = runtime();
    let wire = Wire::default();
    let platform = rt
        .block_on(CollaborationPlatform::start(
            client_settings(&fed).observer(wire.0.as_observer()),
        ))
        .unwrap();
    // Kamailio's min_expires is 10.
    let alice = UserEndpoint::new(
        &platform,
        UserEndpointSettings::new(
            home("sip:alice@contoso.test"),
            Credentials::new("alice", "alice-secret"),
        )
        .registration_expires(10),
    );
    let granted = rt
        .block_on(bounded("alice registers", alice.establish()))
        .unwrap_or_else(|e| panic!("alice: {e}\n{}", fed.log_tails(30)));
    assert_eq!(granted.expires, 10);
    let started = Instant::now();
    let changes = rt.block_on(async { record_states(alice.watch_state()) });

    // Refreshes at 80 % of 10 s: about 8 s and 16 s in. At 17.5 s the first binding (10 s)
    // would long be gone without them.
    std::thread::sleep(Duration::from_millis(17_500).saturating_sub(started.elapsed()));
    let b = bindings(&fed, "alice", "alice-secret");
    let at = started.elapsed();
    let left = binding_of(&b, alice.core().contact());
    assert!(
        left.is_some_and(|s| s > 0 && s <= 10),
        "alice's binding after {at:?}: {left:?} in\n{b}"
    );
    assert_eq!(alice.state(), EndpointState::Established);
    let granted_count = wire.registers_granted("alice");
    assert!(
        granted_count >= 3,
        "initial registration and two refreshes in {at:?}, saw {granted_count} 200s"
    );
    let changes = changes.lock().unwrap().clone();
    assert!(
        changes.is_empty(),
        "refreshing does not change the state: {changes:?}"
    );
    eprintln!(
        "after {at:?}: {granted_count} REGISTERs granted, {} sent; binding has {left:?} s left",
        wire.registers_sent("alice")
    );
    rt.block_on(bounded("terminate", alice.terminate()));
    rt.block_on(platform.shutdown());
}

#[test]
fn a_registration_too_brief_for_the_registrar_is_asked_again_with_its_min_expires() {
    let fed = federation();
    let rt = runtime();
    let wire = Wire::default();
    let platform = rt
        .block_on(CollaborationPlatform::start(
            client_settings(&fed).observer(wire.0.as_observer()),
        ))
        .unwrap();
    // The harness's registrar answers "brief" 423 with Min-Expires: 60 under 60 s.
    let brief = UserEndpoint::new(
        &platform,
        UserEndpointSettings::new(
            home("sip:brief@contoso.test"),
            Credentials::new("brief", "brief-secret"),
        )
        .registration_expires(30),
    );
    let granted = rt
        .block_on(bounded("brief registers", brief.establish()))
        .unwrap_or_else(|e| panic!("brief: {e}\n{}", fed.log_tails(30)));
    assert_eq!(granted.expires, 60);
    assert_eq!(brief.state(), EndpointState::Established);
    let b = bindings(&fed, "brief", "brief-secret");
    let left = binding_of(&b, brief.core().contact());
    assert!(left.is_some_and(|s| s > 30 && s <= 60), "{left:?} in\n{b}");
    // Sent: 30 s (423), 60 s (401), 60 s with credentials (200).
    assert!(wire.registers_sent("brief") >= 3);
    rt.block_on(bounded("terminate", brief.terminate()));
    rt.block_on(platform.shutdown());
}

#[test]
fn front_end_restart_reestablishes_within_five_seconds() {
    let mut fed = federation();
    let rt = runtime();
    // alice on the trusted platform (its contact is reachable: delivery proves the binding
    // is back); carol on a client platform (digest again, with a new nonce, after the
    // restart).
    let trusted = rt
        .block_on(CollaborationPlatform::start(trusted_settings(&fed)))
        .unwrap();
    let client = rt
        .block_on(CollaborationPlatform::start(client_settings(&fed)))
        .unwrap();
    let alice = UserEndpoint::new(
        &trusted,
        UserEndpointSettings::new(
            home("sip:alice@contoso.test"),
            Credentials::new("alice", "alice-secret"),
        )
        .registration_expires(300),
    );
    let carol = UserEndpoint::new(
        &client,
        UserEndpointSettings::new(
            home("sip:carol@contoso.test"),
            Credentials::new("carol", "carol-secret"),
        )
        .registration_expires(300),
    );
    let (mut seen, alice_states, carol_states) = rt.block_on(async {
        let pages = alice.core().pages();
        bounded("alice registers", alice.establish())
            .await
            .unwrap_or_else(|e| panic!("alice: {e}"));
        bounded("carol registers", carol.establish())
            .await
            .unwrap_or_else(|e| panic!("carol: {e}"));
        (
            answer_pages(pages),
            record_states(alice.watch_state()),
            record_states(carol.watch_state()),
        )
    });
    let mut alice_rx = alice.watch_state();
    let mut carol_rx = carol.watch_state();

    let stopping = Instant::now();
    fed.front_end_mut(Deployment::Contoso).stop();
    let stopped = Instant::now();
    eprintln!("stop() took {:?}", stopped - stopping);
    rt.block_on(async {
        for (who, rx) in [("alice", &mut alice_rx), ("carol", &mut carol_rx)] {
            let c = reach(
                rx,
                EndpointState::Reestablishing,
                Duration::from_secs(5),
                &format!("{who} notices the loss"),
            )
            .await;
            assert_eq!(c.reason, "connection to the front end lost", "{who}");
        }
    });
    eprintln!(
        "both Reestablishing {:?} after stop() returned",
        stopped.elapsed()
    );

    // Down long enough for the endpoints' retry interval to reach its maximum.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(alice.state(), EndpointState::Reestablishing);
    assert_eq!(carol.state(), EndpointState::Reestablishing);

    let restarting = Instant::now();
    fed.front_end_mut(Deployment::Contoso)
        .restart(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("restarting contoso: {e}"));
    let back = Instant::now();
    eprintln!("restart() took {:?}", back - restarting);
    let delays = rt.block_on(async {
        let mut delays = Vec::new();
        for (who, rx) in [("alice", &mut alice_rx), ("carol", &mut carol_rx)] {
            let c = reach(
                rx,
                EndpointState::Established,
                Duration::from_secs(5).saturating_sub(back.elapsed()),
                &format!("{who} registered again within 5 s of the front end's return"),
            )
            .await;
            assert!(
                c.reason.starts_with("registered again"),
                "{who}: {}",
                c.reason
            );
            delays.push((who, back.elapsed()));
        }
        delays
    });
    // The instant each became Established, from the recorded changes (the recorder is a
    // task of its own: let it catch up with what the test already saw).
    for (who, states) in [("alice", &alice_states), ("carol", &carol_states)] {
        let states = rt.block_on(bounded_by(
            Duration::from_secs(1),
            &format!("{who}'s recorder sees Established"),
            async {
                loop {
                    let now = states.lock().unwrap().clone();
                    if now
                        .last()
                        .is_some_and(|(_, c)| c.state == EndpointState::Established)
                    {
                        break now;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        ));
        let kinds: Vec<EndpointState> = states.iter().map(|(_, c)| c.state).collect();
        assert_eq!(
            kinds.first(),
            Some(&EndpointState::Reestablishing),
            "{who}: {states:?}"
        );
        assert_eq!(
            kinds.last(),
            Some(&EndpointState::Established),
            "{who}: {states:?}"
        );
        assert!(
            !kinds.contains(&EndpointState::Terminated) && !kinds.contains(&EndpointState::Idle),
            "{who}: {states:?}"
        );
        let (at, _) = states.last().unwrap();
        let delay = at.saturating_duration_since(back);
        eprintln!("{who}: Established again {delay:?} after restart() returned");
        assert!(delay < Duration::from_secs(5), "{who}: {delay:?}");
    }
    eprintln!("seen Established by the test: {delays:?}");

    // The restarted front end lost its location table: delivery to alice and carol's binding
    // show both registered again.
    let uac = sipp_messages(&fed, "alice-after-restart", "alice", 1);
    assert!(uac.succeeded(), "{}\n{}", uac.report(), fed.log_tails(30));
    rt.block_on(async {
        let (caller, body) = bounded("page to alice delivered", seen.recv())
            .await
            .unwrap();
        assert_eq!(caller.uri(), "sip:alice@contoso.test");
        assert!(body.contains("Hello from SIPp"), "{body}");
    });
    let b = bindings(&fed, "carol", "carol-secret");
    assert!(
        binding_of(&b, carol.core().contact()).is_some_and(|s| s > 0),
        "carol's binding after the restart:\n{b}"
    );

    rt.block_on(async {
        bounded("terminate alice", alice.terminate()).await;
        bounded("terminate carol", carol.terminate()).await;
        trusted.shutdown().await;
        client.shutdown().await;
    });
}

/// The SDP answer of the application to an IM offer.
const IM_ANSWER: &str = "v=0\r\n\
o=- 1 1 IN IP4 127.0.0.1\r\n\
s=session\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=message 5061 sip sip:bot@contoso.test\r\n\
a=accept-types:text/plain\r\n";

/// The IM offer of the second caller.
const IM_OFFER: &str = "v=0\r\n\
o=- 2 2 IN IP4 127.0.0.1\r\n\
s=session\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=message 5060 sip null\r\n\
a=accept-types:text/plain\r\n";

/// carol, connected to contoso over TCP, offers `to_user` an IM session; returns the final
/// response (after ACKing a failure, RFC 3261 §17.1.1.3).
fn im_invite_over_tcp(fed: &Federation, to_user: &str) -> SipMessage {
    let mut c = SipTcpClient::connect(fed.contoso().tcp_addr(), WAIT).expect("connect");
    let uri = format!("sip:{to_user}@contoso.test");
    let contact = format!("<{}>", c.contact_uri("carol"));
    let invite = c
        .request(Method::Invite, &uri, "sip:carol@contoso.test", &uri)
        .header(HeaderName::Contact, contact)
        .body("application/sdp", IM_OFFER)
        .build()
        .unwrap();
    let answer = c.transaction(&invite, WAIT).expect("an answer");
    if answer.status().is_some_and(|s| s >= 300) {
        let h = |n: HeaderName, m: &SipMessage| {
            String::from_utf8_lossy(m.header(n).unwrap_or_default()).into_owned()
        };
        let cseq = h(HeaderName::CSeq, &invite).replace("INVITE", "ACK");
        let ack = SipMessage::request(Method::Ack, Bytes::from(uri.clone()))
            .header(HeaderName::Via, h(HeaderName::Via, &invite))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, h(HeaderName::From, &invite))
            .header(HeaderName::To, h(HeaderName::To, &answer))
            .header(HeaderName::CallId, h(HeaderName::CallId, &invite))
            .header(HeaderName::CSeq, cseq)
            .build()
            .unwrap();
        c.send(&ack).expect("ACK sent");
    }
    answer
}

#[test]
fn drain_declines_new_conversations_while_the_current_one_continues() {
    let fed = federation();
    let rt = runtime();
    let wire = Wire::default();
    let platform = rt
        .block_on(CollaborationPlatform::start(
            trusted_settings(&fed).observer(wire.0.as_observer()),
        ))
        .unwrap();
    let bot = ApplicationEndpoint::new(
        &platform,
        ApplicationEndpointSettings::new(home("sip:bot@contoso.test"))
            .use_registration(true)
            .drain_retry_after(7),
    );
    let mut im = rt.block_on(async {
        let im = bot.core().incoming(Modality::InstantMessaging);
        bounded("establish", bot.establish())
            .await
            .unwrap_or_else(|e| panic!("bot: {e}"));
        im
    });

    // alice (SIPp) starts an IM session with bot, holds it 4 s, then hangs up.
    let uac = fed
        .sipp("alice-im", scenarios::UAC_IM_INVITE_BYE)
        .remote(fed.contoso().tcp_addr())
        .key("to_user", "bot")
        .key("to_domain", "contoso.test")
        .key("from_user", "alice")
        .key("from_domain", "contoso.test")
        .calls(1)
        .arg("-d")
        .arg("4000")
        // A TCP UAC listens on its port too: waiting for that, and starting again on
        // another port when the one chosen was taken meanwhile.
        .spawn_listening(WAIT)
        .expect("SIPp UAC");

    let mut route = rt.block_on(async {
        let mut invite = bounded("INVITE on the IM stream", im.recv())
            .await
            .expect("stream open");
        assert_eq!(invite.request().method(), Some(&Method::Invite));
        assert_eq!(
            Modality::of_offer(invite.body()),
            Some(Modality::InstantMessaging)
        );
        assert_eq!(invite.caller().uri(), "sip:alice@contoso.test");
        let call_id = String::from_utf8_lossy(invite.request().call_id().unwrap()).into_owned();
        let route = bot.core().route_dialog(&call_id, invite.local_tag());
        let contact = format!("<{}>", bot.core().contact());
        invite
            .respond(
                200,
                "OK",
                &[("Contact", &contact)],
                Some(("application/sdp", Bytes::from_static(IM_ANSWER.as_bytes()))),
            )
            .await
            .expect("200 sent");
        route
    });
    assert_eq!(bot.core().live_dialogs(), 1);

    bot.drain();
    assert_eq!(bot.state(), EndpointState::Draining);
    assert!(bot.core().is_draining());

    // A second caller is declined: the endpoint answers 503 with Retry-After (seen on the
    // platform's wire). A proxy does not forward a 503 upstream: contoso generates a 500
    // instead (RFC 3261 §16.7 step 6), keeping the reason phrase but, being a new response,
    // not the Retry-After.
    let second = im_invite_over_tcp(&fed, "bot");
    let declined = wire.responses_sent("SIP/2.0 503");
    assert_eq!(declined.len(), 1, "{declined:?}");
    assert!(
        header_of(&declined[0], "CSeq").is_some_and(|c| c.ends_with("INVITE")),
        "{}",
        declined[0]
    );
    assert_eq!(
        header_of(&declined[0], "Retry-After"),
        Some("7"),
        "{}",
        declined[0]
    );
    assert_eq!(status_line(&second), "500 Service Unavailable", "{second}");
    assert!(
        im.try_recv().is_err(),
        "the declined INVITE reached no handler"
    );

    // The first call goes on: its BYE (not yet sent when the second caller was declined)
    // arrives on the dialog route and is answered.
    rt.block_on(async {
        assert!(
            tokio::time::timeout(Duration::ZERO, route.recv())
                .await
                .is_err(),
            "the first call was still up while the second was declined"
        );
        let mut bye = bounded("BYE on the dialog route", route.recv())
            .await
            .expect("route open");
        assert_eq!(bye.request().method(), Some(&Method::Bye));
        bye.respond(200, "OK", &[], None).await.expect("200 to BYE");
    });
    drop(route);
    assert_eq!(bot.core().live_dialogs(), 0);
    let out = uac.wait().expect("SIPp finished");
    assert!(out.succeeded(), "{}\n{}", out.report(), fed.log_tails(30));
    assert_eq!(bot.state(), EndpointState::Draining);

    rt.block_on(bounded("terminate", bot.terminate()));
    rt.block_on(platform.shutdown());
}
