//! A tap on the wire: every SIP message the platform sends or receives, as bytes, for
//! recorders such as the conversation crate's ladder diagrams or an application's audit log
//! ([`WireLog`] keeps the last messages whole).
//!
//! The observer runs on the platform's driver task, so it must be quick (copy what it needs
//! and return); the bytes are shared, not copied, when handed over.

use bytes::Bytes;
use std::net::SocketAddr;

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireDirection {
    /// The platform sent it to `remote`.
    Sent,
    /// The platform received it from `remote`.
    Received,
}

/// Sees every SIP message the platform sends or receives (keep-alives excluded).
pub trait MessageObserver: Send + Sync + 'static {
    /// Called once per message on the driver task: do not block.
    fn observe(&self, direction: WireDirection, remote: SocketAddr, wire: &Bytes);
}

/// Messages [`WireLog::new`] keeps before the oldest are dropped.
pub const DEFAULT_WIRE_LOG_CAPACITY: usize = 10_000;

/// One message a [`WireLog`] kept: its bytes as they crossed the wire (shared with the
/// platform, not copied), which way, the remote address and when.
#[derive(Debug, Clone)]
pub struct WireRecord {
    /// When the platform handed it to the log.
    pub at: std::time::Instant,
    /// Which way it went.
    pub direction: WireDirection,
    /// Where it went to or came from.
    pub remote: SocketAddr,
    /// The message as sent or received.
    pub bytes: Bytes,
}

impl WireRecord {
    /// The message as text (invalid UTF-8 replaced).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }

    /// The message parsed (as one datagram: bytes past Content-Length ignored; default
    /// limits), for typed
    /// access; an error for bytes that are not one valid message.
    pub fn message(&self) -> Result<sip_core::SipMessage, sip_core::ParseError> {
        sip_core::SipMessage::parse_datagram(self.bytes.clone(), &sip_core::Limits::default())
    }

    /// Whether it was sent and is a request of `method` (`"INVITE"`, `"BYE"` …): its
    /// start line begins with the method and a space.
    pub fn is_sent_request(&self, method: &str) -> bool {
        self.direction == WireDirection::Sent
            && self.bytes.len() > method.len()
            && self.bytes.starts_with(method.as_bytes())
            && self.bytes[method.len()] == b' '
    }
}

#[derive(Debug, Default)]
struct WireLogState {
    records: std::collections::VecDeque<WireRecord>,
    dropped: u64,
}

/// Keeps the last messages a platform sent and received, whole: an application's audit
/// or debug log, and what tests read the wire with. A [`MessageObserver`]: give
/// [`as_observer`](Self::as_observer) to the platform's settings; clones share the log.
///
/// Bounded: past its capacity the oldest records are dropped and counted
/// ([`dropped`](Self::dropped)). Observing costs one lock and one push (the bytes are
/// shared, not copied), on the platform's driver task.
#[derive(Debug, Clone)]
pub struct WireLog {
    inner: std::sync::Arc<WireLogInner>,
}

#[derive(Debug)]
struct WireLogInner {
    capacity: usize,
    state: std::sync::Mutex<WireLogState>,
    /// Woken on every record, for [`WireLog::wait_for`].
    added: tokio::sync::Notify,
}

impl Default for WireLog {
    fn default() -> Self {
        Self::new()
    }
}

