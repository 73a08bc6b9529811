//! The endpoint lifecycle against a registrar played by the test over TCP (it answers each
//! REGISTER as the test says, or holds it), and a caller connecting to the endpoint's
//! platform over TCP: what a front end that refuses, stalls or fails does to an endpoint,
//! and what `establish`, `terminate` and dropping an endpoint do while that goes on.

use std::sync::Arc;
use std::time::Duration;

use application_endpoint::{
    ApplicationEndpoint, ApplicationEndpointSettings, Endpoint, EndpointError, EndpointState,
    Modality, StateChange,
};
use collaboration_platform::loopback::LoopbackPki;
use collaboration_platform::{
    Address, CollaborationPlatform, Listener, ListenerKind, OutboundProxy, RequestError,
    ServerPlatformSettings, Topology,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Bound of every single wait.
const WAIT: Duration = Duration::from_secs(10);

/// The value of header `name` in a message's text (first occurrence, any case).
fn header<'m>(message: &'m str, name: &str) -> &'m str {
    message
        .split("\r\n")
        .skip(1)
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("{name} in {message}"))
}

/// A SIP peer on one TCP stream: reads whole messages (Content-Length honoured), writes
/// text.
struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    /// The next message; `None` when the stream closed.
    async fn read(&mut self) -> Option<String> {
        loop {
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                let len: usize = head
                    .split("\r\n")
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        let n = n.trim();
                        (n.eq_ignore_ascii_case("Content-Length") || n == "l")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let m = String::from_utf8_lossy(&self.buf[..end + 4 + len]).into_owned();
                    self.buf.drain(..end + 4 + len);
                    return Some(m);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a message within the wait")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn write(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.unwrap();
    }
}

/// The front end's registrar, played over the endpoint platform's outbound TCP connection.
struct Registrar {
    listener: TcpListener,
    peer: Option<Peer>,
}

impl Registrar {
    async fn bind() -> Registrar {
        Registrar {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            peer: None,
        }
    }

    /// The next REGISTER (accepting the platform's connection first if needed).
    async fn register(&mut self) -> String {
        loop {
            if self.peer.is_none() {
                let (stream, _) = tokio::time::timeout(WAIT, self.listener.accept())
                    .await
                    .expect("the platform connects within the wait")
                    .unwrap();
                self.peer = Some(Peer {
                    stream,
                    buf: Vec::new(),
                });
            }
            let peer = self.peer.as_mut().unwrap();
            match peer.read().await {
                Some(m) if m.starts_with("REGISTER ") => return m,
                Some(m) => panic!("expected a REGISTER, got {m}"),
                None => self.peer = None,
            }
        }
    }

    /// Answers `request` with `status`; a 2xx grants the binding for `expires` seconds.
    async fn answer(&mut self, request: &str, status: &str, expires: u32, extra: &str) {
        self.answer_binding(request, status, expires, "", extra)
            .await;
    }

    /// As [`answer`](Self::answer), with `params` added to the binding a 2xx echoes.
    async fn answer_binding(
        &mut self,
        request: &str,
        status: &str,
        expires: u32,
        params: &str,
        extra: &str,
    ) {
        let contact = if status.starts_with('2') {
            format!(
                "Contact: {};expires={expires}{params}\r\n",
                header(request, "Contact")
            )
        } else {
            String::new()
        };
        let r = format!(
            "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=registrar\r\n\
             Call-ID: {}\r\nCSeq: {}\r\n{contact}{extra}Content-Length: 0\r\n\r\n",
            header(request, "Via"),
            header(request, "From"),
            header(request, "To"),
            header(request, "Call-ID"),
            header(request, "CSeq"),
        );
        self.peer.as_mut().expect("connected").write(&r).await;
    }

    /// Reads the next REGISTER and grants it for `expires` seconds; returns it.
    async fn grant(&mut self, expires: u32) -> String {
        let r = self.register().await;
        self.answer(&r, "200 OK", expires, "").await;
        r
    }
}

/// A platform whose outbound proxy is `registrar`, with a TCP listener that takes
/// requests from anyone (the test's caller).
async fn platform(registrar: &Registrar) -> CollaborationPlatform {
    platform_with(registrar, Topology::new(["contoso.test"])).await
}

/// As [`platform`], with `topology`.
async fn platform_with(registrar: &Registrar, topology: Topology) -> CollaborationPlatform {
    let pki = LoopbackPki::new().expect("CA");
    let settings = ServerPlatformSettings::new(
        "ucma-rs lifecycle test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp(registrar.listener.local_addr().unwrap()),
    )
    .listen(Listener::tcp("127.0.0.1:0".parse().unwrap()).allow_untrusted_peers())
    .topology(topology);
    CollaborationPlatform::start(settings).await.unwrap()
}

/// alice@contoso.test as a user endpoint (password `secret`) on `p`.
fn alice_on(p: &CollaborationPlatform) -> application_endpoint::UserEndpoint {
    use application_endpoint::{Credentials, UserEndpoint, UserEndpointSettings};
    let owner = Address::assume_on_premises("sip:alice@contoso.test").unwrap();
    UserEndpoint::new(
        p,
        UserEndpointSettings::new(owner, Credentials::new("alice", "secret")),
    )
}

fn registering_bot(p: &CollaborationPlatform) -> ApplicationEndpoint {
    let owner = Address::assume_on_premises("sip:bot@contoso.test").unwrap();
    ApplicationEndpoint::new(
        p,
        ApplicationEndpointSettings::new(owner)
            .use_registration(true)
            .drain_retry_after(42),
    )
}

/// Waits (bounded) until the watched state is `state`.
async fn reach(rx: &mut watch::Receiver<StateChange>, state: EndpointState) -> StateChange {
    let reached = tokio::time::timeout(WAIT, rx.wait_for(|c| c.state == state))
        .await
        .map(|r| r.map(|c| c.clone()));
    match reached {
        Ok(r) => r.expect("the endpoint is alive"),
        Err(_) => panic!("{state:?} within the wait (now {:?})", *rx.borrow()),
    }
}

