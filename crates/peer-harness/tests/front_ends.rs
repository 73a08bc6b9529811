//! The two Kamailio front ends: start, readiness, mutual TLS and its trust rules, digest
//! registration, presence, and clean stop.

mod common;

use std::time::{Duration, Instant};

use common::{block_on, ok, request, tls_request, tls_transport, TlsOutcome, WAIT};
use peer_harness::{
    processes_in_group, status_line, Deployment, Federation, HarnessError, SipTcpClient,
};
use sip_core::auth::{Credentials, DigestClient};
use sip_core::{HeaderName, Method, SipMessage};

#[test]
fn front_ends_answer_options_over_tcp_and_mutual_tls() {
    let fed = ok(Federation::start());
    for d in [Deployment::Contoso, Deployment::Fabrikam] {
        let fe = fed.front_end(d);
        let r = ok(fe.options_over_tcp(WAIT));
        assert_eq!(r.status(), Some(200), "{d:?} over TCP: {}", status_line(&r));
        assert!(
            String::from_utf8_lossy(r.header(HeaderName::Server).unwrap_or_default())
                .contains(fe.fqdn()),
            "the answer comes from {}",
            fe.fqdn()
        );
    }
    // Mutual TLS, each front end's own application certificate.
    block_on(async {
        for d in [Deployment::Contoso, Deployment::Fabrikam] {
            let fe = fed.front_end(d);
            let (t, mut ev) = tls_transport(fed.pki(), Some(fed.pki().application(d)));
            let uri = format!("sip:{}", fe.fqdn());
            let from = format!("sip:{}", d.application());
            let out = tls_request(&t, &mut ev, fe.mtls_addr(), fe.fqdn(), |local| {
                request(Method::Options, &uri, &from, &uri, local, &[])
            })
            .await;
            assert_eq!(out.status(), Some(200), "{d:?} over mutual TLS: {out:?}");
            t.shutdown();
        }
    });
}

#[test]
fn untrusted_certificates_are_refused() {
    let fed = ok(Federation::start());
    let fe = fed.contoso();
    let uri = format!("sip:{}", fe.fqdn());
    block_on(async {
        // Same CA, name not trusted: the handshake succeeds, the request gets 403.
        // fabrikam's application is not trusted by contoso either (trust is not transitive).
        for id in [
            fed.pki().untrusted(),
            fed.pki().application(Deployment::Fabrikam),
        ] {
            let (t, mut ev) = tls_transport(fed.pki(), Some(id));
            let out = tls_request(&t, &mut ev, fe.mtls_addr(), fe.fqdn(), |local| {
                request(
                    Method::Options,
                    &uri,
                    &format!("sip:{}", id.name),
                    &uri,
                    local,
                    &[],
                )
            })
            .await;
            assert_eq!(out.status(), Some(403), "{}: {out:?}", id.name);
            t.shutdown();
        }
        // A certificate from another CA, or none at all: the handshake is refused.
        for id in [Some(fed.pki().foreign()), None] {
            let (t, mut ev) = tls_transport(fed.pki(), id);
            let out = tls_request(&t, &mut ev, fe.mtls_addr(), fe.fqdn(), |local| {
                request(
                    Method::Options,
                    &uri,
                    "sip:stranger@example.test",
                    &uri,
                    local,
                    &[],
                )
            })
            .await;
            assert!(
                matches!(out, TlsOutcome::Refused(_)),
                "{:?} must be refused: {out:?}",
                id.map(|c| &c.name)
            );
            t.shutdown();
        }
    });
    assert!(
        fed.contoso()
            .log_tail(200)
            .contains("refused untrusted certificate cn=untrusted.contoso.test"),
        "{}",
        fed.contoso().log_tail(50)
    );
}

#[test]
fn federation_partner_is_trusted_only_for_its_own_traffic() {
    let fed = ok(Federation::start());
    let contoso = fed.contoso();
    // fabrikam's front-end certificate at contoso: a partner. It may reach contoso's users
    // (404 here: nobody is registered), but contoso relays nothing onwards for it.
    block_on(async {
        let (t, mut ev) = tls_transport(fed.pki(), Some(fed.pki().front_end(Deployment::Fabrikam)));
        let to_user = "sip:alice@contoso.test";
        let out = tls_request(&t, &mut ev, contoso.mtls_addr(), contoso.fqdn(), |local| {
            request(
                Method::Message,
                to_user,
                "sip:bob@fabrikam.test",
                to_user,
                local,
                &[],
            )
        })
        .await;
        assert_eq!(
            out.status(),
            Some(404),
            "partner to an unregistered user: {out:?}"
        );
        let transit = "sip:dave@fabrikam.test";
        let out = tls_request(&t, &mut ev, contoso.mtls_addr(), contoso.fqdn(), |local| {
            request(
                Method::Message,
                transit,
                "sip:bob@fabrikam.test",
                transit,
                local,
                &[],
            )
        })
        .await;
        assert_eq!(out.status(), Some(403), "no transit for partners: {out:?}");
        t.shutdown();
    });
}

