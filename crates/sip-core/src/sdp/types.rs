//! Typed views of the lines offer/answer interprets: `o=`, `c=`, `m=`, `t=`, `a=rtpmap`,
//! `a=fmtp`, direction attributes and generic attributes.
//!
//! Each type parses from a line value and `Display`s back to a line value (without `x=`).
//! Fields not needed for offer/answer stay text, so odd but harmless values survive.

use std::fmt;
use std::net::IpAddr;

use super::line::{check_text, check_token, fields, is_token, parse_decimal};
use super::SdpError;

/// The `o=` line: who made the session and which version of it this is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `<username>`, `-` when the creator has none.
    pub username: String,
    /// `<sess-id>`, kept as text: it is only ever compared and copied.
    pub session_id: String,
    /// `<sess-version>`, bumped by each new offer in a dialog (RFC 3264 §8).
    pub session_version: u64,
    /// `<nettype>`, `IN` in practice.
    pub net_type: String,
    /// `<addrtype>`, `IP4` or `IP6` in practice.
    pub addr_type: String,
    /// `<unicast-address>`: IPv4 or IPv6 text, or a fully qualified domain name.
    pub address: String,
}

impl Origin {
    /// An `IN` origin; the address type (`IP6` when the address holds a colon, else `IP4`)
    /// follows from `address`, which may be an IP address or an FQDN.
    pub fn new(
        username: impl Into<String>,
        session_id: impl Into<String>,
        session_version: u64,
        address: impl Into<String>,
    ) -> Origin {
        let address = address.into();
        Origin {
            username: username.into(),
            session_id: session_id.into(),
            session_version,
            net_type: "IN".into(),
            addr_type: addr_type_of(&address).into(),
            address,
        }
    }

    /// The address as an IP address, `None` when it is an FQDN.
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }

    /// Parses an `o=` value (what follows `o=`). `line` is used in errors.
    pub fn parse(value: &str, line: usize) -> Result<Origin, SdpError> {
        let bad = |why| SdpError::InvalidField {
            line,
            letter: 'o',
            why,
        };
        let mut f = fields(value);
        let mut next = |why| f.next().ok_or_else(|| bad(why));
        let username = next("missing username")?;
        let session_id = next("missing sess-id")?;
        let version = next("missing sess-version")?;
        let net_type = next("missing nettype")?;
        let addr_type = next("missing addrtype")?;
        let address = next("missing unicast-address")?;
        if f.next().is_some() {
            return Err(bad("more than six fields"));
        }
        let session_version = parse_decimal::<u64>(version)
            .ok_or_else(|| bad("sess-version is not a number"))?
            .ok_or(SdpError::NumberOutOfRange {
                line,
                field: "sess-version",
            })?;
        Ok(Origin {
            username: username.into(),
            session_id: session_id.into(),
            session_version,
            net_type: net_type.into(),
            addr_type: addr_type.into(),
            address: address.into(),
        })
    }

    pub(crate) fn validate(&self) -> Result<(), SdpError> {
        check_token(&self.username, "o= username")?;
        check_token(&self.session_id, "o= sess-id")?;
        check_token(&self.net_type, "o= nettype")?;
        check_token(&self.addr_type, "o= addrtype")?;
        check_token(&self.address, "o= unicast-address")
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.username,
            self.session_id,
            self.session_version,
            self.net_type,
            self.addr_type,
            self.address
        )
    }
}

fn addr_type_of(address: &str) -> &'static str {
    if address.contains(':') {
        "IP6"
    } else {
        "IP4"
    }
}

/// A `c=` line: where media is received (session default or per media section).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Connection {
    /// `<nettype>`, `IN` in practice.
    pub net_type: String,
    /// `<addrtype>`, `IP4` or `IP6` in practice.
    pub addr_type: String,
    /// The address without its `/ttl` or `/count` suffixes: IP text or an FQDN. For an
    /// address type other than `IP4`/`IP6` this is the whole field, slashes included.
    pub address: String,
    /// IPv4 multicast TTL (`addr/ttl`).
    pub ttl: Option<u32>,
    /// Number of multicast addresses (`addr/ttl/count` for IP4, `addr/count` for IP6).
    pub count: Option<u32>,
}