/// Establishes `bot`, the registrar granting `expires` seconds.
async fn establish(bot: &ApplicationEndpoint, registrar: &mut Registrar, expires: u32) {
    let (done, granted) = tokio::join!(
        tokio::time::timeout(WAIT, bot.establish()),
        registrar.grant(expires)
    );
    done.expect("established within the wait")
        .unwrap_or_else(|e| panic!("established: {e}; REGISTER was {granted}"));
}

/// An INVITE to `contact` from a caller connected to the platform's TCP listener, with
/// `sdp` as its body (none when empty); returns the final response.
async fn invite(p: &CollaborationPlatform, contact: &str, sdp: &str) -> String {
    let addr = p.listen_addr(ListenerKind::Tcp).expect("a TCP listener");
    let stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let mut caller = Peer {
        stream,
        buf: Vec::new(),
    };
    let body = if sdp.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_string()
    };
    let request = format!(
        "INVITE {contact} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-lifecycle-{}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carol@contoso.test>;tag=carol\r\n\
         To: <sip:bot@contoso.test>\r\n\
         Call-ID: lifecycle-{}@test\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:carol@{local};transport=tcp>\r\n\
         {body}Content-Length: {}\r\n\r\n{sdp}",
        local.port(),
        local.port(),
        sdp.len()
    );
    caller.write(&request).await;
    loop {
        let m = caller.read().await.expect("an answer before the close");
        let code: u16 = m[8..11].parse().unwrap();
        if code >= 200 {
            return m;
        }
    }
}

