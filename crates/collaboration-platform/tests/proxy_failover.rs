//! Failing over between the outbound proxy's servers (RFC 3263 §4.3), against real
//! Kamailio front ends (peer-harness): at start, the servers the proxy's domain resolves to
//! (here through the locator's static overrides) are tried in order; while running, a lost
//! server is replaced by the next one.
//!
//! Every wait is bounded. Without kamailio these tests fail with the install hint.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use collaboration_platform::loopback::LoopbackPki;
use collaboration_platform::{
    CollaborationPlatform, Identity, Listener, OutboundProxy, OutgoingRequest, PlatformError,
    ServerLocator, ServerPlatformSettings, Topology,
};
use interop_support::{bounded, federation, identity, loopback0, roots, runtime};
use peer_harness::{status_line, Deployment, Federation, FOREIGN_NAME};
use transport_tls::{
    Confirmation, SipTransport, Target, TlsClientSettings, TlsRefusal, TransportError,
    TransportLimits, TransportSettings,
};

/// The connect bound (TCP connect plus TLS handshake) each dead server may cost.
const HANDSHAKE: Duration = Duration::from_secs(2);

/// A loopback port nobody listens on (bound, read back, released): connecting is refused.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr")
}

/// The trusted application `app.contoso.test`, its front end `fe.contoso.test` located by
/// domain: the locator's overrides list `servers` for it, in order, and nothing else.
fn settings(fed: &Federation, servers: &[SocketAddr]) -> ServerPlatformSettings {
    settings_as(
        fed,
        servers,
        identity(fed.pki().application(Deployment::Contoso)),
    )
}

/// As [`settings`], presenting `me` as the platform's certificate.
fn settings_as(fed: &Federation, servers: &[SocketAddr], me: Identity) -> ServerPlatformSettings {
    let fqdn = fed.contoso().fqdn();
    let mut locator = ServerLocator::new().without_dns();
    for &s in servers {
        locator = locator.with_override(fqdn, s, fqdn);
    }
    let limits = TransportLimits {
        handshake_timeout: HANDSHAKE,
        ..TransportLimits::DEFAULT
    };
    ServerPlatformSettings::new(
        "ucma-rs failover",
        Deployment::Contoso.application(),
        me,
        roots(fed),
        OutboundProxy::tls_domain(fqdn),
    )
    .listen(Listener::mutual_tls(loopback0()))
    .topology(Topology::new([Deployment::Contoso.domain()]))
    .locator(locator)
    .transport(TransportSettings::new().limits(limits))
}

/// OPTIONS to the front end itself (which its configuration answers 200).
async fn options(platform: &CollaborationPlatform, fed: &Federation, what: &str) {
    let r = bounded(
        what,
        platform.send_request(OutgoingRequest::options("sip:fe.contoso.test")),
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}\n{}", fed.log_tails(30)));
    assert_eq!(r.status(), Some(200), "{what}: {}", status_line(&r));
}

#[test]
fn start_skips_a_dead_proxy_server_and_uses_the_next() {
    let fed = federation();
    let dead = closed_port();
    let live = fed.contoso().mtls_addr();
    runtime().block_on(async {
        let platform = bounded(
            "start",
            CollaborationPlatform::start(settings(&fed, &[dead, live])),
        )
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
        assert_eq!(
            platform.proxy().remote,
            live,
            "the reachable server is used"
        );
        options(&platform, &fed, "OPTIONS through the second server").await;
        let report = platform.shutdown().await;
        assert_eq!(report.cancelled, 0);
    });
}

#[test]
fn start_fails_naming_every_dead_proxy_server() {
    let fed = federation();
    // Refused at once; and a live SIP port that speaks no TLS, so the handshake fails
    // (or times out at HANDSHAKE): connecting alone is not enough.
    let refused = closed_port();
    let no_tls = fed.contoso().tcp_addr();
    runtime().block_on(async {
        let t0 = Instant::now();
        let r = bounded(
            "start",
            CollaborationPlatform::start(settings(&fed, &[refused, no_tls])),
        )
        .await;
        let elapsed = t0.elapsed();
        let Err(PlatformError::ProxyUnreachable { proxy, attempts }) = &r else {
            panic!("start must fail with ProxyUnreachable, got {r:?}");
        };
        assert_eq!(proxy, "fe.contoso.test");
        let tried: Vec<SocketAddr> = attempts.iter().map(|a| a.addr).collect();
        assert_eq!(tried, [refused, no_tls], "each server, in order");
        let text = r.as_ref().map(|_| ()).unwrap_err().to_string();
        assert!(
            text.contains(&refused.to_string()) && text.contains(&no_tls.to_string()),
            "{text}"
        );
        // One handshake bound for the server that took a connection, a little for the rest.
        assert!(
            elapsed < HANDSHAKE + Duration::from_secs(2),
            "took {elapsed:?}"
        );
        eprintln!("start failed in {elapsed:?}: {text}");
    });
}