impl Connection {
    /// An `IN` unicast connection; the address type follows from `address` as in
    /// [`Origin::new`].
    pub fn new(address: impl Into<String>) -> Connection {
        let address = address.into();
        Connection {
            net_type: "IN".into(),
            addr_type: addr_type_of(&address).into(),
            address,
            ttl: None,
            count: None,
        }
    }

    /// The address as an IP address, `None` when it is an FQDN.
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }

    /// Parses a `c=` value (what follows `c=`). `line` is used in errors.
    pub fn parse(value: &str, line: usize) -> Result<Connection, SdpError> {
        let bad = |why| SdpError::InvalidField {
            line,
            letter: 'c',
            why,
        };
        let mut f = fields(value);
        let net_type = f.next().ok_or_else(|| bad("missing nettype"))?;
        let addr_type = f.next().ok_or_else(|| bad("missing addrtype"))?;
        let address = f.next().ok_or_else(|| bad("missing connection-address"))?;
        if f.next().is_some() {
            return Err(bad("more than three fields"));
        }
        let number = |s: &str, field| {
            parse_decimal::<u32>(s)
                .ok_or_else(|| bad("multicast suffix is not a number"))?
                .ok_or(SdpError::NumberOutOfRange { line, field })
        };
        let (address, ttl, count) = match addr_type {
            "IP4" => {
                let mut parts = address.split('/');
                let base = parts.next().unwrap_or_default();
                let ttl = parts.next().map(|s| number(s, "ttl")).transpose()?;
                let count = parts
                    .next()
                    .map(|s| number(s, "address count"))
                    .transpose()?;
                if parts.next().is_some() {
                    return Err(bad("too many '/' in IP4 address"));
                }
                (base, ttl, count)
            }
            "IP6" => {
                let mut parts = address.split('/');
                let base = parts.next().unwrap_or_default();
                let count = parts
                    .next()
                    .map(|s| number(s, "address count"))
                    .transpose()?;
                if parts.next().is_some() {
                    return Err(bad("too many '/' in IP6 address"));
                }
                (base, None, count)
            }
            _ => (address, None, None),
        };
        if address.is_empty() {
            return Err(bad("empty address"));
        }
        Ok(Connection {
            net_type: net_type.into(),
            addr_type: addr_type.into(),
            address: address.into(),
            ttl,
            count,
        })
    }

    pub(crate) fn validate(&self) -> Result<(), SdpError> {
        check_token(&self.net_type, "c= nettype")?;
        check_token(&self.addr_type, "c= addrtype")?;
        check_token(&self.address, "c= address")?;
        let interpreted = matches!(self.addr_type.as_str(), "IP4" | "IP6");
        if interpreted && self.address.contains('/') {
            return Err(SdpError::InvalidValue {
                what: "c= address",
                why: "put multicast suffixes in ttl and count",
            });
        }
        if (self.ttl.is_some() || self.count.is_some()) && !interpreted
            || (self.ttl.is_some() && self.addr_type == "IP6")
        {
            return Err(SdpError::InvalidValue {
                what: "c= address",
                why: "ttl is for IP4 only; count for IP4 and IP6 only",
            });
        }
        if self.count.is_some() && self.ttl.is_none() && self.addr_type == "IP4" {
            return Err(SdpError::InvalidValue {
                what: "c= address",
                why: "an IP4 address count needs a ttl",
            });
        }
        Ok(())
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.net_type, self.addr_type, self.address)?;
        if let Some(ttl) = self.ttl {
            write!(f, "/{ttl}")?;
        }
        if let Some(count) = self.count {
            write!(f, "/{count}")?;
        }
        Ok(())
    }
}