/// An SDP offer of an IM session as Lync sends it.
const IM_OFFER: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=session\r\nc=IN IP4 127.0.0.1\r\n\
                        t=0 0\r\nm=message 5060 sip null\r\na=accept-types:text/plain\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_dropped_without_terminate_is_freed() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = registering_bot(&p);
    let mut state = bot.watch_state();
    establish(&bot, &mut registrar, 600).await;
    state.mark_unchanged();
    drop(bot);
    // The state's sender lives in the endpoint's core: the watch closes once nothing
    // (no refresh task, no router) keeps the core alive.
    let closed = tokio::time::timeout(WAIT, async { while state.changed().await.is_ok() {} }).await;
    assert!(
        closed.is_ok(),
        "the dropped endpoint is still alive ({:?})",
        state.borrow().state
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_refused_404_terminates_the_endpoint_instead_of_retrying() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = registering_bot(&p);
    let mut state = bot.watch_state();
    // Refreshed after a second.
    establish(&bot, &mut registrar, 1).await;
    let refresh = registrar.register().await;
    registrar.answer(&refresh, "404 Not Found", 0, "").await;
    let end = reach(&mut state, EndpointState::Terminated).await;
    assert!(end.reason.contains("404"), "{end:?}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_endpoint_stays_draining_through_a_failed_refresh() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = registering_bot(&p);
    establish(&bot, &mut registrar, 1).await;
    bot.drain();
    assert_eq!(bot.state(), EndpointState::Draining);
    let refresh = registrar.register().await;
    registrar
        .answer(&refresh, "500 Server Internal Error", 0, "")
        .await;
    // The retry is granted; the refresh after it shows that the grant was taken in.
    registrar.grant(1).await;
    registrar.grant(1).await;
    assert_eq!(
        bot.state(),
        EndpointState::Draining,
        "{:?}",
        *bot.watch_state().borrow()
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_while_establishing_wins_and_the_late_binding_is_removed() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = Arc::new(registering_bot(&p));
    let mut state = bot.watch_state();
    let establishing = tokio::spawn({
        let bot = bot.clone();
        async move { bot.establish().await }
    });
    // The first REGISTER is held while terminate() runs.
    let first = registrar.register().await;
    tokio::time::timeout(WAIT, bot.terminate())
        .await
        .expect("terminated within the wait");
    reach(&mut state, EndpointState::Terminated).await;
    registrar.answer(&first, "200 OK", 600, "").await;
    // The binding granted after terminate() is removed, not refreshed.
    let removal = registrar.register().await;
    assert_eq!(header(&removal, "Expires"), "0", "{removal}");
    registrar.answer(&removal, "200 OK", 0, "").await;
    let outcome = tokio::time::timeout(WAIT, establishing)
        .await
        .expect("establish() ends within the wait")
        .unwrap();
    assert!(
        outcome.is_err(),
        "establish() after terminate(): {outcome:?}"
    );
    assert_eq!(bot.state(), EndpointState::Terminated);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_terminate_returns_when_the_first_has_finished() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = Arc::new(registering_bot(&p));
    establish(&bot, &mut registrar, 600).await;
    let terminate = |bot: &Arc<ApplicationEndpoint>| {
        let bot = bot.clone();
        tokio::spawn(async move { bot.terminate().await })
    };
    let first = terminate(&bot);
    // The unregistration is held: the first terminate() is under way.
    let removal = registrar.register().await;
    assert_eq!(header(&removal, "Expires"), "0", "{removal}");
    let mut second = terminate(&bot);
    // A bounded look that it does not end early (it cannot end before the answer).
    let early = tokio::time::timeout(Duration::from_millis(500), &mut second).await;
    assert!(
        early.is_err(),
        "the second terminate() returned before the endpoint was terminated: {:?}",
        *bot.watch_state().borrow()
    );
    registrar.answer(&removal, "200 OK", 0, "").await;
    for t in [first, second] {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("terminate() ends within the wait")
            .unwrap();
    }
    let end = bot.watch_state().borrow().clone();
    assert_eq!(end.state, EndpointState::Terminated);
    assert!(end.reason.contains("unregistered"), "{end:?}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_lists_every_change_of_a_life_in_order() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = registering_bot(&p);
    let mut changes = bot.state_changes();
    let latest = bot.watch_state();
    establish(&bot, &mut registrar, 600).await;
    let terminate = bot.terminate();
    tokio::pin!(terminate);
    let removal = tokio::select! {
        () = &mut terminate => panic!("terminated without an answer"),
        removal = registrar.register() => removal,
    };
    assert_eq!(header(&removal, "Expires"), "0", "{removal}");
    registrar.answer(&removal, "200 OK", 0, "").await;
    tokio::time::timeout(WAIT, terminate)
        .await
        .expect("terminated within the wait");
    // The watch holds only the last of them.
    assert_eq!(latest.borrow().state, EndpointState::Terminated);
    let mut seen = Vec::new();
    while let Ok(c) = changes.try_recv() {
        assert!(!c.reason.is_empty(), "{c:?}");
        seen.push(c.state);
    }
    assert_eq!(
        seen,
        [
            EndpointState::Establishing,
            EndpointState::Established,
            EndpointState::Terminating,
            EndpointState::Terminated
        ]
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_after_a_cancelled_terminate_still_ends() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = registering_bot(&p);
    establish(&bot, &mut registrar, 600).await;
    // Cancelled while the unregistration is out.
    let removal = tokio::select! {
        () = bot.terminate() => panic!("terminated without an answer"),
        removal = registrar.register() => removal,
    };
    assert_eq!(header(&removal, "Expires"), "0", "{removal}");
    // Answered late, for nobody: the platform's transaction ends.
    registrar.answer(&removal, "200 OK", 0, "").await;
    tokio::time::timeout(WAIT, bot.terminate())
        .await
        .expect("the second terminate() ends within the wait");
    assert_eq!(bot.state(), EndpointState::Terminated);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_calls_are_declined_503_with_retry_after_while_terminating() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = Arc::new(registering_bot(&p));
    let mut calls = bot.core().incoming(Modality::InstantMessaging);
    establish(&bot, &mut registrar, 600).await;
    let contact = bot.core().contact().to_string();
    let terminating = tokio::spawn({
        let bot = bot.clone();
        async move { bot.terminate().await }
    });
    // The unregistration is held: the endpoint is Terminating, still routed.
    let removal = registrar.register().await;
    assert_eq!(bot.state(), EndpointState::Terminating);
    let answer = tokio::select! {
        a = invite(&p, &contact, IM_OFFER) => a,
        Some(mut call) = calls.recv() => {
            let _ = call.respond(500, "Test Over", &[], None).await;
            panic!("a new call reached the handler while terminating");
        }
    };
    assert!(answer.starts_with("SIP/2.0 503 "), "{answer}");
    assert_eq!(header(&answer, "Retry-After"), "42", "{answer}");
    registrar.answer(&removal, "200 OK", 0, "").await;
    tokio::time::timeout(WAIT, terminating)
        .await
        .expect("terminated within the wait")
        .unwrap();
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_refused_503_with_retry_after_is_not_retried_sooner() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = registering_bot(&p);
    establish(&bot, &mut registrar, 1).await;
    let refresh = registrar.register().await;
    registrar
        .answer(&refresh, "503 Service Unavailable", 0, "Retry-After: 2\r\n")
        .await;
    let refused = std::time::Instant::now();
    registrar.grant(600).await;
    let waited = refused.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "asked again after {waited:?}, not the 2 s the registrar said"
    );
    tokio::join!(bot.terminate(), registrar.grant(0));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_dropped_without_terminate_leave_no_task_behind() {
    let registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();
    let mut bots = Vec::new();
    for i in 0..16 {
        let owner = Address::assume_on_premises(&format!("sip:bot{i}@contoso.test")).unwrap();
        let bot = ApplicationEndpoint::new(&p, ApplicationEndpointSettings::new(owner));
        bot.establish().await.expect("established");
        bots.push(bot);
    }
    assert!(tasks() >= before + 16, "a router per endpoint");
    drop(bots);
    // No event says that a task ended: the runtime's count is looked at, bounded.
    let deadline = tokio::time::Instant::now() + WAIT;
    while tasks() > before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} tasks left behind by dropped endpoints",
            tasks() - before
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.shutdown().await;
}

/// A dialog handler that keeps its own route, as a call does.
struct Call {
    route: std::sync::Mutex<Option<application_endpoint::DialogGuard>>,
}

#[async_trait::async_trait]
impl application_endpoint::DialogHandler for Call {
    async fn handle(self: Arc<Self>, _request: collaboration_platform::IncomingRequest) {}
}

#[test]
fn terminate_with_a_call_holding_its_own_route_does_not_deadlock() {
    // A deadlock blocks a thread for good: the endpoint runs on a thread of its own, and
    // this one only waits for word from it.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let registrar = Registrar::bind().await;
            let p = platform(&registrar).await;
            let owner = Address::assume_on_premises("sip:bot@contoso.test").unwrap();
            let bot = ApplicationEndpoint::new(&p, ApplicationEndpointSettings::new(owner));
            bot.establish().await.expect("established");
            let call = Arc::new(Call {
                route: std::sync::Mutex::new(None),
            });
            let guard = bot
                .core()
                .route_dialog_to("call-1@test", "tag-1", call.clone());
            *call.route.lock().unwrap() = Some(guard);
            // The application let go of the call: the route holds the last reference.
            drop(call);
            bot.terminate().await;
            let _ = done.send(bot.state());
            p.shutdown().await;
        });
    });
    let state = finished
        .recv_timeout(WAIT)
        .expect("terminate() ended within the wait");
    assert_eq!(state, EndpointState::Terminated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_survive_a_failed_establish_and_receive_after_the_next() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = registering_bot(&p);
    let mut calls = bot.core().incoming(Modality::InstantMessaging);
    let (failed, ()) = tokio::join!(bot.establish(), async {
        let r = registrar.register().await;
        registrar
            .answer(&r, "500 Server Internal Error", 0, "")
            .await;
    });
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(bot.state(), EndpointState::Idle);
    // "Can be established again": and it receives on the streams it had.
    establish(&bot, &mut registrar, 600).await;
    let contact = bot.core().contact().to_string();
    let (answer, ()) = tokio::join!(invite(&p, &contact, IM_OFFER), async {
        let mut call = tokio::time::timeout(WAIT, calls.recv())
            .await
            .expect("the INVITE within the wait")
            .expect("the IM stream registered before the first establish() is open");
        call.respond(486, "Busy Here", &[], None).await.unwrap();
    });
    assert!(answer.starts_with("SIP/2.0 486 "), "{answer}");
    tokio::join!(bot.terminate(), registrar.grant(0));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn establish_after_a_cancelled_establish_goes_ahead() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = registering_bot(&p);
    // Cancelled while the REGISTER is out (as a timeout around establish() would).
    let held = tokio::select! {
        r = bot.establish() => panic!("established without an answer: {r:?}"),
        held = registrar.register() => held,
    };
    assert_eq!(bot.state(), EndpointState::Idle);
    // Answered late, for nobody.
    registrar.answer(&held, "200 OK", 600, "").await;
    establish(&bot, &mut registrar, 600).await;
    assert_eq!(bot.state(), EndpointState::Established);
    tokio::join!(bot.terminate(), registrar.grant(0));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_terminated_when_their_platform_shuts_down() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let registered = registering_bot(&p);
    establish(&registered, &mut registrar, 1).await;
    let owner = Address::assume_on_premises("sip:helper@contoso.test").unwrap();
    let routed = ApplicationEndpoint::new(&p, ApplicationEndpointSettings::new(owner));
    routed.establish().await.expect("established");
    let mut states = [registered.watch_state(), routed.watch_state()];
    // A shutdown ends the endpoints as terminate() does: the registered one removes its
    // binding (REGISTER with Expires 0) before the platform stops.
    let registrar_side = async {
        let r = registrar.register().await;
        registrar.answer(&r, "200 OK", 0, "").await;
        r
    };
    let (report, unregister) =
        tokio::time::timeout(WAIT, async { tokio::join!(p.shutdown(), registrar_side) })
            .await
            .expect("the shutdown and the unregistration within the wait");
    assert!(
        unregister
            .lines()
            .any(|l| l.eq_ignore_ascii_case("expires: 0")),
        "not an unregistration: {unregister}"
    );
    assert_eq!(report.cancelled, 0, "{report:?}");
    for s in &mut states {
        let end = reach(s, EndpointState::Terminated).await;
        assert!(end.reason.contains("shut down"), "{end:?}");
    }
    let end = registered.watch_state().borrow().clone();
    assert!(end.reason.ends_with("; unregistered"), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_endpoint_established_twice_answers_ok_as_an_application_endpoint_does() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let alice = alice_on(&p);
    let (first, _) = tokio::join!(alice.establish(), registrar.grant(300));
    let first = first.expect("established");
    let again = alice.establish().await;
    assert_eq!(again.ok(), Some(first));
    tokio::join!(alice.terminate(), registrar.grant(0));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refresh_updates_what_the_registrar_granted() {
    use application_endpoint::{Credentials, Granted, UserEndpoint, UserEndpointSettings};
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let owner = Address::assume_on_premises("sip:alice@contoso.test").unwrap();
    let alice = UserEndpoint::new(
        &p,
        UserEndpointSettings::new(owner, Credentials::new("alice", "secret"))
            .instance_id("urn:uuid:00000000-0000-0000-0000-000000000001"),
    );
    let first_gruu = ";pub-gruu=\"sip:alice@contoso.test;gr=one\"";
    let script = async {
        let r = registrar.register().await;
        registrar
            .answer_binding(&r, "200 OK", 1, first_gruu, "")
            .await;
    };
    let (first, ()) = tokio::join!(alice.establish(), script);
    let first = first.expect("established");
    assert_eq!(
        first,
        Granted {
            expires: 1,
            gruu: Some("sip:alice@contoso.test;gr=one".into())
        }
    );

    // The refresh (after about a second) is granted another lifetime and GRUU: that is
    // what the endpoint reports from then on, not the first grant.
    let refresh = registrar.register().await;
    let second_gruu = ";pub-gruu=\"sip:alice@contoso.test;gr=two\"";
    registrar
        .answer_binding(&refresh, "200 OK", 600, second_gruu, "")
        .await;
    let want = Granted {
        expires: 600,
        gruu: Some("sip:alice@contoso.test;gr=two".into()),
    };
    let reported = tokio::time::timeout(WAIT, async {
        loop {
            let now = alice.establish().await.expect("still established");
            if now != first {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("still reporting the first grant {first:?}"));
    assert_eq!(reported, want);
    assert_eq!(alice.gruu().await, want.gruu);
    tokio::join!(alice.terminate(), registrar.grant(0));
    p.shutdown().await;
}

/// The front end drops the connection right after granting the first REGISTER (its 200
/// and the close arrive together): the endpoint must register again on a new connection.
/// Before, the task that watches for lost connections subscribed only once it first ran,
/// after the loss, and the endpoint stayed Established on a dead flow until its next
/// refresh. Then, a loss seen before `establish()` returned was re-registered without the
/// state ever saying Reestablishing (the endpoint was still Establishing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_right_after_the_first_grant_is_registered_again() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = registering_bot(&p);
    let mut state = bot.watch_state();
    let (done, ()) = tokio::join!(tokio::time::timeout(WAIT, bot.establish()), async {
        let r = registrar.register().await;
        registrar.answer(&r, "200 OK", 300, "").await;
        // Closed with the 200 still in flight.
        registrar.peer = None;
    });
    done.expect("established within the wait")
        .expect("the first REGISTER was granted");
    let again = reach(&mut state, EndpointState::Reestablishing).await;
    assert_eq!(again.reason, "connection to the front end lost");
    // The REGISTER again, on a new connection, and the endpoint is back.
    registrar.grant(300).await;
    reach(&mut state, EndpointState::Established).await;
    p.shutdown().await;
}

// ------------------------------------------------- endpoints ended by other means

impl Registrar {
    /// The next message of any kind on the platform's connection.
    async fn any(&mut self) -> Option<String> {
        self.peer.as_mut()?.read().await
    }

    /// Answers `request` with `status` and `extra` header lines, nothing else added.
    async fn answer_plain(&mut self, request: &str, status: &str, extra: &str) {
        let r = format!(
            "SIP/2.0 {status}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=proxy\r\n\
             Call-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
            header(request, "Via"),
            header(request, "From"),
            header(request, "To"),
            header(request, "Call-ID"),
            header(request, "CSeq"),
        );
        self.peer.as_mut().expect("connected").write(&r).await;
    }

    /// Answers a PUBLISH 200 with an entity tag and `Expires: expires`.
    async fn answer_publish(&mut self, request: &str, etag: &str, expires: u32) {
        let r = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=pa\r\n\
             Call-ID: {}\r\nCSeq: {}\r\nSIP-ETag: {etag}\r\nExpires: {expires}\r\n\
             Content-Length: 0\r\n\r\n",
            header(request, "Via"),
            header(request, "From"),
            header(request, "To"),
            header(request, "Call-ID"),
            header(request, "CSeq"),
        );
        self.peer.as_mut().expect("connected").write(&r).await;
    }
}

/// A registration refresh refused for good (404) terminates the endpoint from the refresh
/// task. The owner's presence is then removed (one PUBLISH with Expires 0), as terminate()
/// removes it. Before, it went on being refreshed for as long as the endpoint lived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_removed_when_a_refused_refresh_terminates_the_endpoint() {
    use application_endpoint::pidf::Availability;
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = registering_bot(&p);
    let mut state = bot.watch_state();
    // Registration refreshed after ~1.5 s.
    establish(&bot, &mut registrar, 3).await;
    let presence = bot.local_owner_presence().clone();
    let publishing = tokio::spawn(async move {
        presence
            .publish_availability(Availability::Online, None)
            .await
    });
    let mut terminated_at = None;
    let mut published_after_termination = Vec::new();
    loop {
        if let Some(t) = terminated_at {
            if std::time::Instant::now() > t + Duration::from_secs(4) {
                break;
            }
        }
        let m = match tokio::time::timeout(Duration::from_millis(500), registrar.any()).await {
            Ok(Some(m)) => m,
            Ok(None) => panic!("connection closed"),
            Err(_) => {
                if terminated_at.is_none() && bot.state() == EndpointState::Terminated {
                    terminated_at = Some(std::time::Instant::now());
                }
                continue;
            }
        };
        if m.starts_with("REGISTER ") {
            // The refresh: the registrar no longer knows the address of record.
            registrar.answer(&m, "404 Not Found", 0, "").await;
            let end = reach(&mut state, EndpointState::Terminated).await;
            assert!(end.reason.contains("404"), "{end:?}");
            terminated_at = Some(std::time::Instant::now());
        } else if m.starts_with("PUBLISH ") {
            if terminated_at.is_some() {
                published_after_termination.push((
                    header(&m, "Expires").to_string(),
                    header(&m, "SIP-If-Match").to_string(),
                ));
            }
            // Granted for 2 s: refreshed after 1 s.
            registrar.answer_publish(&m, "e1", 2).await;
        } else {
            panic!("unexpected {m}");
        }
    }
    publishing.await.unwrap().expect("published");
    assert_eq!(bot.state(), EndpointState::Terminated);
    tokio::time::timeout(WAIT, bot.terminate())
        .await
        .expect("returns");
    assert_eq!(
        published_after_termination,
        [("0".to_string(), "e1".to_string())],
        "after the endpoint ended: one removal of the publication, no refresh"
    );
    p.shutdown().await;
}

/// A terminate() while establish() waits inside attach() (on the platform's command queue;
/// here the task's coop budget is spent, as under load) finds no route to remove yet. The
/// establish() must then fail without routing or registering the terminated endpoint.
/// Before, it was left routed (INVITEs answered 503 for ever) and a REGISTER went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminate_while_establish_attaches_leaves_the_endpoint_unrouted() {
    use std::future::Future;
    use std::task::Poll;
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = registering_bot(&p);
    let contact = bot.core().contact().to_string();
    let mut establishing = std::pin::pin!(bot.establish());
    std::future::poll_fn(|cx| {
        let mut spent = false;
        for _ in 0..100_000 {
            let mut f = std::pin::pin!(tokio::task::consume_budget());
            if f.as_mut().poll(cx).is_pending() {
                spent = true;
                break;
            }
        }
        assert!(spent, "coop budget not enforced here");
        assert!(establishing.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
    assert_eq!(bot.state(), EndpointState::Establishing);
    tokio::time::timeout(WAIT, bot.terminate())
        .await
        .expect("terminated within the wait");
    assert_eq!(bot.state(), EndpointState::Terminated);
    let mut registers_after_terminated = Vec::new();
    let (outcome, ()) = tokio::join!(tokio::time::timeout(WAIT, establishing), async {
        // Bounded look for REGISTERs sent after Terminated.
        while let Ok(r) =
            tokio::time::timeout(Duration::from_millis(1500), registrar.register()).await
        {
            registers_after_terminated.push(header(&r, "Expires").to_string());
            let exp: u32 = header(&r, "Expires").parse().unwrap();
            registrar.answer(&r, "200 OK", exp, "").await;
        }
    });
    let outcome = outcome.expect("establish() ends");
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(bot.state(), EndpointState::Terminated);
    // A terminated endpoint is unrouted: the platform, not the endpoint, answers.
    let answer = invite(&p, &contact, IM_OFFER).await;
    // What a normally terminated endpoint's contact gets.
    let owner = Address::assume_on_premises("sip:other@contoso.test").unwrap();
    let other = ApplicationEndpoint::new(&p, ApplicationEndpointSettings::new(owner));
    other.establish().await.unwrap();
    let other_contact = other.core().contact().to_string();
    other.terminate().await;
    let control = invite(&p, &other_contact, IM_OFFER).await;
    assert!(
        registers_after_terminated.is_empty(),
        "REGISTERs sent for a terminated endpoint: {registers_after_terminated:?}"
    );
    assert_eq!(
        answer.lines().next(),
        control.lines().next(),
        "the terminated endpoint is still routed"
    );
    p.shutdown().await;
}

/// terminate() closes the endpoint's handler streams (a reader's loop ends with None).
/// An endpoint Terminated because its platform shut down must do the same, or the
/// application's `while let Some(call) = calls.recv().await` waits for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_streams_close_when_the_platform_shuts_down() {
    let registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let owner = Address::assume_on_premises("sip:helper@contoso.test").unwrap();
    let routed = ApplicationEndpoint::new(&p, ApplicationEndpointSettings::new(owner));
    let mut calls = routed.core().incoming(Modality::InstantMessaging);
    let mut dialog = routed.core().route_dialog("call-1@test", "tag-1");
    routed.establish().await.expect("established");
    let mut state = routed.watch_state();
    p.shutdown().await;
    let end = reach(&mut state, EndpointState::Terminated).await;
    assert!(end.reason.contains("shut down"), "{end:?}");
    let closed = tokio::time::timeout(Duration::from_secs(2), calls.recv()).await;
    let dialog_closed = tokio::time::timeout(Duration::from_secs(2), dialog.recv()).await;
    assert!(
        matches!(closed, Ok(None)) && matches!(dialog_closed, Ok(None)),
        "streams of a Terminated endpoint still open: incoming {:?}, dialog route {:?}",
        closed.map(|c| c.is_some()),
        dialog_closed.map(|c| c.is_some())
    );
}

/// Answers the next four REGISTERs 423, each asking for a longer registration.
async fn raise_min_expires_every_round(registrar: &mut Registrar) {
    for min in [700, 800, 900, 1000] {
        let r = registrar.register().await;
        let min_expires = format!("Min-Expires: {min}\r\n");
        registrar
            .answer(&r, "423 Interval Too Brief", 0, &min_expires)
            .await;
    }
}

/// Out of REGISTER rounds on 423s, establish fails with the 423, not as authentication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registrar_raising_min_expires_every_round_fails_establish_with_its_423() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = registering_bot(&p);
    let (result, ()) = tokio::join!(
        tokio::time::timeout(WAIT, bot.establish()),
        raise_min_expires_every_round(&mut registrar)
    );
    match result.expect("an answer within the wait") {
        Err(EndpointError::Request(RequestError::Status {
            code: 423, reason, ..
        })) => assert!(reason.contains("gave up"), "{reason}"),
        other => panic!("expected the registrar's 423, got {other:?}"),
    }
    assert_eq!(bot.state(), EndpointState::Idle);
    p.shutdown().await;
}

/// A refresh out of rounds on 423s is retried with the longest Min-Expires, not terminated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_answered_423_every_round_is_retried_with_the_longer_expiry() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = registering_bot(&p);
    let mut state = bot.watch_state();
    // Refreshed after a second.
    establish(&bot, &mut registrar, 1).await;
    raise_min_expires_every_round(&mut registrar).await;
    let after = tokio::time::timeout(
        WAIT,
        state.wait_for(|c| c.state != EndpointState::Established),
    )
    .await
    .expect("the failed refresh shows within the wait")
    .expect("the endpoint is alive")
    .clone();
    assert_eq!(after.state, EndpointState::Reestablishing, "{after:?}");
    assert!(after.reason.contains("423"), "{after:?}");
    let again = registrar.grant(1000).await;
    assert_eq!(header(&again, "Expires"), "1000");
    reach(&mut state, EndpointState::Established).await;
    tokio::join!(bot.terminate(), registrar.grant(0));
    p.shutdown().await;
}

/// Registering a `tel:` owner is refused at establish, naming why, and the endpoint stays Idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_a_tel_owner_is_refused_at_establish() {
    use application_endpoint::{Credentials, UserEndpoint, UserEndpointSettings};
    let registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let number = "tel:+14255550100";
    let owner = Address::assume_on_premises(number).unwrap();
    let not_registrable = |r: Result<(), EndpointError>| match r {
        Err(EndpointError::NotRegistrable { uri }) => assert_eq!(uri, number),
        other => panic!("expected NotRegistrable, got {other:?}"),
    };
    let settings = ApplicationEndpointSettings::new(owner.clone());
    let bot = ApplicationEndpoint::new(&p, settings.clone().use_registration(true));
    not_registrable(bot.establish().await);
    assert_eq!(bot.state(), EndpointState::Idle);
    let user = UserEndpointSettings::new(owner, Credentials::new("u", "p"));
    let user = UserEndpoint::new(&p, user);
    not_registrable(user.establish().await.map(|_| ()));
    assert_eq!(user.state(), EndpointState::Idle);
    // Without registration (a PSTN gateway application) the number is routed as before.
    let routed = ApplicationEndpoint::new(&p, settings);
    routed.establish().await.expect("established");
    routed.terminate().await;
    p.shutdown().await;
}

