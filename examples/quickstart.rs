//! `cargo run --example quickstart`: needs no server.
//!
//! Until the platform and conversation layers land, the quick start shows the codec every
//! layer stands on: an application builds an IM session INVITE (Lync/Skype for Business
//! style `m=message … sip null` offer), sends it over a byte stream together with a
//! keep-alive ping, the receiver frames and parses it zero-copy, reads typed headers and the
//! SDP, and answers 200 OK.

use bytes::Bytes;
use sip_core::sdp::SessionDescription;
use sip_core::{Frame, HeaderName, Limits, Method, SipMessage, StreamFramer};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let offer =
        "v=0\r\no=- 0 0 IN IP4 app.contoso.test\r\ns=session\r\nc=IN IP4 app.contoso.test\r\n\
                 t=0 0\r\nm=message 5061 sip null\r\na=accept-types:text/plain text/html\r\n";
    let invite = SipMessage::request(Method::Invite, "sip:alice@contoso.test")
        .header(
            HeaderName::Via,
            "SIP/2.0/TLS app.contoso.test:5061;branch=z9hG4bKqs1",
        )
        .header(HeaderName::MaxForwards, "70")
        .header(
            HeaderName::From,
            "\"Contoso Bot\" <sip:bot@contoso.test>;tag=q1",
        )
        .header(HeaderName::To, "<sip:alice@contoso.test>")
        .header(HeaderName::CallId, "quickstart-1@app.contoso.test")
        .header(HeaderName::CSeq, "1 INVITE")
        .header(
            HeaderName::Contact,
            "<sip:bot@app.contoso.test:5061;transport=tls>",
        )
        .header("Ms-Conversation-ID", "AdVk3bRlMqJ0c9i8Tn2oQ1W4xA==")
        .body("application/sdp", Bytes::from_static(offer.as_bytes()))
        .build()?;

    // What goes on the wire: the INVITE, then an RFC 5626 keep-alive ping.
    let mut wire = invite.to_bytes().to_vec();
    wire.extend_from_slice(b"\r\n\r\n");
    println!(
        "--- sent ({} bytes) ---\n{}",
        wire.len(),
        String::from_utf8_lossy(&wire)
    );

    // The receiver gets the bytes in arbitrary pieces.
    let started = Instant::now();
    let mut framer = StreamFramer::new(Limits::DEFAULT);
    let mut received = Vec::new();
    for piece in wire.chunks(100) {
        framer.push(piece);
        while let Some(frame) = framer.next_frame()? {
            received.push(frame);
        }
    }
    for frame in received {
        match frame {
            Frame::Message(bytes) => {
                let msg = SipMessage::parse_framed(bytes, &Limits::DEFAULT)?;
                let from = msg.from()?;
                let name = from.display_name().map(|d| d.decoded().into_owned());
                let sdp = SessionDescription::parse(msg.body().clone())?;
                println!("--- received ---");
                println!(
                    "method      {}",
                    msg.method().map(|m| m.as_str()).unwrap_or("")
                );
                println!(
                    "from        {:?} {}",
                    name.map(|n| String::from_utf8_lossy(&n).into_owned()),
                    from.uri()
                );
                println!(
                    "top via     branch={}",
                    msg.top_via()?.branch().unwrap_or("")
                );
                println!("cseq        {}", msg.cseq()?.seq());
                let im = sdp
                    .media()
                    .first()
                    .map(|m| m.accept_types())
                    .unwrap_or_default();
                println!(
                    "sdp media   {} section(s), IM accept-types {im:?}",
                    sdp.media().len()
                );
                let mut ok = SipMessage::response_to(&msg, 200, "OK")?;
                ok.set_to_tag("a1")?;
                println!("--- answer ---\n{ok}");
            }
            other => println!("--- received {other:?} ---"),
        }
    }
    println!("framed, parsed and answered in {:?}", started.elapsed());
    Ok(())
}
