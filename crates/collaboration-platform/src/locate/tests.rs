use super::*;
use std::sync::Mutex;

/// Answers from tables; records every query so tests can check which were asked.
#[derive(Debug, Default)]
struct FakeDns {
    naptr: HashMap<String, Vec<NaptrRecord>>,
    srv: HashMap<String, Vec<SrvRecord>>,
    ip: HashMap<String, Vec<IpAddr>>,
    failing: Vec<String>,
    asked: Mutex<Vec<String>>,
}

impl FakeDns {
    fn naptr(mut self, name: &str, order: u16, pref: u16, service: &str, repl: &str) -> Self {
        self.naptr
            .entry(name.into())
            .or_default()
            .push(NaptrRecord {
                order,
                preference: pref,
                flags: "S".into(),
                service: service.into(),
                replacement: repl.into(),
            });
        self
    }
    fn srv(mut self, name: &str, priority: u16, weight: u16, port: u16, target: &str) -> Self {
        self.srv.entry(name.into()).or_default().push(SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
        });
        self
    }
    fn ip(mut self, host: &str, ip: &str) -> Self {
        self.ip
            .entry(host.into())
            .or_default()
            .push(ip.parse().unwrap());
        self
    }
    fn fail(mut self, name: &str) -> Self {
        self.failing.push(name.into());
        self
    }
    fn answer<T: Clone>(
        &self,
        kind: &str,
        name: &str,
        table: &HashMap<String, Vec<T>>,
    ) -> Result<Vec<T>, LocateError> {
        self.asked.lock().unwrap().push(format!("{kind} {name}"));
        if self.failing.iter().any(|f| f == name) {
            return Err(LocateError::Dns(format!("{kind} {name}: SERVFAIL")));
        }
        Ok(table.get(name).cloned().unwrap_or_default())
    }
}

impl DnsLookup for FakeDns {
    fn naptr<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<NaptrRecord>> {
        Box::pin(async move { self.answer("NAPTR", name, &self.naptr) })
    }
    fn srv<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<SrvRecord>> {
        Box::pin(async move { self.answer("SRV", name, &self.srv) })
    }
    fn ip<'a>(&'a self, host: &'a str) -> DnsFuture<'a, Vec<IpAddr>> {
        Box::pin(async move { self.answer("A", host, &self.ip) })
    }
}

fn addrs(v: &[LocatedServer]) -> Vec<(String, TransportKind)> {
    v.iter()
        .map(|c| (c.addr.to_string(), c.transport))
        .collect()
}

fn resolve(l: &ServerLocator, t: LocateTarget) -> Result<Vec<LocatedServer>, LocateError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(l.resolve(&t))
}

use TransportKind::{Tcp, Tls, Udp};

#[test]
fn overrides_win_and_unknown_domains_fail() {
    let addr: SocketAddr = "127.0.0.1:5061".parse().unwrap();
    let l = ServerLocator::new().with_override("Contoso.Test", addr, "FE.contoso.test");
    let expected = vec![LocatedServer {
        addr,
        server_name: "fe.contoso.test".into(),
        transport: Tls,
    }];
    assert_eq!(l.locate("contoso.test").unwrap(), expected);
    assert_eq!(
        l.locate("fabrikam.test"),
        Err(LocateError::NotFound("fabrikam.test".into()))
    );
    assert_eq!(l.locate("127.0.0.1:5061").unwrap()[0].addr, addr);
    // resolve() takes overrides before DNS (a DNS that fails everything is never asked).
    let l = l.with_dns(FakeDns::default().fail("contoso.test"));
    assert_eq!(
        resolve(&l, LocateTarget::sips_domain("contoso.test")).unwrap(),
        expected
    );
}