/// A user's password answers challenges from home realms only: the owner's domain and the
/// realms the registrar challenged with. A 407 from any other realm (a federated party's
/// server, say) ends the request with `RequestError::Authentication` and nothing is
/// answered: a digest response would let its sender try passwords offline. Before, any
/// realm got one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_requests_answer_challenges_from_home_realms_only() {
    use collaboration_platform::{OutgoingRequest, RequestError};
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let alice = alice_on(&p);
    // The registrar challenges with a realm of its own, then grants.
    let script = async {
        let r = registrar.register().await;
        let challenge = "WWW-Authenticate: Digest realm=\"pool.contoso.test\", nonce=\"r1\", \
                         qop=\"auth\"\r\n";
        registrar.answer(&r, "401 Unauthorized", 0, challenge).await;
        let r = registrar.register().await;
        assert!(
            header(&r, "Authorization").contains("pool.contoso.test"),
            "{r}"
        );
        registrar.answer(&r, "200 OK", 300, "").await;
    };
    let (established, ()) = tokio::join!(alice.establish(), script);
    established.expect("established");

    for (i, (realm, home)) in [
        ("evil.example", false),
        ("pool.contoso.test", true),
        ("contoso.test", true),
    ]
    .into_iter()
    .enumerate()
    {
        let sending = alice.core().send_request(
            OutgoingRequest::new(sip_core::Method::Message, "sip:bob@contoso.test")
                .from("<sip:alice@contoso.test>"),
        );
        let proxy = async {
            let m = registrar.any().await.expect("the MESSAGE");
            assert!(m.starts_with("MESSAGE "), "{m}");
            let challenge = format!(
                "Proxy-Authenticate: Digest realm=\"{realm}\", nonce=\"p{i}\", qop=\"auth\"\r\n"
            );
            registrar
                .answer_plain(&m, "407 Proxy Authentication Required", &challenge)
                .await;
            if home {
                let again = registrar.any().await.expect("the MESSAGE again");
                let answered = again.split("\r\n").any(|l| {
                    l.to_ascii_lowercase().starts_with("proxy-authorization:")
                        && l.contains(&format!("realm=\"{realm}\""))
                });
                assert!(answered, "{realm} not answered: {again}");
                registrar.answer_plain(&again, "200 OK", "").await;
            }
        };
        let (sent, ()) = tokio::time::timeout(WAIT, async { tokio::join!(sending, proxy) })
            .await
            .unwrap_or_else(|_| panic!("{realm}: no outcome (answered a foreign realm?)"));
        if home {
            sent.unwrap_or_else(|e| panic!("{realm}: {e}"));
        } else {
            assert!(
                matches!(sent, Err(RequestError::Authentication { code: 407, .. })),
                "{realm}: {sent:?}"
            );
        }
    }
    tokio::join!(alice.terminate(), async {
        // The unregistration, answered (presence was never published).
        let r = registrar.register().await;
        registrar.answer(&r, "200 OK", 0, "").await;
    });
    p.shutdown().await;
}