/// The `m=` line: media type, transport port, protocol and format list of one media section.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Media {
    /// `<media>`: `audio`, `video`, `message`, `application` or any other token.
    pub media_type: String,
    /// `<port>`; 0 rejects (or disables) the stream (RFC 3264 §6).
    pub port: u16,
    /// The optional `/<number of ports>`.
    pub port_count: Option<u16>,
    /// `<proto>`: `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, `sip` (Lync IM), …
    pub proto: String,
    /// `<fmt>` list as written: RTP payload type numbers, or e.g. `null` for Lync IM.
    pub formats: Vec<String>,
}

impl Media {
    /// A media line without a port count.
    pub fn new(
        media_type: impl Into<String>,
        port: u16,
        proto: impl Into<String>,
        formats: impl IntoIterator<Item = impl Into<String>>,
    ) -> Media {
        Media {
            media_type: media_type.into(),
            port,
            port_count: None,
            proto: proto.into(),
            formats: formats.into_iter().map(Into::into).collect(),
        }
    }

    /// Parses an `m=` value (what follows `m=`). `line` is used in errors.
    pub fn parse(value: &str, line: usize) -> Result<Media, SdpError> {
        let bad = |why| SdpError::InvalidField {
            line,
            letter: 'm',
            why,
        };
        let mut f = fields(value);
        let media_type = f.next().ok_or_else(|| bad("missing media type"))?;
        let port_field = f.next().ok_or_else(|| bad("missing port"))?;
        let proto = f.next().ok_or_else(|| bad("missing proto"))?;
        let formats: Vec<String> = f.map(String::from).collect();
        if formats.is_empty() {
            return Err(bad("missing fmt list"));
        }
        let (port, count) = match port_field.split_once('/') {
            Some((p, c)) => (p, Some(c)),
            None => (port_field, None),
        };
        let port = parse_decimal::<u16>(port)
            .ok_or_else(|| bad("port is not a number"))?
            .ok_or(SdpError::NumberOutOfRange {
                line,
                field: "port",
            })?;
        let port_count = count
            .map(|c| {
                parse_decimal::<u16>(c)
                    .ok_or_else(|| bad("port count is not a number"))?
                    .ok_or(SdpError::NumberOutOfRange {
                        line,
                        field: "port count",
                    })
            })
            .transpose()?;
        Ok(Media {
            media_type: media_type.into(),
            port,
            port_count,
            proto: proto.into(),
            formats,
        })
    }

    pub(crate) fn validate(&self) -> Result<(), SdpError> {
        check_token(&self.media_type, "m= media")?;
        check_token(&self.proto, "m= proto")?;
        if self.formats.is_empty() {
            return Err(SdpError::InvalidValue {
                what: "m= fmt list",
                why: "at least one format is required",
            });
        }
        for f in &self.formats {
            check_token(f, "m= fmt")?;
        }
        Ok(())
    }
}

impl fmt::Display for Media {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.media_type, self.port)?;
        if let Some(n) = self.port_count {
            write!(f, "/{n}")?;
        }
        write!(f, " {}", self.proto)?;
        for fmt in &self.formats {
            write!(f, " {fmt}")?;
        }
        Ok(())
    }
}

/// The `t=` line: start and stop times (NTP seconds; `0 0` for an unbounded session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Timing {
    /// `<start-time>`.
    pub start: u64,
    /// `<stop-time>`.
    pub stop: u64,
}

impl Timing {
    /// Parses a `t=` value (what follows `t=`). `line` is used in errors.
    pub fn parse(value: &str, line: usize) -> Result<Timing, SdpError> {
        let bad = |why| SdpError::InvalidField {
            line,
            letter: 't',
            why,
        };
        let mut f = fields(value);
        let mut time = |field| {
            let s = f.next().ok_or_else(|| bad("needs start and stop time"))?;
            parse_decimal::<u64>(s)
                .ok_or_else(|| bad("time is not a number"))?
                .ok_or(SdpError::NumberOutOfRange { line, field })
        };
        let start = time("start-time")?;
        let stop = time("stop-time")?;
        if f.next().is_some() {
            return Err(bad("more than two fields"));
        }
        Ok(Timing { start, stop })
    }
}

