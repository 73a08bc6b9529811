//! Header names: the standard ones as an enum (compact forms mapped to long names, matched
//! case-insensitively), every other name kept verbatim by the message.

use crate::scan::word_of;

/// A header field name the codec knows, or [`HeaderName::Other`] for an extension header
/// (whose exact spelling the message keeps).
///
/// Parsing maps every compact form of RFC 3261 §7.3.3 and its extensions (`i m e l c f s k t
/// v o u r b x y a j d n`) to the long name, so `v:` and `Via:` are the same header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderName {
    /// `Accept`.
    Accept,
    /// `Accept-Contact` (compact `a`).
    AcceptContact,
    /// `Accept-Encoding`.
    AcceptEncoding,
    /// `Accept-Language`.
    AcceptLanguage,
    /// `Alert-Info`.
    AlertInfo,
    /// `Allow`.
    Allow,
    /// `Allow-Events` (compact `u`).
    AllowEvents,
    /// `Authentication-Info`.
    AuthenticationInfo,
    /// `Authorization`.
    Authorization,
    /// `Call-ID` (compact `i`).
    CallId,
    /// `Call-Info`.
    CallInfo,
    /// `Contact` (compact `m`).
    Contact,
    /// `Content-Disposition`.
    ContentDisposition,
    /// `Content-Encoding` (compact `e`).
    ContentEncoding,
    /// `Content-Language`.
    ContentLanguage,
    /// `Content-Length` (compact `l`).
    ContentLength,
    /// `Content-Type` (compact `c`).
    ContentType,
    /// `CSeq`.
    CSeq,
    /// `Date`.
    Date,
    /// `Error-Info`.
    ErrorInfo,
    /// `Event` (compact `o`).
    Event,
    /// `Expires`.
    Expires,
    /// `From` (compact `f`).
    From,
    /// `Identity` (compact `y`).
    Identity,
    /// `Identity-Info` (compact `n`).
    IdentityInfo,
    /// `In-Reply-To`.
    InReplyTo,
    /// `Max-Forwards`.
    MaxForwards,
    /// `Min-Expires`.
    MinExpires,
    /// `Min-SE`.
    MinSe,
    /// `MIME-Version`.
    MimeVersion,
    /// `Ms-Conversation-ID`.
    MsConversationId,
    /// `Organization`.
    Organization,
    /// `P-Asserted-Identity`.
    PAssertedIdentity,
    /// `P-Preferred-Identity`.
    PPreferredIdentity,
    /// `Path`.
    Path,
    /// `Priority`.
    Priority,
    /// `Proxy-Authenticate`.
    ProxyAuthenticate,
    /// `Proxy-Authorization`.
    ProxyAuthorization,
    /// `Proxy-Require`.
    ProxyRequire,
    /// `RAck`.
    RAck,
    /// `Reason`.
    Reason,
    /// `Record-Route`.
    RecordRoute,
    /// `Refer-To` (compact `r`).
    ReferTo,
    /// `Referred-By` (compact `b`).
    ReferredBy,
    /// `Reject-Contact` (compact `j`).
    RejectContact,
    /// `Reply-To`.
    ReplyTo,
    /// `Request-Disposition` (compact `d`).
    RequestDisposition,
    /// `Require`.
    Require,
    /// `Retry-After`.
    RetryAfter,
    /// `Route`.
    Route,
    /// `RSeq`.
    RSeq,
    /// `Server`.
    Server,
    /// `Service-Route`.
    ServiceRoute,
    /// `Session-Expires` (compact `x`).
    SessionExpires,
    /// `SIP-ETag`.
    SipEtag,
    /// `SIP-If-Match`.
    SipIfMatch,
    /// `Subject` (compact `s`).
    Subject,
    /// `Subscription-State`.
    SubscriptionState,
    /// `Supported` (compact `k`).
    Supported,
    /// `Timestamp`.
    Timestamp,
    /// `To` (compact `t`).
    To,
    /// `Unsupported`.
    Unsupported,
    /// `User-Agent`.
    UserAgent,
    /// `Via` (compact `v`).
    Via,
    /// `Warning`.
    Warning,
    /// `WWW-Authenticate`.
    WwwAuthenticate,
    /// Any other header; the message keeps its name as received.
    Other,
}

