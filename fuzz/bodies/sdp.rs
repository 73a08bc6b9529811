// Body of the `sdp` fuzz target, shared with sip-core's corpus smoke test.
// Parses the bytes as SDP; on success re-serializes, parses again and compares. Then, as a
// peer controls both, the SDP goes through offer/answer (RFC 3264) as a remote offer and as
// the answer to our offer: never a panic, and what we send back is well formed. Must
// never panic.
pub fn body(data: &[u8]) {
    use sip_core::sdp::offer_answer::{Codec, LocalCapabilities, MediaCapability, OfferAnswer};
    use sip_core::sdp::SessionDescription;
    let Ok(sdp) = SessionDescription::parse(bytes::Bytes::copy_from_slice(data)) else {
        return;
    };
    let out = sdp.to_bytes();
    assert_eq!(
        &out[..],
        data,
        "unchanged SDP must round-trip byte for byte"
    );

    // What an application endpoint offers: audio, video, Lync-style IM.
    let local = || {
        LocalCapabilities::new("192.0.2.2")
            .with_media(MediaCapability::audio(
                5004,
                [Codec::pcmu(), Codec::pcma(), Codec::telephone_event()],
            ))
            .with_media(MediaCapability::video(5006, [Codec::new("H264", 90_000)]))
            .with_media(MediaCapability::message(
                5060,
                ["text/plain", "message/cpim"],
            ))
    };
    // Our answer, when we give one, has a line per offered line, of the same media type,
    // rejected where the offer rejected, and parses back as written.
    let mut answering = OfferAnswer::new(local(), "7");
    if let Ok(answer) = answering.receive_offer(&sdp) {
        assert_eq!(
            answer.media().len(),
            sdp.media().len(),
            "one answer line per offer line"
        );
        for (o, a) in sdp.media().iter().zip(answer.media()) {
            assert_eq!(o.media_type(), a.media_type(), "answer line retyped");
            if o.is_rejected() {
                assert!(a.is_rejected(), "a stream offered with port 0 accepted");
            }
        }
        let wire = answer.to_bytes();
        let back = SessionDescription::parse(wire.clone()).expect("our answer parses");
        assert_eq!(back.to_bytes(), wire);
        // A re-offer of ours after that exchange is well formed too.
        if let Ok(reoffer) = answering.hold() {
            SessionDescription::parse(reoffer.to_bytes()).expect("our re-offer parses");
            answering.rollback();
        }
    }
    // The same bytes as the answer to our offer: accepted or refused, never a panic, and
    // a refusal leaves the negotiation able to offer again.
    let mut offering = OfferAnswer::new(local(), "8");
    let offer = offering
        .create_offer()
        .expect("an offer from local capabilities");
    if offering.receive_answer(&sdp).is_ok() {
        assert_eq!(
            sdp.media().len(),
            offer.media().len(),
            "answer with another line count accepted"
        );
    } else {
        offering
            .create_offer()
            .expect("an offer again after a refused answer");
    }
}