/// A shutdown that begins while `establish()`'s REGISTER is out: the REGISTER granted
/// after it is removed (REGISTER with Expires 0) before the platform stops, and
/// `establish()` fails. Before, the platform stopped as soon as the grant came in, and the
/// binding stayed at the registrar until it expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_granted_during_a_shutdown_is_removed_before_it_stops() {
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let bot = Arc::new(registering_bot(&p));
    let establishing = tokio::spawn({
        let bot = bot.clone();
        async move { bot.establish().await }
    });
    let held = registrar.register().await;
    let stopping = tokio::spawn({
        let p = p.clone();
        async move { p.shutdown().await }
    });
    // The platform has begun to stop: the endpoint is ending (or, without the wait for
    // establish(), already ended).
    let mut state = bot.watch_state();
    let ending = tokio::time::timeout(
        WAIT,
        state.wait_for(|c| {
            matches!(
                c.state,
                EndpointState::Terminating | EndpointState::Terminated
            )
        }),
    )
    .await
    .expect("the endpoint ends with its platform")
    .unwrap()
    .clone();
    assert!(ending.reason.contains("shut down"), "{ending:?}");
    registrar.answer(&held, "200 OK", 600, "").await;
    let removal = registrar.register().await;
    assert!(
        removal
            .lines()
            .any(|l| l.eq_ignore_ascii_case("expires: 0")),
        "not an unregistration: {removal}"
    );
    registrar.answer(&removal, "200 OK", 0, "").await;
    let established = tokio::time::timeout(WAIT, establishing)
        .await
        .expect("establish() ends")
        .unwrap();
    assert!(established.is_err(), "{established:?}");
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("the platform stops")
        .unwrap();
    assert_eq!(bot.state(), EndpointState::Terminated);
}

