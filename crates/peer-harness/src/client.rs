//! A tiny blocking SIP-over-TCP client for readiness probes and scripted exchanges: builds
//! and parses with `sip_core`, frames with [`sip_core::StreamFramer`], every read bounded
//! by a timeout. No transactions, no retransmissions (TCP), no DNS.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sip_core::auth::{Credentials, DigestClient};
use sip_core::{Frame, HeaderName, Limits, MessageBuilder, Method, SipMessage, StreamFramer};

use crate::error::{HarnessError, Result};
use crate::process::unique_token;

/// A SIP client over one TCP connection.
#[derive(Debug)]
pub struct SipTcpClient {
    stream: TcpStream,
    framer: StreamFramer,
    local: SocketAddr,
    remote: SocketAddr,
    cseq: u32,
    requests: VecDeque<SipMessage>,
    responses: VecDeque<SipMessage>,
}

/// The outcome of [`SipTcpClient::register`].
#[derive(Debug, Clone)]
pub struct Registration {
    /// The challenge (401), if the registrar sent one.
    pub challenge: Option<SipMessage>,
    /// The final response to the last REGISTER sent (200 when registered).
    pub response: SipMessage,
}

impl SipTcpClient {
    /// Connects to `remote` within `timeout`.
    pub fn connect(remote: SocketAddr, timeout: Duration) -> Result<SipTcpClient> {
        let stream = TcpStream::connect_timeout(&remote, timeout)
            .map_err(|e| HarnessError::io(format!("connecting to {remote}"), e))?;
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .map_err(|e| HarnessError::io("reading the local address", e))?;
        Ok(SipTcpClient {
            stream,
            framer: StreamFramer::new(Limits::default()),
            local,
            remote,
            cseq: 0,
            requests: VecDeque::new(),
            responses: VecDeque::new(),
        })
    }

    /// This side's address (what `Via` and `Contact` should carry).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// A `sip:` contact URI that routes back over this connection (Kamailio reuses an open
    /// TCP connection to the contact's address).
    pub fn contact_uri(&self, user: &str) -> String {
        format!("sip:{user}@{};transport=tcp", self.local)
    }

    /// Starts a request with Via (this connection, fresh branch), Max-Forwards, From (fresh
    /// tag), To, Call-ID (fresh) and CSeq (incremented per client) filled in. Add headers and
    /// a body, then [`build`](MessageBuilder::build).
    pub fn request(
        &mut self,
        method: Method,
        request_uri: &str,
        from: &str,
        to: &str,
    ) -> MessageBuilder {
        let call_id = format!("{}@peer-harness", unique_token());
        self.request_in_call(method, request_uri, from, to, &call_id)
    }