impl fmt::Display for Timing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.start, self.stop)
    }
}

/// An attribute line (`a=name` or `a=name:value`), borrowed from its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attribute<'a> {
    /// The attribute name (before the first `:`).
    pub name: &'a str,
    /// The value after the first `:`, `None` for a property attribute such as `a=sendrecv`.
    pub value: Option<&'a str>,
}

impl<'a> Attribute<'a> {
    /// Splits an `a=` value at its first colon. A property attribute's name does not
    /// include trailing whitespace, which some peers leave on the line (`a=sendrecv `); a
    /// value is kept as written (Lync candidates end with a space), and the line too.
    pub fn from_value(value: &'a str) -> Attribute<'a> {
        match value.split_once(':') {
            Some((name, v)) => Attribute {
                name,
                value: Some(v),
            },
            None => Attribute {
                name: value.trim_end_matches([' ', '\t']),
                value: None,
            },
        }
    }
}

/// Builds the value of an `a=` line from a name and an optional value, checking both.
pub(crate) fn attribute_value(name: &str, value: Option<&str>) -> Result<String, SdpError> {
    if !is_token(name) || name.contains(':') {
        return Err(SdpError::InvalidValue {
            what: "attribute name",
            why: "empty, or contains ':', a space or a control character",
        });
    }
    match value {
        Some(v) => {
            check_text(v, "attribute value")?;
            Ok(format!("{name}:{v}"))
        }
        None => Ok(name.to_owned()),
    }
}

/// `a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rtpmap {
    /// RTP payload type, 0–127.
    pub payload_type: u8,
    /// Encoding name as written (`PCMU`, `opus`, `x-msrta`, …).
    pub encoding_name: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Encoding parameters exactly as written (for audio, the channel count: `opus/48000/2`).
    pub encoding_parameters: Option<String>,
}

impl Rtpmap {
    /// A map without encoding parameters.
    pub fn new(payload_type: u8, encoding_name: impl Into<String>, clock_rate: u32) -> Rtpmap {
        Rtpmap {
            payload_type,
            encoding_name: encoding_name.into(),
            clock_rate,
            encoding_parameters: None,
        }
    }

    /// Sets the encoding parameters (the channel count for audio).
    pub fn with_parameters(mut self, parameters: impl Into<String>) -> Rtpmap {
        self.encoding_parameters = Some(parameters.into());
        self
    }

    /// The channel count, when the encoding parameters are a number.
    pub fn channels(&self) -> Option<u32> {
        self.encoding_parameters.as_deref()?.parse().ok()
    }

    /// Parses the value of an `a=rtpmap:` attribute (after the colon); `None` when it does not
    /// follow the grammar (such lines are kept as generic attributes).
    pub fn parse(value: &str) -> Option<Rtpmap> {
        let (pt, rest) = value.trim_start_matches(' ').split_once(' ')?;
        let payload_type = parse_decimal::<u8>(pt)??;
        if payload_type > 127 {
            return None;
        }
        let rest = rest.trim_matches(' ');
        let mut parts = rest.split('/');
        let encoding_name = parts.next().filter(|s| is_token(s))?;
        let clock_rate = parse_decimal::<u32>(parts.next()?)??;
        let encoding_parameters = parts.next().map(String::from);
        if parts.next().is_some() || encoding_parameters.as_deref().is_some_and(|p| !is_token(p)) {
            return None;
        }
        Some(Rtpmap {
            payload_type,
            encoding_name: encoding_name.into(),
            clock_rate,
            encoding_parameters,
        })
    }