#[test]
fn a_lost_proxy_server_is_replaced_by_the_next() {
    let mut fed = federation();
    let first = fed.contoso().mtls_addr();
    let replica = fed
        .spawn_replica(Deployment::Contoso)
        .unwrap_or_else(|e| panic!("second contoso front end: {e}"));
    let second = replica.mtls_addr();
    let rt = runtime();
    let platform = rt.block_on(async {
        let platform = bounded(
            "start",
            CollaborationPlatform::start(settings(&fed, &[first, second])),
        )
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
        assert_eq!(platform.proxy().remote, first);
        options(&platform, &fed, "OPTIONS through the first server").await;
        platform
    });
    let mut moves = platform.proxy_changes();
    moves.mark_unchanged();
    let losses_before = *platform.proxy_losses().borrow();
    // The first front end goes away for good.
    fed.front_end_mut(Deployment::Contoso).stop();
    rt.block_on(async {
        bounded("the move to the second server", moves.changed())
            .await
            .expect("platform running");
        assert_eq!(moves.borrow().remote, second);
        assert_eq!(platform.proxy().remote, second);
        // Endpoints above hear of it (they re-register at the new server).
        assert!(*platform.proxy_losses().borrow() > losses_before);
        options(&platform, &fed, "OPTIONS through the second server").await;
        let report = platform.shutdown().await;
        assert_eq!(report.cancelled, 0);
    });
    drop(replica);
}

/// Whether a start attempt's error is a front end refusing our certificate by its alert.
fn certificate_refused(error: &TransportError) -> bool {
    matches!(
        error,
        TransportError::Tls {
            refusal: TlsRefusal::PeerAlert(_),
            ..
        }
    ) && error.to_string().contains("refused our certificate")
}

#[test]
fn start_fails_when_no_front_end_trusts_the_platform_certificate() {
    // The most common deployment mistake for a trusted application: its certificate comes
    // from a CA the front ends do not trust. Under TLS 1.3 our handshake completes before
    // they refuse it, so only the keep-alive ping after it shows the refusal.
    let fed = federation();
    let replica = fed
        .spawn_replica(Deployment::Contoso)
        .unwrap_or_else(|e| panic!("second contoso front end: {e}"));
    let servers = [fed.contoso().mtls_addr(), replica.mtls_addr()];
    let pki = LoopbackPki::new().expect("loopback CA");
    let me = pki
        .identity(Deployment::Contoso.application())
        .expect("identity");
    runtime().block_on(async {
        let r = bounded(
            "start",
            CollaborationPlatform::start(settings_as(&fed, &servers, me)),
        )
        .await;
        let Err(PlatformError::ProxyUnreachable { attempts, .. }) = &r else {
            panic!(
                "start must fail with ProxyUnreachable, got {:?}",
                r.map(|p| p.proxy())
            );
        };
        let tried: Vec<SocketAddr> = attempts.iter().map(|a| a.addr).collect();
        assert_eq!(tried, servers, "each server, in order");
        for a in attempts {
            assert!(certificate_refused(&a.error), "{a}: {:?}", a.error);
        }
        eprintln!("start failed: {}", r.map(|_| ()).unwrap_err());
    });
    drop(replica);
}

#[test]
fn start_skips_a_front_end_that_refuses_the_platform_certificate() {
    // The platform presents the foreign CA's certificate: the first front end refuses it,
    // the second trusts that CA too (and the name is a trusted application at both).
    let fed = Federation::builder()
        .trust_application(Deployment::Contoso, FOREIGN_NAME)
        .start()
        .unwrap_or_else(|e| panic!("starting the real peers failed: {e}"));
    let replica = fed
        .spawn_replica_trusting(Deployment::Contoso, fed.pki().foreign_ca_pem())
        .unwrap_or_else(|e| panic!("second contoso front end: {e}"));
    let refusing = fed.contoso().mtls_addr();
    let trusting = replica.mtls_addr();
    let me = identity(fed.pki().foreign());
    runtime().block_on(async {
        let platform = bounded(
            "start",
            CollaborationPlatform::start(settings_as(&fed, &[refusing, trusting], me)),
        )
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
        assert_eq!(
            platform.proxy().remote,
            trusting,
            "the server that keeps the connection is used"
        );
        options(&platform, &fed, "OPTIONS through the trusting server").await;
        let report = platform.shutdown().await;
        assert_eq!(report.cancelled, 0);
    });
    drop(replica);
}

#[test]
fn kamailio_front_end_pongs_a_keep_alive_ping_over_tls() {
    // What `confirm` relies on to be quick: Kamailio answers CRLFCRLF with CRLF
    // (core parameter `tcp_crlf_ping`, on by default), here over mutual TLS.
    let fed = federation();
    runtime().block_on(async {
        let client = TlsClientSettings::new(roots(&fed))
            .identity(identity(fed.pki().application(Deployment::Contoso)));
        let (transport, _events) =
            SipTransport::new(TransportSettings::new().tls_client(client)).expect("transport");
        let target = Target::tls(fed.contoso().mtls_addr(), fed.contoso().fqdn());
        let (_, confirmation) = bounded(
            "connect and confirm",
            transport.connect_confirmed(&target, Duration::from_secs(5)),
        )
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
        assert_eq!(confirmation, Confirmation::Ponged);
        transport.shutdown();
    });
}