    /// As [`request`](Self::request) with a given Call-ID (for a REGISTER refresh or a
    /// retry after a challenge).
    pub fn request_in_call(
        &mut self,
        method: Method,
        request_uri: &str,
        from: &str,
        to: &str,
        call_id: &str,
    ) -> MessageBuilder {
        self.cseq += 1;
        let m = method.as_str().to_owned();
        SipMessage::request(method, Bytes::copy_from_slice(request_uri.as_bytes()))
            .header(
                HeaderName::Via,
                format!(
                    "SIP/2.0/TCP {};branch=z9hG4bK{}",
                    self.local,
                    unique_token()
                ),
            )
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, format!("<{from}>;tag={}", unique_token()))
            .header(HeaderName::To, format!("<{to}>"))
            .header(HeaderName::CallId, call_id.to_owned())
            .header(HeaderName::CSeq, format!("{} {m}", self.cseq))
    }

    /// Sends one message.
    pub fn send(&mut self, message: &SipMessage) -> Result<()> {
        self.stream
            .write_all(&message.to_bytes())
            .map_err(|e| HarnessError::io(format!("sending to {}", self.remote), e))
    }

    /// The next message from the peer (keep-alives are skipped), within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<SipMessage> {
        if let Some(r) = self.responses.pop_front() {
            return Ok(r);
        }
        if let Some(r) = self.requests.pop_front() {
            return Ok(r);
        }
        self.read_message(timeout)
    }

    fn read_message(&mut self, timeout: Duration) -> Result<SipMessage> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.framer.next_frame() {
                Ok(Some(Frame::Message(bytes))) => {
                    return SipMessage::parse_framed(bytes, self.framer.limits())
                        .map_err(|e| HarnessError::Sip(e.to_string()));
                }
                Ok(Some(_keepalive)) => continue,
                Ok(None) => {}
                Err(e) => return Err(HarnessError::Sip(e.to_string())),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HarnessError::Timeout {
                    what: format!("a SIP message from {}", self.remote),
                    waited: timeout,
                });
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| HarnessError::io("setting a read timeout", e))?;
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(HarnessError::io(
                        format!("reading from {}", self.remote),
                        std::io::Error::new(
                            ErrorKind::UnexpectedEof,
                            "connection closed by the peer",
                        ),
                    ))
                }
                Ok(n) => self.framer.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(HarnessError::io(format!("reading from {}", self.remote), e)),
            }
        }
    }

    /// The next request from the peer (e.g. a NOTIFY), within `timeout`; responses that
    /// arrive meanwhile are kept for [`recv`](Self::recv).
    pub fn recv_request(&mut self, timeout: Duration) -> Result<SipMessage> {
        if let Some(r) = self.requests.pop_front() {
            return Ok(r);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.read_message(left)?;
            if m.is_request() {
                return Ok(m);
            }
            self.responses.push_back(m);
        }
    }

    /// Sends `request` and returns its final response (1xx skipped), matched by Call-ID and
    /// CSeq, within `timeout`. Requests that arrive meanwhile are kept for
    /// [`recv_request`](Self::recv_request).
    pub fn transaction(&mut self, request: &SipMessage, timeout: Duration) -> Result<SipMessage> {
        let call_id = request
            .call_id()
            .map_err(|e| HarnessError::Sip(e.to_string()))?
            .to_vec();
        let cseq = request
            .header(HeaderName::CSeq)
            .map(|v| v.to_vec())
            .unwrap_or_default();
        self.send(request)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = match self.responses.pop_front() {
                Some(m) => m,
                None => self.read_message(left)?,
            };
            if m.is_request() {
                self.requests.push_back(m);
                continue;
            }
            let same = m.call_id().is_ok_and(|c| c == call_id.as_slice())
                && m.header(HeaderName::CSeq)
                    .is_some_and(|c| c == cseq.as_slice());
            if same && m.status().is_some_and(|s| s >= 200) {
                return Ok(m);
            }
        }
    }

    /// Sends `OPTIONS sip:HOST` (no user part: the front end itself) and returns the final
    /// response.
    pub fn options(&mut self, host: &str, timeout: Duration) -> Result<SipMessage> {
        let uri = format!("sip:{host}");
        let req = self
            .request(
                Method::Options,
                &uri,
                "sip:peer-harness@peer-harness.invalid",
                &uri,
            )
            .header(HeaderName::Accept, "application/sdp")
            .build()
            .map_err(|e| HarnessError::Sip(e.to_string()))?;
        self.transaction(&req, timeout)
    }

    /// Registers `sip:user@domain` with `contact` for `expires` seconds, answering one digest
    /// challenge with `password`. Returns the challenge and the final response; the caller
    /// checks the status (a wrong password ends in another 401 or a 403).
    pub fn register(
        &mut self,
        user: &str,
        domain: &str,
        password: &str,
        contact: &str,
        expires: u32,
        timeout: Duration,
    ) -> Result<Registration> {
        let aor = format!("sip:{user}@{domain}");
        let registrar = format!("sip:{domain}");
        let call_id = format!("{}@peer-harness", unique_token());
        let build = |c: &mut Self, auth: Option<(HeaderName, String)>| {
            let mut b = c
                .request_in_call(Method::Register, &registrar, &aor, &aor, &call_id)
                .header(HeaderName::Contact, format!("<{contact}>"))
                .header(HeaderName::Expires, expires.to_string());
            if let Some((name, value)) = auth {
                b = b.header(name, value);
            }
            b.build().map_err(|e| HarnessError::Sip(e.to_string()))
        };
        let first = build(self, None)?;
        let response = self.transaction(&first, timeout)?;
        if !matches!(response.status(), Some(401 | 407)) {
            return Ok(Registration {
                challenge: None,
                response,
            });
        }
        // sip-core's digest client answers, so every registration here also tests it
        // against a real registrar.
        let mut digest = DigestClient::new(Credentials::new(user, password));
        let answers = digest
            .handle_challenge(&response, &first)
            .map_err(|e| HarnessError::Sip(format!("answering the challenge: {e}")))?;
        let answer = answers
            .into_iter()
            .next()
            .ok_or_else(|| HarnessError::Sip("no digest answer".into()))?;
        let second = build(self, Some((answer.name, answer.value)))?;
        let last = self.transaction(&second, timeout)?;
        Ok(Registration {
            challenge: Some(response),
            response: last,
        })
    }
}

/// A one-line summary of a response (`200 OK`) for assertions and errors.
pub fn status_line(m: &SipMessage) -> String {
    match m.status() {
        Some(s) => format!(
            "{s} {}",
            String::from_utf8_lossy(m.reason().unwrap_or_default())
        ),
        None => format!(
            "request {}",
            m.method()
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default()
        ),
    }
}
