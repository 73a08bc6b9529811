//! [`ApplicationEndpoint`]: the application's own trusted identity (UCMA's
//! `ApplicationEndpoint`). It receives conversations from anyone — federated users
//! included, typed by the caller's homing — and publishes its own presence.

use crate::core::{EndpointCore, EstablishGuard};
use crate::presence::LocalOwnerPresence;
use crate::registration::Registered;
use crate::state::{EndpointState, StateChange};
use crate::{Endpoint, EndpointError};
use collaboration_platform::{Address, CollaborationPlatform, OnPremises};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

/// How an application endpoint is set up. The owner is an on-premises address: an
/// application cannot be hosted as somebody of another deployment.
#[derive(Debug, Clone)]
pub struct ApplicationEndpointSettings {
    owner: Address<OnPremises>,
    display_name: Option<String>,
    use_registration: bool,
    default_routing: bool,
    instance_id: Option<String>,
    registration_expires: u32,
    drain_retry_after: u32,
}

impl ApplicationEndpointSettings {
    /// An endpoint owning `owner` (e.g. `sip:bot@contoso.test`). Defaults as in UCMA: no
    /// registration (the front end routes to trusted applications by configuration), not
    /// the default routing endpoint.
    pub fn new(owner: Address<OnPremises>) -> Self {
        ApplicationEndpointSettings {
            owner,
            display_name: None,
            use_registration: false,
            default_routing: false,
            instance_id: None,
            registration_expires: 600,
            drain_retry_after: 30,
        }
    }

    /// The display name shown to home users.
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Registers the endpoint's contact with the front end's registrar (and keeps it
    /// registered) so that requests for the owner reach this instance.
    pub fn use_registration(mut self, yes: bool) -> Self {
        self.use_registration = yes;
        self
    }

    /// Makes this the platform's default routing endpoint: it receives requests no other
    /// endpoint owns.
    pub fn default_routing(mut self, yes: bool) -> Self {
        self.default_routing = yes;
        self
    }

    /// The instance id (`urn:uuid:…`, RFC 5626 `+sip.instance`) sent with the
    /// registration; with it the registrar may grant a GRUU (RFC 5627).
    pub fn instance_id(mut self, urn: impl Into<String>) -> Self {
        self.instance_id = Some(urn.into());
        self
    }

    /// Registration lifetime asked for, in seconds (default 600).
    pub fn registration_expires(mut self, secs: u32) -> Self {
        self.registration_expires = secs;
        self
    }

    /// Retry-After (seconds) sent with the 503 that declines new conversations while
    /// draining (default 30).
    pub fn drain_retry_after(mut self, secs: u32) -> Self {
        self.drain_retry_after = secs;
        self
    }

    /// The owner.
    pub fn owner(&self) -> &Address<OnPremises> {
        &self.owner
    }
}

/// The application's trusted identity on a platform.
pub struct ApplicationEndpoint {
    core: Arc<EndpointCore>,
    settings: ApplicationEndpointSettings,
    presence: LocalOwnerPresence,
    registered: Arc<Registered>,
}

impl std::fmt::Debug for ApplicationEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplicationEndpoint")
            .field("owner", &self.settings.owner.uri())
            .field("state", &self.core.state())
            .finish_non_exhaustive()
    }
}

impl ApplicationEndpoint {
    /// An endpoint on `platform`, Idle until [`establish`](Self::establish).
    pub fn new(platform: &CollaborationPlatform, settings: ApplicationEndpointSettings) -> Self {
        let core = EndpointCore::new(
            platform,
            settings.owner.clone(),
            settings.display_name.clone(),
            settings.drain_retry_after,
            true,
            // Trusted over mutual TLS: its front end does not challenge it.
            None,
        );
        let presence = LocalOwnerPresence::new(core.clone());
        let registered = Arc::new(Registered::default());
        crate::registration::terminate_on_platform_stop(&core, &presence, &registered);
        ApplicationEndpoint {
            presence,
            core,
            settings,
            registered,
        }
    }

