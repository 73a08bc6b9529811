//! Checks captured SIP messages, one file per datagram:
//!
//! ```sh
//! cargo run -p sip-core --example sipcheck -- FILE...
//! ```
//!
//! Prints one line per file: `FILE<TAB>ok<TAB>METHOD-or-STATUS`, or
//! `FILE<TAB>invalid<TAB>STATUS<TAB>REASON` where STATUS is the response a server would
//! answer (400, 505, 513 …) and REASON says why. Content-Length is optional and bytes after
//! the message are ignored, as for a UDP datagram. Every header with a typed view is checked
//! (`SipMessage::validate_all`), so messages RFC 4475 lets a lenient element accept (a Date
//! not in GMT, say) are reported. Exits 0 when every file could be read.

use bytes::Bytes;
use sip_core::{Limits, SipMessage};
use std::process::ExitCode;

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: sipcheck FILE...");
        return ExitCode::from(2);
    }
    let mut unreadable = false;
    for file in files {
        let bytes = match std::fs::read(&file) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                eprintln!("{file}: {e}");
                unreadable = true;
                continue;
            }
        };
        let checked = SipMessage::parse_datagram(bytes, &Limits::DEFAULT)
            .and_then(|m| m.validate_all().map(|()| m));
        match checked {
            Ok(m) => {
                let what = match (m.method(), m.status()) {
                    (Some(method), _) => method.to_string(),
                    (None, Some(status)) => status.to_string(),
                    (None, None) => String::new(),
                };
                println!("{file}\tok\t{what}");
            }
            Err(e) => println!("{file}\tinvalid\t{}\t{e}", e.status()),
        }
    }
    if unreadable {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