impl WireLog {
    /// A log keeping the last [`DEFAULT_WIRE_LOG_CAPACITY`] messages.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_WIRE_LOG_CAPACITY)
    }

    /// A log keeping the last `capacity` messages (0 keeps none and counts all dropped).
    pub fn with_capacity(capacity: usize) -> Self {
        WireLog {
            inner: std::sync::Arc::new(WireLogInner {
                capacity,
                state: std::sync::Mutex::new(WireLogState::default()),
                added: tokio::sync::Notify::new(),
            }),
        }
    }

    /// This log as the platform's observer (`settings.observer(log.as_observer())`).
    pub fn as_observer(&self) -> std::sync::Arc<dyn MessageObserver> {
        std::sync::Arc::new(self.clone())
    }

    /// Every record kept, oldest first.
    pub fn records(&self) -> Vec<WireRecord> {
        self.lock().records.iter().cloned().collect()
    }

    /// The records kept that went `direction`, oldest first.
    pub fn records_of(&self, direction: WireDirection) -> Vec<WireRecord> {
        self.matching(|r| r.direction == direction)
    }

    /// The records kept for which `pred` holds, oldest first.
    pub fn matching(&self, mut pred: impl FnMut(&WireRecord) -> bool) -> Vec<WireRecord> {
        let st = self.lock();
        st.records.iter().filter(|r| pred(r)).cloned().collect()
    }

    /// The requests of `method` sent, oldest first.
    pub fn sent_requests(&self, method: &str) -> Vec<WireRecord> {
        self.matching(|r| r.is_sent_request(method))
    }

    /// The first record, kept or still to come, for which `pred` holds. Not bounded in
    /// time: wrap it in `tokio::time::timeout`. Cancel safe.
    pub async fn wait_for(&self, mut pred: impl FnMut(&WireRecord) -> bool) -> WireRecord {
        loop {
            // Registered before the look, so a record pushed in between still wakes it.
            let added = self.inner.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if let Some(r) = self.lock().records.iter().find(|r| pred(r)) {
                return r.clone();
            }
            added.await;
        }
    }

    /// Records dropped to keep within the capacity.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Forgets every record and resets the dropped count.
    pub fn clear(&self) {
        *self.lock() = WireLogState::default();
    }

    /// The state, even after a panic elsewhere poisoned the lock (each critical section is
    /// one push or one read, so the records stay whole).
    fn lock(&self) -> std::sync::MutexGuard<'_, WireLogState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MessageObserver for WireLog {
    fn observe(&self, direction: WireDirection, remote: SocketAddr, wire: &Bytes) {
        let record = WireRecord {
            at: std::time::Instant::now(),
            direction,
            remote,
            bytes: wire.clone(),
        };
        {
            let mut st = self.lock();
            if self.inner.capacity == 0 {
                st.dropped += 1;
                return;
            }
            if st.records.len() >= self.inner.capacity {
                st.records.pop_front();
                st.dropped += 1;
            }
            st.records.push_back(record);
        }
        self.inner.added.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn remote() -> SocketAddr {
        "192.0.2.1:5061".parse().unwrap()
    }

    fn observe(log: &WireLog, direction: WireDirection, text: &'static str) {
        log.observe(direction, remote(), &Bytes::from_static(text.as_bytes()));
    }

    #[test]
    fn keeps_the_last_messages_within_its_capacity() {
        let log = WireLog::with_capacity(2);
        observe(&log, WireDirection::Sent, "OPTIONS sip:a SIP/2.0\r\n\r\n");
        observe(&log, WireDirection::Received, "SIP/2.0 200 OK\r\n\r\n");
        observe(&log, WireDirection::Sent, "BYE sip:a SIP/2.0\r\n\r\n");
        let kept: Vec<String> = log.records().iter().map(|r| r.text().into()).collect();
        assert_eq!(
            kept,
            ["SIP/2.0 200 OK\r\n\r\n", "BYE sip:a SIP/2.0\r\n\r\n"]
        );
        assert_eq!(log.dropped(), 1);
        assert_eq!(log.sent_requests("BYE").len(), 1);
        assert!(
            log.sent_requests("BY").is_empty(),
            "a method is a whole token"
        );
        assert_eq!(log.records_of(WireDirection::Received).len(), 1);
        log.clear();
        assert!(log.records().is_empty());
        assert_eq!(log.dropped(), 0);
        let none = WireLog::with_capacity(0);
        observe(&none, WireDirection::Sent, "BYE sip:a SIP/2.0\r\n\r\n");
        assert!(none.records().is_empty());
        assert_eq!(none.dropped(), 1);
    }

    #[tokio::test]
    async fn wait_for_finds_a_kept_record_or_the_next_one() {
        let log = WireLog::new();
        observe(&log, WireDirection::Sent, "OPTIONS sip:a SIP/2.0\r\n\r\n");
        let kept = log.wait_for(|r| r.is_sent_request("OPTIONS")).await;
        assert_eq!(kept.remote, remote());
        let waiting = {
            let log = log.clone();
            tokio::spawn(async move { log.wait_for(|r| r.is_sent_request("BYE")).await })
        };
        tokio::task::yield_now().await;
        observe(&log, WireDirection::Received, "BYE sip:a SIP/2.0\r\n\r\n");
        observe(&log, WireDirection::Sent, "BYE sip:b SIP/2.0\r\n\r\n");
        let bye = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the record it waits for")
            .unwrap();
        assert_eq!(bye.text(), "BYE sip:b SIP/2.0\r\n\r\n");
    }
}