/// Credentials that answered a server's 401 (`Authorization`, user-to-user: read by the UAS
/// at the end, not by a proxy on the way, RFC 3261 §22.2) go up front only on later
/// requests to the server that asked for them (the same Request-URI user and host). A
/// home server's 401 to a request for `sip:svc@contoso.test` once let every later
/// out-of-dialog request (one to a federated party or to another user too) carry a digest
/// response for the user's password to its end: what the home-realm rule keeps from a
/// foreign server (an offline password guess).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_servers_401_credentials_do_not_go_up_front_to_a_federated_party() {
    use collaboration_platform::OutgoingRequest;
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let alice = alice_on(&p);
    let script = async {
        let r = registrar.register().await;
        registrar.answer(&r, "200 OK", 300, "").await;
    };
    let (established, ()) = tokio::join!(alice.establish(), script);
    established.expect("established");

    let authorization = |m: &str, realm: &str| {
        m.split("\r\n").any(|l| {
            l.to_ascii_lowercase().starts_with("authorization:")
                && l.contains(&format!("realm=\"{realm}\""))
        })
    };
    // A home service answers 401: the retry carries Authorization for contoso.test.
    let sending = alice.core().send_request(
        OutgoingRequest::new(sip_core::Method::Message, "sip:svc@contoso.test")
            .from("<sip:alice@contoso.test>"),
    );
    let server = async {
        let m = registrar.any().await.expect("the MESSAGE");
        let challenge =
            "WWW-Authenticate: Digest realm=\"contoso.test\", nonce=\"u1\", qop=\"auth\"\r\n";
        registrar
            .answer_plain(&m, "401 Unauthorized", challenge)
            .await;
        let again = registrar.any().await.expect("the MESSAGE again");
        assert!(authorization(&again, "contoso.test"), "{again}");
        registrar.answer_plain(&again, "200 OK", "").await;
    };
    let (sent, ()) = tokio::time::timeout(WAIT, async { tokio::join!(sending, server) })
        .await
        .expect("answered");
    sent.expect("the home MESSAGE");

    // The same service again: its credentials go up front (RFC 3261 §22.3).
    let sending = alice.core().send_request(
        OutgoingRequest::new(sip_core::Method::Message, "sip:svc@contoso.test")
            .from("<sip:alice@contoso.test>"),
    );
    let server = async {
        let m = registrar.any().await.expect("the MESSAGE");
        assert!(authorization(&m, "contoso.test"), "{m}");
        registrar.answer_plain(&m, "200 OK", "").await;
    };
    let (sent, ()) = tokio::time::timeout(WAIT, async { tokio::join!(sending, server) })
        .await
        .expect("answered");
    sent.expect("the second home MESSAGE");

    // A federated party, or another user of the home domain: the home proxy passes
    // Authorization on to the request's end unread.
    for to in ["sip:bob@fabrikam.test", "sip:bob@contoso.test"] {
        let sending = alice.core().send_request(
            OutgoingRequest::new(sip_core::Method::Message, to).from("<sip:alice@contoso.test>"),
        );
        let proxy = async {
            let m = registrar.any().await.expect("the MESSAGE");
            assert!(
                !authorization(&m, "contoso.test"),
                "a digest response for the user's password went to {to}: {m}"
            );
            registrar.answer_plain(&m, "200 OK", "").await;
        };
        let (sent, ()) = tokio::time::timeout(WAIT, async { tokio::join!(sending, proxy) })
            .await
            .expect("answered");
        sent.unwrap_or_else(|e| panic!("the MESSAGE to {to}: {e}"));
    }

    tokio::join!(alice.terminate(), registrar.grant(0));
    p.shutdown().await;
}

