// Body of the `stream_framer` fuzz target, shared with sip-core's corpus smoke test.
// Feeds the bytes to the framer in uneven chunks and parses each frame. Must never panic.
pub fn body(data: &[u8]) {
    use sip_core::{Limits, SipMessage, StreamFramer};
    let mut framer = StreamFramer::new(Limits::DEFAULT);
    let step = 1 + data.first().map_or(0, |b| *b as usize % 97);
    for chunk in data.chunks(step) {
        framer.push(chunk);
        loop {
            match framer.next_frame() {
                Ok(Some(sip_core::Frame::Message(m))) => {
                    let _ = SipMessage::parse_framed(m, &Limits::DEFAULT);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}