    pub(crate) fn validate(&self) -> Result<(), SdpError> {
        if self.payload_type > 127 {
            return Err(SdpError::InvalidValue {
                what: "rtpmap payload type",
                why: "above 127",
            });
        }
        check_token(&self.encoding_name, "rtpmap encoding name")?;
        if self.encoding_name.contains('/') {
            return Err(SdpError::InvalidValue {
                what: "rtpmap encoding name",
                why: "contains '/'",
            });
        }
        if let Some(p) = &self.encoding_parameters {
            check_token(p, "rtpmap encoding parameters")?;
            // A '/' would add a fourth field: the line would no longer read back as this map.
            if p.contains('/') {
                return Err(SdpError::InvalidValue {
                    what: "rtpmap encoding parameters",
                    why: "contains '/'",
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for Rtpmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.payload_type, self.encoding_name, self.clock_rate
        )?;
        if let Some(p) = &self.encoding_parameters {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// `a=fmtp:<format> <format specific parameters>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fmtp {
    /// The format (payload type) the parameters apply to.
    pub format: String,
    /// The parameters as written (`0-16`, `useinbandfec=1;minptime=10`, …).
    pub parameters: String,
}

impl Fmtp {
    /// Parameters for one format.
    pub fn new(format: impl Into<String>, parameters: impl Into<String>) -> Fmtp {
        Fmtp {
            format: format.into(),
            parameters: parameters.into(),
        }
    }

    /// Parses the value of an `a=fmtp:` attribute (after the colon); `None` without a format.
    pub fn parse(value: &str) -> Option<Fmtp> {
        let value = value.trim_start_matches(' ');
        let (format, parameters) = value.split_once(' ').unwrap_or((value, ""));
        if !is_token(format) {
            return None;
        }
        Some(Fmtp {
            format: format.into(),
            parameters: parameters.into(),
        })
    }

    /// The parameters split at `;` into `(name, value)` pairs, trimmed (`name=value` or a
    /// bare `name`).
    pub fn params(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.parameters
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (p, None),
            })
    }

    pub(crate) fn validate(&self) -> Result<(), SdpError> {
        check_token(&self.format, "fmtp format")?;
        check_text(&self.parameters, "fmtp parameters")
    }
}

impl fmt::Display for Fmtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.parameters.is_empty() {
            write!(f, "{}", self.format)
        } else {
            write!(f, "{} {}", self.format, self.parameters)
        }
    }
}

/// Media direction attributes (RFC 3264 §5.1): a media-level one overrides the session-level
/// one; without either, a stream is `sendrecv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// `a=sendrecv`: send and receive (the default).
    #[default]
    SendRecv,
    /// `a=sendonly`: send only (e.g. putting the peer on hold).
    SendOnly,
    /// `a=recvonly`: receive only.
    RecvOnly,
    /// `a=inactive`: neither.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an attribute name stands for, `None` for other names.
    pub fn from_name(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The same stream seen from the other side (what an answer mirrors, RFC 3264 §6.1):
    /// `sendonly` and `recvonly` swap.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_parses_fqdn_ipv6_and_refuses_overflow() {
        let o = Origin::parse("bob 280744730 28977631 IN IP4 host.example.com", 2).unwrap();
        assert_eq!(o.address, "host.example.com");
        assert_eq!(o.ip(), None);
        assert_eq!(
            o.to_string(),
            "bob 280744730 28977631 IN IP4 host.example.com"
        );
        let o = Origin::parse("- 1 2 IN IP6 2001:db8::20", 2).unwrap();
        assert_eq!(o.ip(), Some("2001:db8::20".parse().unwrap()));
        assert_eq!(
            Origin::parse("- 1 +2 IN IP4 a", 2),
            Err(SdpError::InvalidField {
                line: 2,
                letter: 'o',
                why: "sess-version is not a number"
            })
        );
        assert!(Origin::parse("- 1 2 IN IP4", 2).is_err());
        assert!(Origin::parse("- 1 2 IN IP4 a b", 2).is_err());
        assert_eq!(Origin::new("-", "1", 1, "::1").addr_type, "IP6");
    }