#[test]
fn parses_sip_and_sips_uris() {
    let t = LocateTarget::parse_uri("sips:alice@Contoso.Test:5071;transport=tcp?x=y").unwrap();
    assert_eq!(
        t,
        LocateTarget::sips_domain("contoso.test")
            .with_port(5071)
            .with_transport(Tls)
    );
    let t = LocateTarget::parse_uri("sip:[2001:db8::1]:5080;lr").unwrap();
    assert_eq!(t.host(), "2001:db8::1");
    assert_eq!(t.port, Some(5080));
    let t = LocateTarget::parse_uri("sip:fe.contoso.test;transport=UDP").unwrap();
    assert_eq!(
        t,
        LocateTarget::sip_domain("fe.contoso.test").with_transport(Udp)
    );
    // A user part may hold `;` and `?`: the host is what follows the `@`.
    let t = LocateTarget::parse_uri(
        "sip:+14255550100;phone-context=contoso.test@GW.contoso.test;user=phone",
    )
    .unwrap();
    assert_eq!(t, LocateTarget::sip_domain("gw.contoso.test"));
    let t = LocateTarget::parse_uri("sips:a;b?c@fe.contoso.test:5062").unwrap();
    assert_eq!(
        t,
        LocateTarget::sips_domain("fe.contoso.test").with_port(5062)
    );
    assert!(matches!(
        LocateTarget::parse_uri("sip:host:0"),
        Err(LocateError::InvalidTarget(_))
    ));
    assert!(matches!(
        LocateTarget::parse_uri("tel:+1555"),
        Err(LocateError::InvalidTarget(_))
    ));
    assert!(matches!(
        LocateTarget::parse_uri("sip:host:99999"),
        Err(LocateError::InvalidTarget(_))
    ));
    assert!(matches!(
        LocateTarget::parse_uri("sip:host;transport=sctp"),
        Err(LocateError::UnsupportedTransport(_))
    ));
}

#[test]
fn numeric_hosts_skip_dns_with_default_ports() {
    let l = ServerLocator::new().with_dns(FakeDns::default().fail("x"));
    let r = resolve(&l, LocateTarget::parse_uri("sips:192.0.2.1").unwrap()).unwrap();
    assert_eq!(addrs(&r), vec![("192.0.2.1:5061".into(), Tls)]);
    assert_eq!(r[0].server_name, "192.0.2.1");
    let r = resolve(&l, LocateTarget::parse_uri("sip:192.0.2.1").unwrap()).unwrap();
    assert_eq!(addrs(&r), vec![("192.0.2.1:5060".into(), Udp)]);
    let r = resolve(
        &l,
        LocateTarget::parse_uri("sip:[2001:db8::1];transport=tls").unwrap(),
    )
    .unwrap();
    assert_eq!(addrs(&r), vec![("[2001:db8::1]:5061".into(), Tls)]);
    let r = resolve(
        &l,
        LocateTarget::parse_uri("sip:192.0.2.1:7000;transport=tcp").unwrap(),
    )
    .unwrap();
    assert_eq!(addrs(&r), vec![("192.0.2.1:7000".into(), Tcp)]);
}

#[test]
fn explicit_port_uses_a_records_only() {
    let dns = FakeDns::default()
        .naptr(
            "contoso.test",
            10,
            10,
            "SIPS+D2T",
            "_sips._tcp.contoso.test",
        )
        .ip("contoso.test", "192.0.2.7")
        .ip("contoso.test", "2001:db8::7");
    let l = ServerLocator::new().with_dns(dns);
    let r = resolve(
        &l,
        LocateTarget::sips_domain("contoso.test").with_port(5071),
    )
    .unwrap();
    assert_eq!(
        addrs(&r),
        vec![
            ("192.0.2.7:5071".into(), Tls),
            ("[2001:db8::7]:5071".into(), Tls)
        ]
    );
    assert!(r.iter().all(|c| c.server_name == "contoso.test"));
}

#[test]
fn naptr_order_preference_and_supported_services() {
    let dns = FakeDns::default()
        // Order 5 wins over order 10 whatever the preference; unknown services are skipped.
        .naptr("contoso.test", 10, 1, "SIPS+D2T", "_sips._tcp.contoso.test")
        .naptr("contoso.test", 5, 50, "SIP+D2U", "_sip._udp.contoso.test")
        .naptr("contoso.test", 5, 20, "SIP+D2T", "_sip._tcp.contoso.test")
        .naptr("contoso.test", 1, 1, "SIP+D2S", "_sip._sctp.contoso.test")
        .srv("_sips._tcp.contoso.test", 0, 0, 5061, "fe1.contoso.test")
        .srv("_sip._tcp.contoso.test", 0, 0, 5060, "fe1.contoso.test")
        .srv("_sip._udp.contoso.test", 0, 0, 5060, "fe2.contoso.test")
        .ip("fe1.contoso.test", "192.0.2.1")
        .ip("fe2.contoso.test", "192.0.2.2");
    let l = ServerLocator::new().with_dns(dns);
    let r = resolve(&l, LocateTarget::sip_domain("contoso.test")).unwrap();
    assert_eq!(
        addrs(&r),
        vec![
            ("192.0.2.1:5060".into(), Tcp),
            ("192.0.2.2:5060".into(), Udp),
            ("192.0.2.1:5061".into(), Tls),
        ]
    );
    // TLS name is the domain (RFC 5922), not the SRV target.
    assert!(r.iter().all(|c| c.server_name == "contoso.test"));

    // A TLS-only platform keeps only SIPS+D2T; so does a sips: target.
    let l2 = l.clone().with_transports(&[Tls]);
    let r = resolve(&l2, LocateTarget::sip_domain("contoso.test")).unwrap();
    assert_eq!(addrs(&r), vec![("192.0.2.1:5061".into(), Tls)]);
    let r = resolve(&l, LocateTarget::sips_domain("contoso.test")).unwrap();
    assert_eq!(addrs(&r), vec![("192.0.2.1:5061".into(), Tls)]);
}