impl HeaderName {
    /// The canonical long name (`Other` has none: it is `""`).
    pub const fn as_str(self) -> &'static str {
        match self {
            HeaderName::Accept => "Accept",
            HeaderName::AcceptContact => "Accept-Contact",
            HeaderName::AcceptEncoding => "Accept-Encoding",
            HeaderName::AcceptLanguage => "Accept-Language",
            HeaderName::AlertInfo => "Alert-Info",
            HeaderName::Allow => "Allow",
            HeaderName::AllowEvents => "Allow-Events",
            HeaderName::AuthenticationInfo => "Authentication-Info",
            HeaderName::Authorization => "Authorization",
            HeaderName::CallId => "Call-ID",
            HeaderName::CallInfo => "Call-Info",
            HeaderName::Contact => "Contact",
            HeaderName::ContentDisposition => "Content-Disposition",
            HeaderName::ContentEncoding => "Content-Encoding",
            HeaderName::ContentLanguage => "Content-Language",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::CSeq => "CSeq",
            HeaderName::Date => "Date",
            HeaderName::ErrorInfo => "Error-Info",
            HeaderName::Event => "Event",
            HeaderName::Expires => "Expires",
            HeaderName::From => "From",
            HeaderName::Identity => "Identity",
            HeaderName::IdentityInfo => "Identity-Info",
            HeaderName::InReplyTo => "In-Reply-To",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::MinExpires => "Min-Expires",
            HeaderName::MinSe => "Min-SE",
            HeaderName::MimeVersion => "MIME-Version",
            HeaderName::MsConversationId => "Ms-Conversation-ID",
            HeaderName::Organization => "Organization",
            HeaderName::PAssertedIdentity => "P-Asserted-Identity",
            HeaderName::PPreferredIdentity => "P-Preferred-Identity",
            HeaderName::Path => "Path",
            HeaderName::Priority => "Priority",
            HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::RAck => "RAck",
            HeaderName::Reason => "Reason",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::ReferTo => "Refer-To",
            HeaderName::ReferredBy => "Referred-By",
            HeaderName::RejectContact => "Reject-Contact",
            HeaderName::ReplyTo => "Reply-To",
            HeaderName::RequestDisposition => "Request-Disposition",
            HeaderName::Require => "Require",
            HeaderName::RetryAfter => "Retry-After",
            HeaderName::Route => "Route",
            HeaderName::RSeq => "RSeq",
            HeaderName::Server => "Server",
            HeaderName::ServiceRoute => "Service-Route",
            HeaderName::SessionExpires => "Session-Expires",
            HeaderName::SipEtag => "SIP-ETag",
            HeaderName::SipIfMatch => "SIP-If-Match",
            HeaderName::Subject => "Subject",
            HeaderName::SubscriptionState => "Subscription-State",
            HeaderName::Supported => "Supported",
            HeaderName::Timestamp => "Timestamp",
            HeaderName::To => "To",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Via => "Via",
            HeaderName::Warning => "Warning",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            HeaderName::Other => "",
        }
    }

    /// The compact form, if the header has one.
    pub fn compact(self) -> Option<&'static str> {
        match self {
            HeaderName::AcceptContact => Some("a"),
            HeaderName::AllowEvents => Some("u"),
            HeaderName::CallId => Some("i"),
            HeaderName::Contact => Some("m"),
            HeaderName::ContentEncoding => Some("e"),
            HeaderName::ContentLength => Some("l"),
            HeaderName::ContentType => Some("c"),
            HeaderName::Event => Some("o"),
            HeaderName::From => Some("f"),
            HeaderName::Identity => Some("y"),
            HeaderName::IdentityInfo => Some("n"),
            HeaderName::ReferTo => Some("r"),
            HeaderName::ReferredBy => Some("b"),
            HeaderName::RejectContact => Some("j"),
            HeaderName::RequestDisposition => Some("d"),
            HeaderName::SessionExpires => Some("x"),
            HeaderName::Subject => Some("s"),
            HeaderName::Supported => Some("k"),
            HeaderName::To => Some("t"),
            HeaderName::Via => Some("v"),
            _ => None,
        }
    }

    /// Whether RFC 3261 §7.3.1 lets several values share one line, separated by commas
    /// (so repeated lines and comma lists give the same value list).
    pub fn is_list(self) -> bool {
        matches!(
            self,
            HeaderName::Accept
                | HeaderName::AcceptContact
                | HeaderName::AcceptEncoding
                | HeaderName::AcceptLanguage
                | HeaderName::AlertInfo
                | HeaderName::Allow
                | HeaderName::AllowEvents
                | HeaderName::CallInfo
                | HeaderName::Contact
                | HeaderName::ContentEncoding
                | HeaderName::ContentLanguage
                | HeaderName::ErrorInfo
                | HeaderName::InReplyTo
                | HeaderName::PAssertedIdentity
                | HeaderName::PPreferredIdentity
                | HeaderName::Path
                | HeaderName::ProxyRequire
                | HeaderName::Reason
                | HeaderName::RecordRoute
                | HeaderName::RejectContact
                | HeaderName::RequestDisposition
                | HeaderName::Require
                | HeaderName::Route
                | HeaderName::ServiceRoute
                | HeaderName::Supported
                | HeaderName::Unsupported
                | HeaderName::Via
                | HeaderName::Warning
        )
    }

    /// Looks a name up, case-insensitively, accepting compact forms. Unknown names, and
    /// names that are not tokens, give [`HeaderName::Other`].
    ///
    /// The comparison is exact for any bytes (only letters have their case folded), so a
    /// known name is also a valid one: the parser checks only unknown names for being
    /// tokens.
    #[inline]
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        let n = name.len();
        if n == 1 {
            // Every compact form is a letter: bit 5 folds exactly its two cases.
            return match name[0] | 0x20 {
                b'a' => HeaderName::AcceptContact,
                b'u' => HeaderName::AllowEvents,
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'e' => HeaderName::ContentEncoding,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                b'o' => HeaderName::Event,
                b'f' => HeaderName::From,
                b'y' => HeaderName::Identity,
                b'n' => HeaderName::IdentityInfo,
                b'r' => HeaderName::ReferTo,
                b'b' => HeaderName::ReferredBy,
                b'j' => HeaderName::RejectContact,
                b'd' => HeaderName::RequestDisposition,
                b'x' => HeaderName::SessionExpires,
                b's' => HeaderName::Subject,
                b'k' => HeaderName::Supported,
                b't' => HeaderName::To,
                b'v' => HeaderName::Via,
                _ => HeaderName::Other,
            };
        }
        if !(2..=MAX_NAME).contains(&n) {
            return HeaderName::Other;
        }
        // Open addressing on (length, first, last byte): one or two probes, then one
        // comparison.
        let mut i = slot(n, name[0] | 0x20, name[n - 1] | 0x20);
        while let Some((known, header)) = &LOOKUP[i] {
            if usize::from(known.len) == n && known.matches(name) {
                return *header;
            }
            i = (i + 1) % LOOKUP.len();
        }
        HeaderName::Other
    }
}