#[test]
fn register_with_digest_gets_401_then_200() {
    let fed = ok(Federation::start());
    let fe = fed.contoso();
    let mut c = ok(SipTcpClient::connect(fe.tcp_addr(), WAIT));
    let contact = c.contact_uri("alice");
    let reg = ok(c.register("alice", "contoso.test", "alice-secret", &contact, 300, WAIT));
    let challenge = reg.challenge.as_ref().expect("a challenge first");
    assert_eq!(challenge.status(), Some(401));
    let ch = challenge
        .auth(HeaderName::WwwAuthenticate)
        .next()
        .expect("WWW-Authenticate")
        .expect("a well-formed challenge");
    assert_eq!(ch.param("realm").as_deref(), Some(&b"contoso.test"[..]));
    assert!(
        ch.param("qop")
            .is_some_and(|q| q.windows(4).any(|w| w == b"auth")),
        "the front end offers qop=auth"
    );
    assert_eq!(
        reg.response.status(),
        Some(200),
        "{}",
        status_line(&reg.response)
    );
    let contacts: Vec<String> = reg
        .response
        .header_values(HeaderName::Contact)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        contacts
            .iter()
            .any(|v| v.contains(&c.local_addr().to_string())),
        "the binding is echoed: {contacts:?}"
    );

    // A wrong password is not accepted.
    let mut c2 = ok(SipTcpClient::connect(fe.tcp_addr(), WAIT));
    let contact2 = c2.contact_uri("carol");
    let bad = ok(c2.register("carol", "contoso.test", "wrong", &contact2, 300, WAIT));
    assert_ne!(bad.response.status(), Some(200));

    // The same over the users' TLS listener, without a client certificate.
    let user_tls = fe.user_tls_addr().expect("user TLS listener on by default");
    block_on(async {
        let (t, mut ev) = tls_transport(fed.pki(), None);
        let aor = "sip:carol@contoso.test";
        let registrar = "sip:contoso.test";
        let contact = vec![(
            HeaderName::Contact,
            "<sip:carol@127.0.0.1:5999;transport=tls>".to_owned(),
        )];
        let first = tls_request(&t, &mut ev, user_tls, fe.fqdn(), |local| {
            request(Method::Register, registrar, aor, aor, local, &contact)
        })
        .await;
        let TlsOutcome::Answered(401, challenge) = first else {
            panic!("expected 401 over user TLS, got {first:?}");
        };
        // The request the challenge answers: digest needs its method and Request-URI.
        let challenged = SipMessage::request(Method::Register, registrar).build_unchecked();
        let mut digest = DigestClient::new(Credentials::new("carol", "carol-secret"));
        let answer = digest
            .handle_challenge(&challenge, &challenged)
            .expect("sip-core answers the front end's challenge")
            .remove(0);
        let mut headers = contact.clone();
        headers.push((answer.name, answer.value));
        let second = tls_request(&t, &mut ev, user_tls, fe.fqdn(), |local| {
            request(Method::Register, registrar, aor, aor, local, &headers)
        })
        .await;
        assert_eq!(second.status(), Some(200), "{second:?}");
        t.shutdown();
    });
}

#[test]
fn presence_subscribe_is_accepted_and_notified() {
    let fed = ok(Federation::start());
    let fe = fed.contoso();
    let mut c = ok(SipTcpClient::connect(fe.tcp_addr(), WAIT));
    let contact = c.contact_uri("carol");
    let sub = c
        .request(
            Method::Subscribe,
            "sip:alice@contoso.test",
            "sip:carol@contoso.test",
            "sip:alice@contoso.test",
        )
        .header(HeaderName::Contact, format!("<{contact}>"))
        .header(HeaderName::Event, "presence")
        .header(HeaderName::Expires, "60")
        .header(HeaderName::Accept, "application/pidf+xml")
        .build()
        .expect("SUBSCRIBE");
    let r = ok(c.transaction(&sub, WAIT));
    assert!(
        matches!(r.status(), Some(200 | 202)),
        "SUBSCRIBE: {}\n{}",
        status_line(&r),
        fe.log_tail(30)
    );
    let notify = ok(c.recv_request(WAIT));
    assert_eq!(notify.method(), Some(&Method::Notify));
    let state = String::from_utf8_lossy(
        notify
            .header(HeaderName::SubscriptionState)
            .unwrap_or_default(),
    )
    .into_owned();
    assert!(state.starts_with("active"), "Subscription-State: {state}");
    let mut ok200 = SipMessage::response_to(&notify, 200, "OK").expect("200");
    let _ = ok200.set_to_tag("watcher");
    ok(c.send(&ok200));
}

