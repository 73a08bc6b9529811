// Body of the `sdp` fuzz target, shared with sip-core's corpus smoke test.
// Parses the bytes as SDP; on success re-serializes, parses again and compares. Must never
// panic.
pub fn body(data: &[u8]) {
    use sip_core::sdp::SessionDescription;
    if let Ok(sdp) = SessionDescription::parse(bytes::Bytes::copy_from_slice(data)) {
        let out = sdp.to_bytes();
        assert_eq!(&out[..], data, "unchanged SDP must round-trip byte for byte");
    }
}