/// The longest long name (`P-Preferred-Identity` is 20 bytes), rounded up.
const MAX_NAME: usize = 24;

/// A long name in lower case, padded, with bit 5 set in `fold` where it has a letter: a
/// byte of a received name ORed with its `fold` byte equals the lower-case byte exactly
/// when it is that letter in either case, or the same digit or `-`.
#[derive(Clone, Copy)]
struct Known {
    lower: [u8; MAX_NAME],
    fold: [u8; MAX_NAME],
    len: u8,
}

impl Known {
    /// Does `name` (as long as this one, 2 to [`MAX_NAME`] bytes) spell this name? Words are
    /// loaded so that the last one ends at the name's end (it may overlap the one before).
    #[inline]
    fn matches(&self, name: &[u8]) -> bool {
        let word = |s: &[u8], i: usize| word_of(&s[i..i + 8]);
        fn half(s: &[u8], i: usize) -> u32 {
            let mut w = [0u8; 4];
            w.copy_from_slice(&s[i..i + 4]);
            u32::from_le_bytes(w)
        }
        let (lower, fold) = (&self.lower[..], &self.fold[..]);
        let n = name.len();
        if n >= 8 {
            let mut i = 0;
            while i + 8 < n {
                if word(name, i) | word(fold, i) != word(lower, i) {
                    return false;
                }
                i += 8;
            }
            word(name, n - 8) | word(fold, n - 8) == word(lower, n - 8)
        } else if n >= 4 {
            half(name, 0) | half(fold, 0) == half(lower, 0)
                && half(name, n - 4) | half(fold, n - 4) == half(lower, n - 4)
        } else {
            (0..n).all(|i| name[i] | fold[i] == lower[i])
        }
    }
}

