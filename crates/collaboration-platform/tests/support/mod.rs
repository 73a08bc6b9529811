//! What the loopback test files share: endpoints on a platform, their next request, a
//! header of a message as text, and a scripted outbound proxy.

pub mod scripted_proxy;

use collaboration_platform::{Address, CollaborationPlatform, EndpointId, IncomingRequest};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a test waits for what it expects.
pub const WAIT: Duration = Duration::from_secs(10);

/// `user`@contoso.test routed on `p`, with the stream of its requests.
pub async fn endpoint(
    p: &CollaborationPlatform,
    user: &str,
) -> (EndpointId, mpsc::Receiver<IncomingRequest>) {
    let owner = Address::assume_on_premises(&format!("sip:{user}@contoso.test")).unwrap();
    p.register_endpoint(owner, None, false).await.unwrap()
}

/// The endpoint's next request, within [`WAIT`].
pub async fn next(rx: &mut mpsc::Receiver<IncomingRequest>) -> IncomingRequest {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a request within the wait")
        .expect("endpoint open")
}

pub use scripted_proxy::header;