/// A 401 comes from the request's end (RFC 3261 §22.2). When that end is a federated
/// party (another company, or a cloud-homed user of the home domain in a hybrid
/// deployment), it is not a home server, and its 401 is not answered even when it names
/// the home realm: `RequestError::Authentication` with code 401, and no second request.
/// Before, the realm alone decided, and a foreign server that named the home realm got a
/// digest response for the user's password (an offline password guess).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federated_partys_401_is_not_answered_even_for_the_home_realm() {
    use collaboration_platform::{OutgoingRequest, StaticDirectory};
    let mut registrar = Registrar::bind().await;
    let directory = StaticDirectory::new()
        .with_user("sip:carol@contoso.test")
        .unwrap();
    let p = platform_with(
        &registrar,
        Topology::new(["contoso.test"]).with_directory(Arc::new(directory)),
    )
    .await;
    let alice = alice_on(&p);
    let script = async {
        let r = registrar.register().await;
        registrar.answer(&r, "200 OK", 300, "").await;
    };
    let (established, ()) = tokio::join!(alice.establish(), script);
    established.expect("established");
    let message_to = |to: &str| {
        alice.core().send_request(
            OutgoingRequest::new(sip_core::Method::Message, to).from("<sip:alice@contoso.test>"),
        )
    };
    let challenge =
        "WWW-Authenticate: Digest realm=\"contoso.test\", nonce=\"f1\", qop=\"auth\"\r\n";
    for to in ["sip:bob@fabrikam.test", "sip:carol@contoso.test"] {
        let sending = message_to(to);
        let far_end = async {
            let m = registrar.any().await.expect("the MESSAGE");
            assert!(m.starts_with(&format!("MESSAGE {to} ")), "{m}");
            registrar
                .answer_plain(&m, "401 Unauthorized", challenge)
                .await;
        };
        let (sent, ()) = tokio::time::timeout(WAIT, async { tokio::join!(sending, far_end) })
            .await
            .unwrap_or_else(|_| panic!("{to}: no outcome"));
        match sent {
            Err(RequestError::Authentication {
                code: 401, detail, ..
            }) => {
                assert!(detail.contains("federated"), "{to}: {detail}")
            }
            other => panic!("{to}: {other:?}"),
        }
        // Nothing was sent again: the next request the peer reads is a new one.
        let sending = message_to("sip:svc@contoso.test");
        let next = async {
            let m = registrar.any().await.expect("a request");
            assert!(m.starts_with("MESSAGE sip:svc@contoso.test "), "{to}: {m}");
            registrar.answer_plain(&m, "200 OK", "").await;
        };
        let (sent, ()) = tokio::time::timeout(WAIT, async { tokio::join!(sending, next) })
            .await
            .expect("answered");
        sent.expect("the home MESSAGE");
    }
    tokio::join!(alice.terminate(), registrar.grant(0));
    p.shutdown().await;
}

