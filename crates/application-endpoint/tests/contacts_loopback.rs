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
