//! Who is homed where: the deployment's [`Topology`] and the addresses it classifies.
//!
//! A middle-tier application may do for a user of its home deployment what it may not do
//! for a federated user (register as them, publish their presence, receive their calls).
//! The difference lives in the type of the address: [`Address<OnPremises>`] or
//! [`Address<Federated>`]. Only [`Topology::classify`] makes them from a URI that arrives at
//! run time; configuration and tests use the explicit, greppable
//! [`Address::assume_on_premises`] and [`Address::assume_federated`].
//!
//! Homing, not the domain name, decides: in a hybrid deployment (one SIP domain, some users
//! homed in the cloud) a cloud-homed user of a home domain is [`Federated`], because the
//! application reaches them through the edge exactly as it reaches another company.
//!
//! # Telephone numbers
//!
//! A `tel:` URI is [`OnPremises`]: the home deployment's PSTN gateway (Mediation Server)
//! places the call, never the federation edge. A SIP URI with `user=phone` is classified by
//! its host like any other SIP URI: `sip:+14255550100@fabrikam.test;user=phone` is a number
//! that the fabrikam deployment serves, so it is federated.

use sip_core::uri::{Host, Uri};
// foldhash (seeded per set) instead of SipHash: classification runs for every message.
use foldhash::{HashMap, HashSet, HashSetExt};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

mod sealed {
    /// Keeps [`Homing`](super::Homing) closed: only this crate's markers implement it.
    pub trait Sealed {}
}

/// Where a party is homed, as a type. Sealed: the only homings are [`OnPremises`] and
/// [`Federated`].
pub trait Homing: sealed::Sealed + fmt::Debug + Send + Sync + 'static {
    /// A short name for logs (`on-premises`, `federated`).
    const NAME: &'static str;
}

/// Marker: homed on the application's own deployment (the front end it is trusted by).
/// Uninhabited: it exists only as a type parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnPremises {}

/// Marker: homed elsewhere, reached through the federation edge (another company, a cloud
/// tenant, a cloud-homed user of a hybrid domain). Uninhabited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Federated {}

impl sealed::Sealed for OnPremises {}
impl sealed::Sealed for Federated {}
impl Homing for OnPremises {
    const NAME: &'static str = "on-premises";
}
impl Homing for Federated {
    const NAME: &'static str = "federated";
}

/// A SIP address whose homing is known. Built only by [`Topology::classify`] or the
/// `assume_*` escape hatches, so holding an `Address<OnPremises>` is proof that the
/// topology said so.
#[derive(PartialEq, Eq, Hash)]
pub struct Address<H: Homing> {
    /// URI, decoded user and lower-cased domain in one allocation (an address is held per
    /// conversation and per request: one allocation, not three).
    buf: Box<str>,
    user_at: u32,
    domain_at: u32,
    has_user: bool,
    _homing: PhantomData<fn() -> H>,
}

// By hand: a derive would require `H: Clone`, and generic code over `H: Homing` should
// clone addresses without that bound.
impl<H: Homing> Clone for Address<H> {
    fn clone(&self) -> Self {
        Address {
            buf: self.buf.clone(),
            user_at: self.user_at,
            domain_at: self.domain_at,
            has_user: self.has_user,
            _homing: PhantomData,
        }
    }
}

impl<H: Homing> fmt::Debug for Address<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address<{}>({})", H::NAME, self.uri())
    }
}

impl<H: Homing> fmt::Display for Address<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.uri())
    }
}