/// A registrar realm first met on a refresh (a front end pool failed over to another
/// with a realm of its own, a registrar that challenges later) is a home realm too: the
/// user's requests answer its proxy's 407 as they answer the first registrar's. Before,
/// only the realms of the first registration counted, and from the refresh on every
/// request challenged by the new pool ended with `RequestError::Authentication`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registrar_realm_met_on_a_refresh_is_a_home_realm() {
    use application_endpoint::Granted;
    use collaboration_platform::OutgoingRequest;
    let mut registrar = Registrar::bind().await;
    let p = platform(&registrar).await;
    let alice = alice_on(&p);
    let challenge = |realm: &str, nonce: &str| {
        format!("WWW-Authenticate: Digest realm=\"{realm}\", nonce=\"{nonce}\", qop=\"auth\"\r\n")
    };
    let script = async {
        let r = registrar.register().await;
        registrar
            .answer(
                &r,
                "401 Unauthorized",
                0,
                &challenge("pool1.contoso.test", "r1"),
            )
            .await;
        let r = registrar.register().await;
        registrar.answer(&r, "200 OK", 1, "").await;
    };
    let (first, ()) = tokio::join!(alice.establish(), script);
    let first = first.expect("established");

    // The refresh meets another pool's realm.
    let r = registrar.register().await;
    registrar
        .answer(
            &r,
            "401 Unauthorized",
            0,
            &challenge("pool2.contoso.test", "r2"),
        )
        .await;
    let r = registrar.register().await;
    assert!(
        header(&r, "Authorization").contains("pool2.contoso.test")
            || r.contains("realm=\"pool2.contoso.test\""),
        "{r}"
    );
    registrar.answer(&r, "200 OK", 600, "").await;
    tokio::time::timeout(WAIT, async {
        loop {
            let now: Granted = alice.establish().await.expect("still established");
            if now != first {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the refresh granted");

    let sending = alice.core().send_request(
        OutgoingRequest::new(sip_core::Method::Message, "sip:bob@contoso.test")
            .from("<sip:alice@contoso.test>"),
    );
    let proxy = async {
        let m = registrar.any().await.expect("the MESSAGE");
        let c = "Proxy-Authenticate: Digest realm=\"pool2.contoso.test\", nonce=\"p1\", \
                 qop=\"auth\"\r\n";
        registrar
            .answer_plain(&m, "407 Proxy Authentication Required", c)
            .await;
        // Answered, the MESSAGE comes again; refused, nothing comes.
        if let Ok(Some(again)) = tokio::time::timeout(Duration::from_secs(2), registrar.any()).await
        {
            registrar.answer_plain(&again, "200 OK", "").await;
        }
    };
    let (sent, ()) = tokio::time::timeout(WAIT, async { tokio::join!(sending, proxy) })
        .await
        .expect("an outcome");
    sent.expect("the MESSAGE answered with the new pool's realm");
    tokio::join!(alice.terminate(), registrar.grant(0));
    p.shutdown().await;
}