#[test]
fn naptr_ties_prefer_tls() {
    let dns = FakeDns::default()
        .naptr("contoso.test", 10, 10, "SIP+D2U", "_sip._udp.contoso.test")
        .naptr(
            "contoso.test",
            10,
            10,
            "SIPS+D2T",
            "_sips._tcp.contoso.test",
        )
        .srv("_sips._tcp.contoso.test", 0, 0, 5061, "fe.contoso.test")
        .srv("_sip._udp.contoso.test", 0, 0, 5060, "fe.contoso.test")
        .ip("fe.contoso.test", "192.0.2.1");
    let l = ServerLocator::new().with_dns(dns);
    let r = resolve(&l, LocateTarget::sip_domain("contoso.test")).unwrap();
    assert_eq!(
        addrs(&r),
        vec![
            ("192.0.2.1:5061".into(), Tls),
            ("192.0.2.1:5060".into(), Udp)
        ]
    );
}

#[test]
fn srv_without_naptr_by_priority_then_weight() {
    let dns = FakeDns::default()
        .srv(
            "_sips._tcp.contoso.test",
            20,
            100,
            5061,
            "backup.contoso.test",
        )
        .srv(
            "_sips._tcp.contoso.test",
            10,
            10,
            5061,
            "light.contoso.test",
        )
        .srv(
            "_sips._tcp.contoso.test",
            10,
            60,
            5062,
            "heavy.contoso.test",
        )
        .srv("_sips._tcp.contoso.test", 5, 0, 5061, ".")
        .srv("_sip._tcp.contoso.test", 0, 0, 5060, "tcp.contoso.test")
        .ip("backup.contoso.test", "192.0.2.30")
        .ip("light.contoso.test", "192.0.2.10")
        .ip("heavy.contoso.test", "192.0.2.60")
        .ip("tcp.contoso.test", "192.0.2.99");
    let l = ServerLocator::new().with_dns(dns);
    let r = resolve(&l, LocateTarget::sip_domain("contoso.test")).unwrap();
    // TLS SRV first (whatever the TCP record's priority), then TCP; UDP has no records.
    // Priority 10 before 20; heavy and light share priority 10, so their order is a weighted
    // random draw (see `srv_same_priority_*`).
    let mut first_two = addrs(&r[..2]);
    first_two.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        first_two,
        vec![
            ("192.0.2.10:5061".into(), Tls),
            ("192.0.2.60:5062".into(), Tls),
        ]
    );
    assert_eq!(
        addrs(&r[2..]),
        vec![
            ("192.0.2.30:5061".into(), Tls),
            ("192.0.2.99:5060".into(), Tcp),
        ]
    );
    let r = resolve(&l, LocateTarget::sips_domain("contoso.test")).unwrap();
    assert_eq!(r.len(), 3);
    assert!(r.iter().all(|c| c.transport == Tls));
}

fn srv(priority: u16, weight: u16, target: &str) -> SrvRecord {
    SrvRecord {
        priority,
        weight,
        port: 5061,
        target: target.into(),
    }
}

fn targets(v: &[SrvRecord]) -> Vec<&str> {
    v.iter().map(|r| r.target.as_str()).collect()
}

/// `order_srv_with` with the numbers of `draws` in turn; also returns the totals asked for.
fn order_with_draws(records: Vec<SrvRecord>, draws: &[u64]) -> (Vec<SrvRecord>, Vec<u64>) {
    let mut draws = draws.iter().copied();
    let mut totals = Vec::new();
    let out = order_srv_with(records, &mut |total| {
        totals.push(total);
        draws
            .next()
            .expect("more random numbers asked for than expected")
    });
    (out, totals)
}