impl<H: Homing> Address<H> {
    /// The URI as given (`sip:alice@contoso.test`, `tel:+14255550100`).
    pub fn uri(&self) -> &str {
        self.buf.get(..self.user_at as usize).unwrap_or_default()
    }
    /// The user part, decoded (the number of a `tel:` URI).
    pub fn user(&self) -> Option<&str> {
        self.has_user
            .then(|| self.buf.get(self.user_at as usize..self.domain_at as usize))
            .flatten()
    }
    /// The domain, lower-cased, without a trailing dot, an internationalised name in its
    /// ASCII form (empty for `tel:`).
    pub fn domain(&self) -> &str {
        self.buf.get(self.domain_at as usize..).unwrap_or_default()
    }
    /// The homing's name (`on-premises` or `federated`).
    pub fn homing(&self) -> &'static str {
        H::NAME
    }

    fn build(uri: &str) -> Result<Address<H>, TopologyError> {
        Ok(Address::from_parts(uri, &parts_of(uri)?))
    }

    /// One allocation: the URI, the decoded user and the lower-cased domain side by side.
    fn from_parts(uri: &str, parts: &Parts<'_>) -> Address<H> {
        let user = parts.user.as_deref().unwrap_or("");
        let mut buf = String::with_capacity(uri.len() + user.len() + parts.domain.len());
        buf.push_str(uri);
        buf.push_str(user);
        buf.push_str(&parts.domain);
        // A URI past 4 GiB cannot have been parsed above (sip-core's limits), so the
        // offsets fit; saturating keeps the accessors panic-free regardless.
        let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Address {
            user_at: at(uri.len()),
            domain_at: at(uri.len() + user.len()),
            has_user: parts.user.is_some(),
            buf: buf.into_boxed_str(),
            _homing: PhantomData,
        }
    }
}

impl Address<OnPremises> {
    /// Escape hatch for configuration and tests: declares `uri` on-premises without asking
    /// a [`Topology`]. Prefer [`Topology::classify`] for anything that arrives at run time.
    pub fn assume_on_premises(uri: &str) -> Result<Address<OnPremises>, TopologyError> {
        Address::build(uri)
    }
}

impl Address<Federated> {
    /// Escape hatch for configuration and tests: declares `uri` federated without asking a
    /// [`Topology`].
    pub fn assume_federated(uri: &str) -> Result<Address<Federated>, TopologyError> {
        Address::build(uri)
    }
}

/// An address with its homing decided at run time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Homed {
    /// A user (or number) of the home deployment.
    OnPremises(Address<OnPremises>),
    /// A party reached through the federation edge.
    Federated(Address<Federated>),
}

impl Homed {
    /// The URI, whatever the homing.
    pub fn uri(&self) -> &str {
        match self {
            Homed::OnPremises(a) => a.uri(),
            Homed::Federated(a) => a.uri(),
        }
    }
    /// Is the party federated?
    pub fn is_federated(&self) -> bool {
        matches!(self, Homed::Federated(_))
    }
    /// The address, if the party is of the home deployment: what an API that acts only for
    /// on-premises users takes, without a `match` at each call.
    ///
    /// ```
    /// # use collaboration_platform::Topology;
    /// let topology = Topology::new(["contoso.test"]);
    /// let alice = topology.classify("sip:alice@contoso.test").unwrap();
    /// assert_eq!(alice.on_premises().map(|a| a.uri()), Some("sip:alice@contoso.test"));
    /// assert!(alice.federated().is_none());
    /// ```
    pub fn on_premises(&self) -> Option<&Address<OnPremises>> {
        match self {
            Homed::OnPremises(a) => Some(a),
            Homed::Federated(_) => None,
        }
    }
    /// The address, if the party is reached through the federation edge.
    pub fn federated(&self) -> Option<&Address<Federated>> {
        match self {
            Homed::Federated(a) => Some(a),
            Homed::OnPremises(_) => None,
        }
    }
}

/// Why a URI could not be classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// The text is not a URI sip-core accepts.
    #[error("not a valid URI: {0}")]
    InvalidUri(sip_core::ParseError),
    /// Only `sip:`, `sips:` and `tel:` parties can be reached.
    #[error("URI scheme {0} cannot be reached")]
    UnsupportedScheme(String),
    /// The request would act as a party that is not homed on-premises (REGISTER for it,
    /// PUBLISH its presence): the application may do that only for home users.
    #[error("{0} is not homed on-premises: the application cannot act for it")]
    NotOnPremises(String),
    /// The domain is a federation partner the deployment blocks.
    #[error("federation with {0} is blocked")]
    Blocked(String),
    /// The deployment federates only with listed partners, and this domain is not one.
    #[error("{0} is not an allowed federation partner")]
    NotAllowed(String),
}