/// Every name with a long form, for [`LOOKUP`].
pub(crate) const LONG_NAMES: [HeaderName; 66] = [
    HeaderName::Accept,
    HeaderName::AcceptContact,
    HeaderName::AcceptEncoding,
    HeaderName::AcceptLanguage,
    HeaderName::AlertInfo,
    HeaderName::Allow,
    HeaderName::AllowEvents,
    HeaderName::AuthenticationInfo,
    HeaderName::Authorization,
    HeaderName::CallId,
    HeaderName::CallInfo,
    HeaderName::Contact,
    HeaderName::ContentDisposition,
    HeaderName::ContentEncoding,
    HeaderName::ContentLanguage,
    HeaderName::ContentLength,
    HeaderName::ContentType,
    HeaderName::CSeq,
    HeaderName::Date,
    HeaderName::ErrorInfo,
    HeaderName::Event,
    HeaderName::Expires,
    HeaderName::From,
    HeaderName::Identity,
    HeaderName::IdentityInfo,
    HeaderName::InReplyTo,
    HeaderName::MaxForwards,
    HeaderName::MinExpires,
    HeaderName::MinSe,
    HeaderName::MimeVersion,
    HeaderName::MsConversationId,
    HeaderName::Organization,
    HeaderName::PAssertedIdentity,
    HeaderName::PPreferredIdentity,
    HeaderName::Path,
    HeaderName::Priority,
    HeaderName::ProxyAuthenticate,
    HeaderName::ProxyAuthorization,
    HeaderName::ProxyRequire,
    HeaderName::RAck,
    HeaderName::Reason,
    HeaderName::RecordRoute,
    HeaderName::ReferTo,
    HeaderName::ReferredBy,
    HeaderName::RejectContact,
    HeaderName::ReplyTo,
    HeaderName::RequestDisposition,
    HeaderName::Require,
    HeaderName::RetryAfter,
    HeaderName::Route,
    HeaderName::RSeq,
    HeaderName::Server,
    HeaderName::ServiceRoute,
    HeaderName::SessionExpires,
    HeaderName::SipEtag,
    HeaderName::SipIfMatch,
    HeaderName::Subject,
    HeaderName::SubscriptionState,
    HeaderName::Supported,
    HeaderName::Timestamp,
    HeaderName::To,
    HeaderName::Unsupported,
    HeaderName::UserAgent,
    HeaderName::Via,
    HeaderName::Warning,
    HeaderName::WwwAuthenticate,
];

const fn slot(len: usize, first: u8, last: u8) -> usize {
    (len * 31 + first as usize * 7 + last as usize * 3) % 256
}

const fn lookup_table() -> [Option<(Known, HeaderName)>; 256] {
    let mut t: [Option<(Known, HeaderName)>; 256] = [None; 256];
    let mut k = 0;
    while k < LONG_NAMES.len() {
        let b = LONG_NAMES[k].as_str().as_bytes();
        assert!(b.len() <= MAX_NAME);
        let mut known = Known {
            lower: [0; MAX_NAME],
            fold: [0; MAX_NAME],
            len: b.len() as u8,
        };
        let mut j = 0;
        while j < b.len() {
            known.lower[j] = b[j].to_ascii_lowercase();
            if b[j].is_ascii_alphabetic() {
                known.fold[j] = 0x20;
            }
            j += 1;
        }
        let mut i = slot(b.len(), known.lower[0], known.lower[b.len() - 1]);
        while t[i].is_some() {
            i = (i + 1) % 256;
        }
        t[i] = Some((known, LONG_NAMES[k]));
        k += 1;
    }
    t
}

/// Long names by [`slot`], built at compile time (about a quarter of the slots used).
static LOOKUP: [Option<(Known, HeaderName)>; 256] = lookup_table();

impl std::fmt::Display for HeaderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderName;

    #[test]
    fn every_name_round_trips_in_any_case() {
        // The lookup's list is every named variant, once, in declaration order.
        for (i, h) in super::LONG_NAMES.iter().enumerate() {
            assert_eq!(*h as usize, i, "{h:?}");
        }
        assert_eq!(super::LONG_NAMES.len(), HeaderName::Other as usize);
        for h in super::LONG_NAMES {
            assert_eq!(HeaderName::from_bytes(h.as_str().as_bytes()), h);
            assert_eq!(
                HeaderName::from_bytes(h.as_str().to_ascii_uppercase().as_bytes()),
                h
            );
            if let Some(c) = h.compact() {
                assert_eq!(HeaderName::from_bytes(c.as_bytes()), h);
                assert_eq!(HeaderName::from_bytes(c.to_ascii_uppercase().as_bytes()), h);
            }
        }
        assert_eq!(HeaderName::from_bytes(b"C%6Fntact"), HeaderName::Other);
        assert_eq!(
            HeaderName::from_bytes(b"MaX-fOrWaRdS"),
            HeaderName::MaxForwards
        );
        assert_eq!(HeaderName::from_bytes(b""), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"z"), HeaderName::Other);
    }

    #[test]
    fn all_twenty_compact_forms_are_known() {
        let n = "imelcfsktvourbxyajdn"
            .bytes()
            .filter(|c| HeaderName::from_bytes(&[*c]) != HeaderName::Other)
            .count();
        assert_eq!(n, 20);
    }
}