#[test]
fn srv_same_priority_follows_rfc_2782_draws() {
    let records = vec![
        srv(10, 10, "b"),
        srv(20, 0, "e"),
        srv(10, 30, "c"),
        srv(10, 0, "a"),
        srv(5, 5, "d"),
        srv(10, 0, "."),
    ];
    // Priority 5 alone (no draw); priority 10 listed a(0), b(10), c(30): running sums 0, 10,
    // 40. A draw of 25 takes c; then a(0), b(10): a draw of 0 takes a (a weight-0 record's
    // small chance); b is left; priority 20 alone.
    let (out, totals) = order_with_draws(records.clone(), &[25, 0]);
    assert_eq!(targets(&out), ["d", "c", "a", "b", "e"]);
    assert_eq!(totals, [40, 10]);
    // A draw equal to a running sum takes that record: 10 takes b, then 10 of a(0), c(30)
    // takes c.
    let (out, totals) = order_with_draws(records.clone(), &[10, 10]);
    assert_eq!(targets(&out), ["d", "b", "c", "a", "e"]);
    assert_eq!(totals, [40, 30]);
    // 1 skips the weight-0 record: b; then 0 of a(0), c(30) takes a.
    let (out, _) = order_with_draws(records.clone(), &[1, 0]);
    assert_eq!(targets(&out), ["d", "b", "a", "c", "e"]);
    // A draw out of range counts as the total: the last record.
    let (out, _) = order_with_draws(records, &[1000, 1000]);
    assert_eq!(targets(&out), ["d", "c", "b", "a", "e"]);
    // All weights 0: the only draw possible is 0, answer order.
    let (out, totals) = order_with_draws(
        vec![srv(1, 0, "x"), srv(1, 0, "y"), srv(1, 0, "z")],
        &[0, 0],
    );
    assert_eq!(targets(&out), ["x", "y", "z"]);
    assert_eq!(totals, [0, 0]);
}

/// How many of `n` seeded orderings of `records` put `target` first.
fn first_count(records: &[SrvRecord], target: &str, n: u64) -> u64 {
    use rand::{Rng, SeedableRng};
    (0..n)
        .filter(|&seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let out = order_srv_with(records.to_vec(), &mut |total| rng.random_range(0..=total));
            assert_eq!(out.len(), records.len());
            out[0].target == target
        })
        .count() as u64
}

#[test]
fn srv_same_priority_weights_are_chances() {
    // 90/10, light listed first: heavy first in about 90% of 2 000 orderings (seeded, so the
    // count is the same every run; the bounds are wide so a change of generator still passes).
    let records = [srv(10, 10, "light"), srv(10, 90, "heavy")];
    let heavy = first_count(&records, "heavy", 2_000);
    assert!((1_600..=1_940).contains(&heavy), "heavy first {heavy}/2000");
    // Weight 0 beside weight 99: first with a chance of 1/100, not never.
    let records = [srv(10, 99, "big"), srv(10, 0, "zero")];
    let zero = first_count(&records, "zero", 2_000);
    assert!((5..=60).contains(&zero), "weight 0 first {zero}/2000");
    // Another priority is never mixed in: priority 1 always first whatever its weight.
    let records = [srv(2, 1000, "later"), srv(1, 0, "sooner")];
    assert_eq!(first_count(&records, "sooner", 200), 200);
}

#[test]
fn resolve_draws_srv_order_within_a_priority() {
    // Two front ends of equal weight: over 100 resolutions each comes first at least once
    // (a fixed order would fail; chance of a false failure 2 * 2^-100).
    let dns = FakeDns::default()
        .srv("_sips._tcp.contoso.test", 10, 50, 5061, "fe1.contoso.test")
        .srv("_sips._tcp.contoso.test", 10, 50, 5061, "fe2.contoso.test")
        .ip("fe1.contoso.test", "192.0.2.1")
        .ip("fe2.contoso.test", "192.0.2.2");
    let l = ServerLocator::new().with_dns(dns);
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let r = resolve(&l, LocateTarget::sips_domain("contoso.test")).unwrap();
        assert_eq!(r.len(), 2);
        firsts.insert(r[0].addr.to_string());
    }
    assert_eq!(
        firsts.into_iter().collect::<Vec<_>>(),
        ["192.0.2.1:5061", "192.0.2.2:5061"]
    );
}

#[test]
fn explicit_transport_skips_naptr() {
    let dns = FakeDns::default()
        .naptr("contoso.test", 1, 1, "SIPS+D2T", "_sips._tcp.contoso.test")
        .srv("_sip._tcp.contoso.test", 0, 0, 5070, "fe.contoso.test")
        .ip("fe.contoso.test", "192.0.2.1");
    let l = ServerLocator::new().with_dns(dns);
    let t = LocateTarget::parse_uri("sip:contoso.test;transport=tcp").unwrap();
    let r = resolve(&l, t).unwrap();
    assert_eq!(addrs(&r), vec![("192.0.2.1:5070".into(), Tcp)]);
    let l = l.with_transports(&[Tls]);
    let t = LocateTarget::parse_uri("sip:contoso.test;transport=tcp").unwrap();
    assert!(matches!(
        resolve(&l, t),
        Err(LocateError::UnsupportedTransport(_))
    ));
}