/// A directory that knows which users of the home domains are homed in the cloud (hybrid
/// deployments). Looked up by user, not by domain: one domain holds both kinds.
pub trait HomingDirectory: Send + Sync {
    /// Is `user@domain` (user part decoded and lower-cased, domain lower-cased and, for an
    /// internationalised name, in its ASCII form: `xn--bcher-kva.example`) homed in the
    /// cloud? The user is given lower-cased because a directory of people knows no case: a
    /// lookup that missed `Carol` for `carol` would let a cloud-homed user pass for an
    /// on-premises one, so keys must be compared lower-cased too.
    fn is_cloud_homed(&self, user: &str, domain: &str) -> bool;
}

/// A fixed list of cloud-homed users, for configuration (`--online-user`) and tests.
#[derive(Debug, Clone, Default)]
pub struct StaticDirectory {
    /// Users by domain: looked up with borrowed text, no key is built per request.
    users: HashMap<String, HashSet<String>>,
}

impl StaticDirectory {
    /// An empty directory: nobody is cloud-homed.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a cloud-homed user by SIP URI (`sip:bob@contoso.test`).
    pub fn with_user(mut self, uri: &str) -> Result<Self, TopologyError> {
        let p = parts_of(uri)?;
        self.users
            .entry(p.domain.into_owned())
            .or_default()
            .insert(lower(p.user.as_deref().unwrap_or_default()).into_owned());
        Ok(self)
    }
}

impl HomingDirectory for StaticDirectory {
    fn is_cloud_homed(&self, user: &str, domain: &str) -> bool {
        self.users.get(domain).is_some_and(|u| u.contains(user))
    }
}

/// Which federated deployments the application may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FederationPolicy {
    /// Any domain not blocked (open federation).
    #[default]
    Open,
    /// Only the listed domains (compared without case or a trailing dot, an
    /// internationalised name in either form: `bücher.example` is `xn--bcher-kva.example`).
    AllowList(HashSet<String>),
}

/// The deployment as the application sees it: home domains, cloud-homed users of those
/// domains, and federation partners allowed or blocked.
///
/// Domains, configured or received, are compared as DNS names: without case, without the
/// trailing dot of an absolute name, and an internationalised name in its ASCII form, so
/// a partner blocked as `bücher.example` is blocked when a peer writes
/// `xn--bcher-kva.example`, and the other way round. A configured entry with non-ASCII
/// text that is not a valid domain name (IDNA) matches nothing a peer can send.
#[derive(Clone)]
pub struct Topology {
    home_domains: HashSet<String>,
    directory: Arc<dyn HomingDirectory>,
    policy: FederationPolicy,
    blocked: HashSet<String>,
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("home_domains", &self.home_domains)
            .field("policy", &self.policy)
            .field("blocked", &self.blocked)
            .finish_non_exhaustive()
    }
}