    #[test]
    fn connection_suffixes_depend_on_the_address_type() {
        let c = Connection::parse("IN IP4 233.252.0.1/127", 1).unwrap();
        assert_eq!((c.ttl, c.count), (Some(127), None));
        let c = Connection::parse("IN IP6 ff00::1/2", 1).unwrap();
        assert_eq!((c.ttl, c.count), (None, Some(2)));
        let c = Connection::parse("ATM NSAP 47.0005/x", 1).unwrap();
        assert_eq!(c.address, "47.0005/x");
        assert!(Connection::parse("IN IP4 1.2.3.4/1/2/3", 1).is_err());
        assert!(Connection::parse("IN IP6 ::1/1/2", 1).is_err());
        assert!(Connection::parse("IN IP4 /5", 1).is_err());
        assert!(Connection::parse("IN IP4 1.2.3.4/x", 1).is_err());
        let mut c = Connection::new("192.0.2.1");
        c.count = Some(2);
        assert!(c.validate().is_err(), "IP4 count needs a ttl");
    }

    #[test]
    fn media_line_forms() {
        let m = Media::parse("audio 49170/2 RTP/AVP 0 8", 1).unwrap();
        assert_eq!(m.port_count, Some(2));
        assert_eq!(m.to_string(), "audio 49170/2 RTP/AVP 0 8");
        let m = Media::parse("message 5060 sip null", 1).unwrap();
        assert_eq!(m.formats, ["null"]);
        assert!(Media::parse("audio 49170 RTP/AVP", 1).is_err());
        assert!(Media::parse("audio x RTP/AVP 0", 1).is_err());
        assert_eq!(
            Media::parse("audio 1/70000 RTP/AVP 0", 1),
            Err(SdpError::NumberOutOfRange {
                line: 1,
                field: "port count"
            })
        );
    }

    #[test]
    fn rtpmap_and_fmtp() {
        let r = Rtpmap::parse("111 opus/48000/2").unwrap();
        assert_eq!(r.channels(), Some(2));
        assert_eq!(r.to_string(), "111 opus/48000/2");
        assert_eq!(Rtpmap::parse("31 LPC"), None);
        assert_eq!(Rtpmap::parse("128 X/8000"), None);
        assert_eq!(Rtpmap::parse("1 X/8000/2/3"), None);
        assert_eq!(Rtpmap::parse("1 /8000"), None);
        let f = Fmtp::parse("101 0-16").unwrap();
        assert_eq!((f.format.as_str(), f.parameters.as_str()), ("101", "0-16"));
        assert_eq!(Fmtp::parse("101").unwrap().to_string(), "101");
        assert_eq!(Fmtp::parse(""), None);
        let f = Fmtp::new("96", "profile-level-id=42e01f; packetization-mode=1;flag");
        assert_eq!(
            f.params().collect::<Vec<_>>(),
            [
                ("profile-level-id", Some("42e01f")),
                ("packetization-mode", Some("1")),
                ("flag", None)
            ]
        );
    }

    #[test]
    fn attributes_and_directions() {
        assert_eq!(
            Attribute::from_value("candidate:1 1 UDP 2 h 1 typ host"),
            Attribute {
                name: "candidate",
                value: Some("1 1 UDP 2 h 1 typ host")
            }
        );
        assert_eq!(Attribute::from_value("rtcp-mux").value, None);
        assert!(attribute_value("a b", None).is_err());
        assert!(attribute_value("a:b", None).is_err());
        assert!(attribute_value("x", Some("1\r\n")).is_err());
        for d in [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ] {
            assert_eq!(Direction::from_name(d.as_str()), Some(d));
            assert_eq!(d.reversed().reversed(), d);
        }
        assert_eq!(
            Timing::parse("0 0 0", 1).map(drop),
            Err(SdpError::InvalidField {
                line: 1,
                letter: 't',
                why: "more than two fields"
            })
        );
    }
}
