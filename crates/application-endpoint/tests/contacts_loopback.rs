//! Endpoint contacts on one platform hosting several home domains, between two platforms on
//! loopback over mutual TLS (`loopback::pair`): the second platform plays the front end that
//! found an endpoint's contact in its location service and sends the request there.

use std::time::Duration;

use application_endpoint::{ApplicationEndpoint, ApplicationEndpointSettings, Endpoint};
use collaboration_platform::loopback::{pair, LoopbackPki};
use collaboration_platform::{Address, IncomingRequest, OutgoingRequest, Topology};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_user_in_two_home_domains_each_receive_requests_sent_to_their_own_contact() {
    let pki = LoopbackPki::new().expect("CA");
    let (app, front_end) = pair(&pki, "app.contoso.test", "fe.contoso.test", |_, s| {
        s.topology(Topology::new(["contoso.test", "fabrikam.test"]))
    })
    .await
    .expect("platforms");
    let domains = ["contoso.test", "fabrikam.test"];
    let mut endpoints = Vec::new();
    let mut receivers: Vec<mpsc::Receiver<IncomingRequest>> = Vec::new();
    for domain in domains {
        let owner = Address::assume_on_premises(&format!("sip:alice@{domain}")).unwrap();
        let e = ApplicationEndpoint::new(&app, ApplicationEndpointSettings::new(owner));
        receivers.push(e.core().pages());
        e.establish().await.expect("established");
        endpoints.push(e);
    }
    let mut pages: [_; 2] = receivers.try_into().expect("two endpoints");
    let contacts: Vec<String> = endpoints
        .iter()
        .map(|e| e.core().contact().to_string())
        .collect();

    for (i, domain) in domains.into_iter().enumerate() {
        // As a front end does after its location lookup: the Request-URI is the contact,
        // To the address of record.
        let request = OutgoingRequest::message(contacts[i].clone(), format!("for {domain}"))
            .from("<sip:bob@contoso.test>")
            .to(format!("<sip:alice@{domain}>"));
        let fe = front_end.clone();
        let sent = tokio::spawn(async move { fe.send_request(request).await });
        let [contoso, fabrikam] = &mut pages;
        let (got, mut req) = tokio::time::timeout(WAIT, async {
            tokio::select! {
                Some(r) = contoso.recv() => (0, r),
                Some(r) = fabrikam.recv() => (1, r),
            }
        })
        .await
        .expect("a MESSAGE within the wait");
        let body = String::from_utf8_lossy(req.body()).into_owned();
        req.respond(200, "OK", &[], None).await.unwrap();
        assert_eq!(
            (got, body.as_str()),
            (i, format!("for {domain}").as_str()),
            "the MESSAGE to {} reached the endpoint of {}",
            contacts[i],
            domains[got]
        );
        let ok = sent.await.unwrap().expect("answered");
        assert_eq!(ok.status(), Some(200));
    }
    assert_ne!(contacts[0], contacts[1]);

    for e in &endpoints {
        e.terminate().await;
    }
    app.shutdown().await;
    front_end.shutdown().await;
}

/// RFC 3261 §8.2.1: an endpoint's 405 lists what it takes: calls, OPTIONS (the platform
/// answers it for every endpoint), and MESSAGE outside a call only when it takes pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_the_endpoint_does_not_take_gets_405_with_what_it_does() {
    use collaboration_platform::RequestError;
    use sip_core::{HeaderName, Method};
    let pki = LoopbackPki::new().expect("CA");
    let (app, front_end) = pair(&pki, "app.contoso.test", "fe.contoso.test", |_, s| {
        s.topology(Topology::new(["contoso.test"]))
    })
    .await
    .expect("platforms");
    let allow_of = |r: Result<sip_core::SipMessage, RequestError>| match r {
        Err(RequestError::Status {
            code: 405,
            response,
            ..
        }) => String::from_utf8_lossy(response.header(HeaderName::Allow).unwrap_or_default())
            .into_owned(),
        other => panic!("405, not {other:?}"),
    };
    let send = |method: Method, to: String| {
        let request = OutgoingRequest::new(method, to.clone())
            .from("<sip:bob@contoso.test>")
            .to(format!("<{to}>"));
        front_end.send_request(request)
    };

    let owner = Address::assume_on_premises("sip:pager@contoso.test").unwrap();
    let pager = ApplicationEndpoint::new(&app, ApplicationEndpointSettings::new(owner));
    let _pages = pager.core().pages();
    pager.establish().await.expect("established");
    let info = tokio::time::timeout(WAIT, send(Method::Info, pager.core().contact().to_string()))
        .await
        .expect("answered in time");
    assert_eq!(allow_of(info), "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE");

    let owner = Address::assume_on_premises("sip:quiet@contoso.test").unwrap();
    let quiet = ApplicationEndpoint::new(&app, ApplicationEndpointSettings::new(owner));
    quiet.establish().await.expect("established");
    let message = OutgoingRequest::message(quiet.core().contact().to_string(), "hello")
        .from("<sip:bob@contoso.test>")
        .to("<sip:quiet@contoso.test>");
    let answer = tokio::time::timeout(WAIT, front_end.send_request(message))
        .await
        .expect("answered in time");
    assert_eq!(allow_of(answer), "INVITE, ACK, CANCEL, BYE, OPTIONS");

    pager.terminate().await;
    quiet.terminate().await;
    app.shutdown().await;
    front_end.shutdown().await;
}