impl Topology {
    /// A topology with these home domains, no cloud-homed users and open federation.
    pub fn new<I, S>(home_domains: I) -> Topology
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Topology {
            home_domains: home_domains
                .into_iter()
                .map(|d| domain_key(d.as_ref()).into_owned())
                .collect(),
            directory: Arc::new(StaticDirectory::new()),
            policy: FederationPolicy::Open,
            blocked: HashSet::new(),
        }
    }

    /// Uses `directory` to find cloud-homed users of the home domains (hybrid).
    pub fn with_directory(mut self, directory: Arc<dyn HomingDirectory>) -> Topology {
        self.directory = directory;
        self
    }

    /// Sets which federated domains may be reached.
    pub fn with_policy(mut self, policy: FederationPolicy) -> Topology {
        self.policy = match policy {
            FederationPolicy::AllowList(domains) => FederationPolicy::AllowList(
                domains.iter().map(|d| domain_key(d).into_owned()).collect(),
            ),
            open => open,
        };
        self
    }

    /// Blocks a federated domain (takes precedence over the policy).
    pub fn block(mut self, domain: &str) -> Topology {
        self.blocked.insert(domain_key(domain).into_owned());
        self
    }

    /// Is `domain` one of the home domains?
    pub fn is_home_domain(&self, domain: &str) -> bool {
        self.home_domains.contains(&*domain_key(domain))
    }

    /// Decides where the party at `uri` is homed (see the module doc for `tel:` and
    /// `user=phone`). A federated domain that is blocked, or not allowed, is an error:
    /// nothing is ever sent to it.
    pub fn classify(&self, uri: &str) -> Result<Homed, TopologyError> {
        let parts = parts_of(uri)?;
        if parts.is_tel {
            return Ok(Homed::OnPremises(Address::from_parts(uri, &parts)));
        }
        let domain = &*parts.domain;
        if self.home_domains.contains(domain) {
            let user = lower(parts.user.as_deref().unwrap_or(""));
            return Ok(if self.directory.is_cloud_homed(&user, domain) {
                Homed::Federated(Address::from_parts(uri, &parts))
            } else {
                Homed::OnPremises(Address::from_parts(uri, &parts))
            });
        }
        if self.blocked.contains(domain) {
            return Err(TopologyError::Blocked(domain.to_string()));
        }
        if let FederationPolicy::AllowList(allowed) = &self.policy {
            if !allowed.contains(domain) {
                return Err(TopologyError::NotAllowed(domain.to_string()));
            }
        }
        Ok(Homed::Federated(Address::from_parts(uri, &parts)))
    }
}

/// `user@domain` of a URI, user decoded, both lower-cased: what names one party whatever
/// the URI's parameters and case (`None` if the topology cannot read the URI).
pub(crate) fn party_key(uri: &str) -> Option<String> {
    let p = parts_of(uri).ok()?;
    Some(party_key_of(p.user.as_deref(), &p.domain))
}

/// [`party_key`] from a user and domain already taken apart.
pub(crate) fn party_key_of(user: Option<&str>, domain: &str) -> String {
    format!("{}@{}", user.unwrap_or(""), domain).to_ascii_lowercase()
}

/// A URI's user (decoded) and domain (lower-cased), borrowed from the URI when it already
/// is in that form: classification runs for every incoming request.
struct Parts<'a> {
    user: Option<Cow<'a, str>>,
    domain: Cow<'a, str>,
    is_tel: bool,
}

/// `s` lower-cased, copied only when it has upper-case letters.
fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|c| c.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// A domain as the topology compares it: lower-cased, without the trailing dot of an
/// absolute name (`blocked.test.` is `blocked.test` to DNS, and got past the block list
/// as another domain), and an internationalised name in its ASCII form (`bücher.example`
/// is `xn--bcher-kva.example`, the form a peer sends: IDNA, UTS 46 mapping, which also
/// folds the case of non-ASCII letters). Copied only when it changes.
///
/// Text with non-ASCII characters that is not a valid domain name is kept lower-cased as
/// given: it can only ever match the same text, never a name a peer sends (the APIs that
/// take domains have no error to return).
pub(crate) fn domain_key(d: &str) -> Cow<'_, str> {
    if !d.is_ascii() {
        let ascii = match idna::domain_to_ascii_cow(d.as_bytes(), idna::AsciiDenyList::EMPTY) {
            Ok(a) => a.into_owned(),
            Err(_) => d.to_lowercase(),
        };
        // The mapping makes an ideographic full stop (`。`) a dot: strip it after.
        return Cow::Owned(match ascii.strip_suffix('.') {
            Some(relative) if !relative.is_empty() => relative.to_string(),
            _ => ascii,
        });
    }
    match d.strip_suffix('.') {
        Some(relative) if !relative.is_empty() => lower(relative),
        _ => lower(d),
    }
}