    /// Starts receiving requests for the owner and, when configured, registers. On
    /// failure the endpoint returns to Idle and can be established again. Registration
    /// for an owner without a domain (a `tel:` URI) is [`EndpointError::NotRegistrable`],
    /// the state left Idle and nothing sent.
    /// A [`terminate`](Self::terminate) meanwhile wins: this returns
    /// [`EndpointError::NotEstablished`] and removes a binding granted too late.
    ///
    /// Cancel safety: dropped half way, the endpoint goes back to Idle, unrouted, and can
    /// be established again; a REGISTER already sent may still leave a binding at the
    /// registrar, which lapses at its expiry.
    pub async fn establish(&self) -> Result<(), EndpointError> {
        if self.settings.use_registration {
            crate::registration::registrable(&self.settings.owner)?;
        }
        match self.core.transition(
            &[EndpointState::Idle],
            EndpointState::Establishing,
            "establish() called",
        ) {
            Ok(()) => {}
            Err(EndpointState::Established | EndpointState::Reestablishing) => return Ok(()),
            Err(s) => return Err(EndpointError::NotEstablished(s)),
        }
        let _cancelled = EstablishGuard::new(&self.core);
        let s = &self.settings;
        if let Err(e) = self
            .core
            .attach(Some(self.core.contact().to_string()), s.default_routing)
            .await
        {
            let _ = self.core.transition(
                &[EndpointState::Establishing],
                EndpointState::Idle,
                format!("establishing failed: {e}"),
            );
            return Err(e);
        }
        let reason = if s.use_registration {
            let granted = self
                .registered
                .start(
                    &self.core,
                    None,
                    s.registration_expires,
                    s.instance_id.clone(),
                )
                .await?;
            format!("registered for {} s", granted.expires)
        } else {
            "routing requests for the owner (no registration)".to_string()
        };
        self.core.finish_establishing(reason).await
    }

    /// Declines new conversations (503 with Retry-After) while current ones continue.
    pub fn drain(&self) {
        // Atomic: a refresh task moving Established to Reestablishing meanwhile must not
        // overwrite Draining, nor this a terminate() under way.
        if self
            .core
            .transition(
                &[EndpointState::Established, EndpointState::Reestablishing],
                EndpointState::Draining,
                "drain(): new conversations are declined",
            )
            .is_ok()
        {
            self.core.begin_drain();
        }
    }

    /// Removes the published presence, unregisters, stops routing. Terminal. Whether the
    /// unregistration was answered is in the reason of the Terminated state.
    /// Called again (from another task) while it runs, returns when the first call has
    /// finished.
    ///
    /// Cancel safety: dropped half way, the endpoint still ends unrouted and Terminated;
    /// the presence removal or the unregistration may not have been sent (the binding then
    /// lapses at its expiry).
    pub async fn terminate(&self) {
        crate::registration::terminate(&self.core, &self.presence, &self.registered).await;
    }

    /// The current state.
    pub fn state(&self) -> EndpointState {
        self.core.state()
    }

    /// Watches state changes with their reasons.
    pub fn watch_state(&self) -> watch::Receiver<StateChange> {
        self.core.watch_state()
    }

    /// Every state change from now on, in order, with its reason: unlike
    /// [`watch_state`](Self::watch_state), which holds only the latest, a state held
    /// briefly (Reestablishing while the registration is renewed after a lost connection)
    /// is not missed. A receiver that falls more than 32 changes behind gets
    /// `RecvError::Lagged` with the number it missed, then the rest.
    pub fn state_changes(&self) -> broadcast::Receiver<StateChange> {
        self.core.state_changes()
    }

    /// The endpoint's own presence (it is its own presentity).
    pub fn local_owner_presence(&self) -> &LocalOwnerPresence {
        &self.presence
    }

    /// The GRUU the registrar granted, if registration is used and it granted one.
    pub async fn gruu(&self) -> Option<String> {
        self.registered.granted().await?.gruu
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &ApplicationEndpointSettings {
        &self.settings
    }
}

impl Endpoint for ApplicationEndpoint {
    fn core(&self) -> &Arc<EndpointCore> {
        &self.core
    }
}
