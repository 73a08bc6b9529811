//! An outbound proxy played by a test over TCP: it reads what the platform sends and
//! answers as the test likes (forks, late answers, silence). Shared by the test files
//! that need one.

use super::WAIT;

/// The proxy's side of one TCP connection from the platform.
pub struct ScriptedProxy {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl ScriptedProxy {
    /// The proxy on a connection the platform opened.
    pub fn new(stream: tokio::net::TcpStream) -> Self {
        ScriptedProxy {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next message (the platform sends none with a body here), keep-alives skipped.
    pub async fn read(&mut self) -> String {
        use tokio::io::AsyncReadExt;
        loop {
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let m = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                self.buf.drain(..end + 4);
                assert_eq!(header(&m, "Content-Length"), "0", "{m}");
                return m;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a message within the wait")
                .unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next request, answering 200 to any BYE met on the way when `method` is not BYE.
    #[allow(dead_code)] // not every test file asks for one by method
    pub async fn request(&mut self, method: &str) -> String {
        loop {
            let m = self.read().await;
            if m.starts_with(&format!("{method} ")) {
                return m;
            }
            assert!(m.starts_with("BYE "), "expected {method}, got {m}");
            self.answer(&m, "200 OK", "").await;
        }
    }

    /// Answers `request` with `status`, adding `to_tag` to its To when not empty.
    pub async fn answer(&mut self, request: &str, status: &str, to_tag: &str) {
        use tokio::io::AsyncWriteExt;
        let r = response(request, status, to_tag);
        self.stream.write_all(r.as_bytes()).await.unwrap();
    }
}

/// A response to `request` with `status`, `to_tag` added to its To when not empty, and a
/// Contact: what [`ScriptedProxy::answer`] sends, for tests that send it another way.
pub fn response(request: &str, status: &str, to_tag: &str) -> String {
    let to = if to_tag.is_empty() {
        header(request, "To").to_string()
    } else {
        format!("{};tag={to_tag}", header(request, "To"))
    };
    format!(
        "SIP/2.0 {status}\r\n\
         Via: {}\r\n\
         From: {}\r\n\
         To: {to}\r\n\
         Call-ID: {}\r\n\
         CSeq: {}\r\n\
         Contact: <sip:bob@127.0.0.1:9;transport=tcp>\r\n\
         Content-Length: 0\r\n\r\n",
        header(request, "Via"),
        header(request, "From"),
        header(request, "Call-ID"),
        header(request, "CSeq"),
    )
}

/// The value of the first header `name` (as written) in `message`.
pub fn header<'m>(message: &'m str, name: &str) -> &'m str {
    message
        .split("\r\n")
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{name} in {message}"))
}