/// `b` as text, copied only when it is not UTF-8.
fn text(b: Cow<'_, [u8]>) -> Cow<'_, str> {
    match b {
        Cow::Borrowed(b) => String::from_utf8_lossy(b),
        Cow::Owned(v) => Cow::Owned(String::from_utf8_lossy(&v).into_owned()),
    }
}

fn parts_of(uri: &str) -> Result<Parts<'_>, TopologyError> {
    let parsed = Uri::parse(uri.trim().as_bytes()).map_err(TopologyError::InvalidUri)?;
    match parsed {
        Uri::Sip(s) => Ok(Parts {
            user: s.user().map(text),
            domain: match s.host() {
                Host::Domain(d) => domain_key(d),
                other => Cow::Owned(other.to_string()),
            },
            is_tel: false,
        }),
        Uri::Tel(t) => Ok(Parts {
            user: Some(Cow::Borrowed(t.number())),
            domain: Cow::Borrowed(""),
            is_tel: true,
        }),
        other => Err(TopologyError::UnsupportedScheme(other.scheme().to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        let dir = StaticDirectory::new()
            .with_user("sip:carol@contoso.test")
            .unwrap();
        Topology::new(["contoso.test", "Contoso.Example"])
            .with_directory(Arc::new(dir))
            .block("blocked.test")
    }

    #[test]
    fn home_users_are_on_premises() {
        let h = topology().classify("sip:alice@CONTOSO.test").unwrap();
        let Homed::OnPremises(a) = h else {
            panic!("{h:?}")
        };
        assert_eq!((a.user(), a.domain()), (Some("alice"), "contoso.test"));
        assert!(matches!(
            topology().classify("sips:bob@contoso.example;transport=tls"),
            Ok(Homed::OnPremises(_))
        ));
    }

    #[test]
    fn cloud_homed_users_of_a_home_domain_are_federated() {
        let h = topology().classify("sip:carol@contoso.test").unwrap();
        assert!(h.is_federated());
        // In any case of the user part (or of the directory entry): failing to find her
        // would treat a cloud-homed user as on-premises.
        for uri in [
            "sip:Carol@contoso.test",
            "sip:CAROL@Contoso.Test",
            "sip:c%61rol@contoso.test",
        ] {
            assert!(topology().classify(uri).unwrap().is_federated(), "{uri}");
        }
        let upper = Topology::new(["contoso.test"]).with_directory(Arc::new(
            StaticDirectory::new()
                .with_user("sip:Dave@contoso.test")
                .unwrap(),
        ));
        assert!(upper
            .classify("sip:dave@contoso.test")
            .unwrap()
            .is_federated());
        assert!(!upper
            .classify("sip:erin@contoso.test")
            .unwrap()
            .is_federated());
    }

    #[test]
    fn other_domains_are_federated_unless_blocked_or_not_allowed() {
        assert!(topology()
            .classify("sip:bob@fabrikam.test")
            .unwrap()
            .is_federated());
        assert_eq!(
            topology().classify("sip:x@Blocked.test"),
            Err(TopologyError::Blocked("blocked.test".into()))
        );
        let t = topology().with_policy(FederationPolicy::AllowList(
            ["fabrikam.test".to_string()].into_iter().collect(),
        ));
        assert!(t.classify("sip:bob@fabrikam.test").unwrap().is_federated());
        assert_eq!(
            t.classify("sip:eve@tailspin.test"),
            Err(TopologyError::NotAllowed("tailspin.test".into()))
        );
    }

    /// An absolute name (trailing dot) is the same domain to DNS: it is blocked, allowed,
    /// home and cloud-homed exactly as the relative one. Before, `blocked.test.` got past
    /// the block list.
    #[test]
    fn a_trailing_dot_names_the_same_domain() {
        assert_eq!(
            topology().classify("sip:eve@blocked.test."),
            Err(TopologyError::Blocked("blocked.test".into()))
        );
        let t = topology().with_policy(FederationPolicy::AllowList(
            ["Fabrikam.test.".to_string()].into_iter().collect(),
        ));
        assert!(t.classify("sip:bob@fabrikam.test").unwrap().is_federated());
        assert!(t.classify("sip:bob@fabrikam.test.").unwrap().is_federated());
        assert!(topology()
            .classify("sip:carol@contoso.test.")
            .unwrap()
            .is_federated());
        assert!(!topology()
            .classify("sip:alice@CONTOSO.test.")
            .unwrap()
            .is_federated());
        let dotted = Topology::new(["contoso.test."]).block("Blocked.Test.");
        assert!(dotted.is_home_domain("contoso.test"));
        assert_eq!(
            dotted.classify("sip:eve@blocked.test"),
            Err(TopologyError::Blocked("blocked.test".into()))
        );
    }

    /// An internationalised domain is one domain in either spelling: configured in Unicode
    /// (`bücher.example`, any case) it is the `xn--bcher-kva.example` a peer writes on the
    /// wire, and the other way round. Before, a partner blocked in Unicode got past the
    /// block list, and one allowed in Unicode was refused.
    #[test]
    fn an_internationalised_domain_matches_in_either_form() {
        let wire = "sip:eve@xn--bcher-kva.example";
        for blocked in ["bücher.example", "BÜCHER.Example.", "xn--bcher-kva.example"] {
            let t = Topology::new(["contoso.test"]).block(blocked);
            for uri in [wire, "sip:eve@XN--BCHER-KVA.example."] {
                assert_eq!(
                    t.classify(uri),
                    Err(TopologyError::Blocked("xn--bcher-kva.example".into())),
                    "{blocked} then {uri}"
                );
            }
        }
        let allowed = Topology::new(["contoso.test"]).with_policy(FederationPolicy::AllowList(
            ["Bücher.example".to_string()].into_iter().collect(),
        ));
        assert!(allowed.classify(wire).unwrap().is_federated());
        assert_eq!(
            allowed.classify("sip:eve@tailspin.test"),
            Err(TopologyError::NotAllowed("tailspin.test".into()))
        );
        let home = Topology::new(["bücher.example"]).with_directory(Arc::new(
            StaticDirectory::new()
                .with_user("sip:carol@xn--bcher-kva.example")
                .unwrap(),
        ));
        assert!(home.is_home_domain("xn--bcher-kva.example"));
        assert!(home.is_home_domain("Bücher.Example."));
        assert!(Topology::new(["xn--bcher-kva.example"]).is_home_domain("bücher.example"));
        // A SIP URI's host is ASCII (RFC 3261 hostname): a Unicode one is not read at all.
        assert!(matches!(
            home.classify("sip:alice@bücher.example"),
            Err(TopologyError::InvalidUri(_))
        ));
        let alice = home.classify("sip:alice@xn--bcher-kva.example").unwrap();
        let Homed::OnPremises(a) = alice else {
            panic!("{alice:?}")
        };
        assert_eq!(a.domain(), "xn--bcher-kva.example");
        assert!(home
            .classify("sip:carol@xn--bcher-kva.example")
            .unwrap()
            .is_federated());
        // A name the mapping folds to a dot (ideographic full stop) is absolute too.
        assert!(Topology::new(["bücher.example\u{3002}"]).is_home_domain("xn--bcher-kva.example"));
    }

    /// Non-ASCII text that is not a domain name (IDNA refuses it) is kept as given,
    /// lower-cased: it matches nothing a peer can write, and makes nothing panic.
    #[test]
    fn an_entry_that_is_not_a_domain_matches_nothing_on_the_wire() {
        let t = Topology::new(["contoso.test"]).block("b\u{fffd}d.example");
        assert!(t.classify("sip:eve@bd.example").unwrap().is_federated());
        assert!(t.classify("sip:eve@xn--bd-2n3a.example").is_ok());
        assert!(!Topology::new(["\u{fffd}"]).is_home_domain(""));
    }

    #[test]
    fn numbers() {
        assert!(matches!(
            topology().classify("tel:+14255550100"),
            Ok(Homed::OnPremises(_))
        ));
        assert!(topology()
            .classify("sip:+14255550100@fabrikam.test;user=phone")
            .unwrap()
            .is_federated());
        assert!(matches!(
            topology().classify("sip:+14255550100@contoso.test;user=phone"),
            Ok(Homed::OnPremises(_))
        ));
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            topology().classify("http://contoso.test/"),
            Err(TopologyError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            topology().classify("sip:bad host"),
            Err(TopologyError::InvalidUri(_))
        ));
    }
}