#[test]
fn nothing_is_left_running_after_drop_even_when_a_test_panics() {
    let mut groups = Vec::new();
    let mut dir = None;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let fed = ok(Federation::start());
        for d in [Deployment::Contoso, Deployment::Fabrikam] {
            let fe = fed.front_end(d);
            assert!(fe.processes().len() >= 3, "kamailio runs with children");
            groups.push(fe.process_group());
        }
        dir = Some(fed.dir().to_path_buf());
        panic!("deliberate panic while the front ends run");
    }));
    assert!(r.is_err());
    let deadline = Instant::now() + Duration::from_secs(5);
    for g in groups {
        while !processes_in_group(g).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            processes_in_group(g),
            Vec::<u32>::new(),
            "group {g} left behind"
        );
    }
    // The folder was kept for inspection (a failed test's logs); tidy it here.
    let dir = dir.expect("dir");
    assert!(dir.join("pki/ca.crt").exists(), "kept after a panic");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_kamailio_is_a_clear_error() {
    let started = Instant::now();
    let err = Federation::builder()
        .kamailio_binary("/nonexistent/kamailio")
        .start()
        .expect_err("no such binary");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "fails fast, no hang"
    );
    assert!(matches!(err, HarnessError::MissingBinary { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(
            "apt-get install -y kamailio kamailio-tls-modules kamailio-presence-modules sip-tester"
        ),
        "{text}"
    );
}

/// Writes an executable shell script standing in for Kamailio.
fn fake_kamailio(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("fake-kamailio");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

#[test]
fn a_front_end_that_dies_or_never_answers_fails_fast_with_its_log() {
    let tools = tempfile::tempdir().expect("tempdir");
    // Dies at once, as Kamailio does without its TLS module package.
    let dies = fake_kamailio(
        tools.path(),
        "echo 'ERROR: <core> [core/sr_module.c:599]: load_module(): could not find module <tls>' >&2; exit 255",
    );
    let started = Instant::now();
    let err = Federation::builder()
        .kamailio_binary(&dies)
        .start()
        .expect_err("dies");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, HarnessError::MissingModule { .. }), "{err}");
    assert!(
        err.to_string().contains("could not find module <tls>"),
        "{err}"
    );
    remove_fixture_of(&err);

    // Runs but never answers: a bounded wait, then the log tail.
    let tools2 = tempfile::tempdir().expect("tempdir");
    let mute = fake_kamailio(
        tools2.path(),
        &format!(
            "echo 'mute front end starting'; exec sleep {}",
            mute_sleep()
        ),
    );
    let started = Instant::now();
    let err = Federation::builder()
        .kamailio_binary(&mute)
        .ready_timeout(Duration::from_secs(1))
        .start()
        .expect_err("never ready");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, HarnessError::NotReady { .. }), "{err}");
    assert!(err.to_string().contains("mute front end starting"), "{err}");
    // The stand-ins were stopped with their groups.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleeping_children() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!sleeping_children(), "the mute front ends were killed");
    remove_fixture_of(&err);
}

/// Failed starts keep their folder for inspection: remove what a deliberate failure left.
fn remove_fixture_of(err: &HarnessError) {
    if let HarnessError::NotReady { log_path, .. } | HarnessError::MissingModule { log_path, .. } =
        err
    {
        // LOG = ROOT/DEPLOYMENT-N/kamailio.log
        if let Some(root) = log_path.parent().and_then(|p| p.parent()) {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// The mute stand-in's `sleep` argument: 600 s, with this test process's pid as the
/// fraction, so another run of this test beside this one (another checkout, another
/// runner) never looks like one of ours left behind.
fn mute_sleep() -> String {
    format!("600.{}", std::process::id())
}

/// Whether a stand-in of this process (`exec sleep 600.PID`) still runs, by scanning `/proc`.
fn sleeping_children() -> bool {
    let cmdline = format!("sleep\0{}\0", mute_sleep()).into_bytes();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| c == cmdline)
                .unwrap_or(false)
        })
}