#[test]
fn a_records_with_default_port_last() {
    let dns = FakeDns::default().ip("contoso.test", "192.0.2.5");
    let l = ServerLocator::new().with_dns(dns);
    let r = resolve(&l, LocateTarget::sips_domain("contoso.test")).unwrap();
    assert_eq!(addrs(&r), vec![("192.0.2.5:5061".into(), Tls)]);
    let r = resolve(&l, LocateTarget::sip_domain("contoso.test")).unwrap();
    assert_eq!(addrs(&r), vec![("192.0.2.5:5060".into(), Udp)]);
    let l = l.with_transports(&[Tls, Tcp]);
    let r = resolve(&l, LocateTarget::sip_domain("contoso.test")).unwrap();
    assert_eq!(addrs(&r), vec![("192.0.2.5:5060".into(), Tcp)]);
}

#[test]
fn errors_are_typed() {
    // Nothing anywhere: NotFound.
    let l = ServerLocator::new().with_dns(FakeDns::default());
    assert_eq!(
        resolve(&l, LocateTarget::sips_domain("nowhere.test")),
        Err(LocateError::NotFound("nowhere.test".into()))
    );
    // DNS failing and nothing found: the DNS error.
    let l = ServerLocator::new().with_dns(FakeDns::default().fail("nowhere.test"));
    assert!(matches!(
        resolve(
            &l,
            LocateTarget::sips_domain("nowhere.test").with_port(5061)
        ),
        Err(LocateError::Dns(_))
    ));
    // NAPTR failing does not stop SRV.
    let dns = FakeDns::default()
        .fail("contoso.test")
        .srv("_sips._tcp.contoso.test", 0, 0, 5061, "fe.contoso.test")
        .ip("fe.contoso.test", "192.0.2.1");
    let l = ServerLocator::new().with_dns(dns);
    let r = resolve(&l, LocateTarget::sips_domain("contoso.test")).unwrap();
    assert_eq!(addrs(&r), vec![("192.0.2.1:5061".into(), Tls)]);
    // No DNS at all: overrides only.
    let l = ServerLocator::new().without_dns();
    assert_eq!(
        resolve(&l, LocateTarget::sips_domain("contoso.test")),
        Err(LocateError::NotFound("contoso.test".into()))
    );
    // sips: over UDP is refused.
    let t = LocateTarget::sips_domain("contoso.test").with_transport(Udp);
    assert!(matches!(
        resolve(&ServerLocator::new(), t),
        Err(LocateError::UnsupportedTransport(_))
    ));
}

#[test]
fn queries_follow_rfc_3263_steps() {
    let dns = Arc::new(FakeDns::default().ip("contoso.test", "192.0.2.5"));
    #[derive(Debug)]
    struct Shared(Arc<FakeDns>);
    impl DnsLookup for Shared {
        fn naptr<'a>(&'a self, n: &'a str) -> DnsFuture<'a, Vec<NaptrRecord>> {
            DnsLookup::naptr(&*self.0, n)
        }
        fn srv<'a>(&'a self, n: &'a str) -> DnsFuture<'a, Vec<SrvRecord>> {
            DnsLookup::srv(&*self.0, n)
        }
        fn ip<'a>(&'a self, n: &'a str) -> DnsFuture<'a, Vec<IpAddr>> {
            DnsLookup::ip(&*self.0, n)
        }
    }
    let l = ServerLocator::new().with_dns(Shared(dns.clone()));
    resolve(&l, LocateTarget::sip_domain("contoso.test")).unwrap();
    assert_eq!(
        *dns.asked.lock().unwrap(),
        vec![
            "NAPTR contoso.test",
            "SRV _sips._tcp.contoso.test",
            "SRV _sip._tcp.contoso.test",
            "SRV _sip._udp.contoso.test",
            "A contoso.test",
        ]
    );
}

#[test]
fn hickory_without_name_servers_fails_typed() {
    // The fallback configuration: no name servers, so no network is touched.
    let dns = HickoryDns::new();
    let _ = dns.resolver.set(
        hickory_resolver::Resolver::builder_with_config(
            hickory_resolver::config::ResolverConfig::new(),
            hickory_resolver::name_server::TokioConnectionProvider::default(),
        )
        .build(),
    );
    let l = ServerLocator::new().with_dns(dns);
    let r = resolve(&l, LocateTarget::sips_domain("contoso.test"));
    assert!(matches!(r, Err(LocateError::Dns(_))), "{r:?}");
}
