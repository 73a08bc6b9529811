//! A raw request over plain TCP and its answer's status line, for the wire tests that
//! speak to a platform's listener without a SIP stack of their own.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one request over a new plain TCP connection to `to` (`request` builds it from
/// the connection's local address, for its Via) and returns the status line of the
/// answer, within 10 s.
pub async fn tcp_status_line(to: SocketAddr, request: impl FnOnce(SocketAddr) -> String) -> String {
    let mut tcp = tokio::net::TcpStream::connect(to).await.unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.write_all(request(local).as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed without an answer");
            got.extend_from_slice(&buf[..n]);
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                return;
            }
        }
    })
    .await
    .expect("an answer within 10 s");
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}
