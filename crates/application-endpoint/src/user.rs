//! [`UserEndpoint`]: acting as one user of the home deployment (UCMA's `UserEndpoint`):
//! registered with the user's digest credentials, publishing the user's presence,
//! receiving the user's calls and IMs.
//!
//! Only an on-premises user can have one: [`UserEndpointSettings::new`] takes an
//! [`Address<OnPremises>`], so code that tries it for an `Address<Federated>` does not
//! compile, and [`UserEndpointSettings::from_uri`] refuses a federated or cloud-homed URI
//! that arrives at run time with [`EndpointError::FederationRestricted`].

use crate::core::{EndpointCore, EstablishGuard};
use crate::presence::LocalOwnerPresence;
use crate::registration::{Granted, Registered};
use crate::state::{EndpointState, StateChange};
use crate::{Endpoint, EndpointError};
use collaboration_platform::{
    Address, ClientAuth, CollaborationPlatform, Homed, OnPremises, Topology,
};
use sip_core::auth::Credentials;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

/// How a user endpoint is set up.
#[derive(Clone)]
pub struct UserEndpointSettings {
    owner: Address<OnPremises>,
    credentials: Credentials,
    display_name: Option<String>,
    expires: u32,
    instance_id: Option<String>,
}

impl std::fmt::Debug for UserEndpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserEndpointSettings")
            .field("owner", &self.owner.uri())
            .field("username", &self.credentials.username())
            .finish_non_exhaustive()
    }
}

impl UserEndpointSettings {
    /// A user endpoint for `owner` (an on-premises user) with digest `credentials`.
    pub fn new(owner: Address<OnPremises>, credentials: Credentials) -> Self {
        UserEndpointSettings {
            owner,
            credentials,
            display_name: None,
            expires: 600,
            instance_id: None,
        }
    }

    /// As [`new`](Self::new) for a URI that arrives at run time: classified by `topology`;
    /// a federated or cloud-homed user is refused before anything is sent, and so is a
    /// `tel:` URI ([`EndpointError::NotRegistrable`]): a user endpoint registers, and a
    /// number has no registrar.
    pub fn from_uri(
        topology: &Topology,
        uri: &str,
        credentials: Credentials,
    ) -> Result<Self, EndpointError> {
        match topology.classify(uri)? {
            Homed::OnPremises(a) => {
                crate::registration::registrable(&a)?;
                Ok(Self::new(a, credentials))
            }
            Homed::Federated(a) => Err(EndpointError::FederationRestricted {
                operation: "UserEndpoint",
                uri: a.uri().to_string(),
            }),
        }
    }

    /// The user's display name.
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Registration lifetime asked for, in seconds (default 600).
    pub fn registration_expires(mut self, secs: u32) -> Self {
        self.expires = secs;
        self
    }

    /// The instance id (`urn:uuid:…`) sent as `+sip.instance` (RFC 5626/5627).
    pub fn instance_id(mut self, urn: impl Into<String>) -> Self {
        self.instance_id = Some(urn.into());
        self
    }

    /// The owner.
    pub fn owner(&self) -> &Address<OnPremises> {
        &self.owner
    }
}

/// A user of the home deployment, as this application acts for them.
pub struct UserEndpoint {
    core: Arc<EndpointCore>,
    settings: UserEndpointSettings,
    presence: LocalOwnerPresence,
    registered: Arc<Registered>,
}

impl std::fmt::Debug for UserEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserEndpoint")
            .field("owner", &self.settings.owner.uri())
            .field("state", &self.core.state())
            .finish_non_exhaustive()
    }
}

/// The credentials a user's out-of-dialog requests answer challenges with. Given for any
/// realm, they answer only the owner's domain as realm here (and, once registered, the
/// realms the registrar challenged with): a digest response lets whoever challenged try
/// passwords offline, so a 401 or 407 from elsewhere (a federated party's server, say) is
/// not answered but ends the request with `RequestError::Authentication`. Credentials
/// given for a realm stay for that realm.
fn home_realm_credentials(settings: &UserEndpointSettings) -> Credentials {
    let c = settings.credentials.clone();
    match c.realm() {
        Some(_) => c,
        None => c.for_realm(settings.owner.domain()),
    }
}

impl UserEndpoint {
    /// A user endpoint on `platform`, Idle until [`establish`](Self::establish).
    pub fn new(platform: &CollaborationPlatform, settings: UserEndpointSettings) -> Self {
        let core = EndpointCore::new(
            platform,
            settings.owner.clone(),
            settings.display_name.clone(),
            30,
            false,
            // The user's requests are challenged like the user's REGISTER (a proxy's 407):
            // answered with the same credentials, learnt separately from the registrar's,
            // for the home realms only (see `home_realm_credentials`).
            Some(ClientAuth::new(home_realm_credentials(&settings))),
        );
        let presence = LocalOwnerPresence::new(core.clone());
        let registered = Arc::new(Registered::default());
        crate::registration::terminate_on_platform_stop(&core, &presence, &registered);
        UserEndpoint {
            presence,
            core,
            settings,
            registered,
        }
    }

    /// Registers with digest authentication and starts receiving the user's requests;
    /// keeps the registration refreshed and re-registers after the front end's connection
    /// drops (state Reestablishing, then Established). A wrong password is
    /// [`EndpointError::Authentication`] (state back to Idle), never retried.
    /// An owner without a domain (a `tel:` URI) is [`EndpointError::NotRegistrable`],
    /// the state left Idle and nothing sent.
    /// Called again once established, it returns what the registrar granted.
    /// A [`terminate`](Self::terminate) meanwhile wins: this returns
    /// [`EndpointError::NotEstablished`] and removes a binding granted too late.
    ///
    /// Cancel safety: dropped half way, the endpoint goes back to Idle, unrouted, and can
    /// be established again; a REGISTER already sent may still leave a binding at the
    /// registrar, which lapses at its expiry.
    pub async fn establish(&self) -> Result<Granted, EndpointError> {
        crate::registration::registrable(&self.settings.owner)?;
        match self.core.transition(
            &[EndpointState::Idle],
            EndpointState::Establishing,
            "establish() called",
        ) {
            Ok(()) => {}
            // Already registered: what was granted, as an ApplicationEndpoint answers Ok.
            Err(s @ (EndpointState::Established | EndpointState::Reestablishing)) => {
                return self
                    .registered
                    .granted()
                    .await
                    .ok_or(EndpointError::NotEstablished(s));
            }
            Err(s) => return Err(EndpointError::NotEstablished(s)),
        }
        let _cancelled = EstablishGuard::new(&self.core);
        if let Err(e) = self
            .core
            .attach(Some(self.core.contact().to_string()), false)
            .await
        {
            let _ = self.core.transition(
                &[EndpointState::Establishing],
                EndpointState::Idle,
                format!("establishing failed: {e}"),
            );
            return Err(e);
        }
        let s = &self.settings;
        let granted = self
            .registered
            .start(
                &self.core,
                Some(s.credentials.clone()),
                s.expires,
                s.instance_id.clone(),
            )
            .await?;
        // The realms the registrar challenged with are home realms too: the registration
        // adds them after each grant (`Registration::share_realms`).
        self.core
            .finish_establishing(format!("registered for {} s", granted.expires))
            .await?;
        Ok(granted)
    }

    /// Removes the user's published presence, unregisters, stops routing. Terminal.
    /// Whether the unregistration was answered is in the reason of the Terminated state.
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

    /// The user's presence as this endpoint publishes it.
    pub fn local_owner_presence(&self) -> &LocalOwnerPresence {
        &self.presence
    }

    /// The GRUU the registrar granted, if any.
    pub async fn gruu(&self) -> Option<String> {
        self.registered.granted().await?.gruu
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &UserEndpointSettings {
        &self.settings
    }
}

impl Endpoint for UserEndpoint {
    fn core(&self) -> &Arc<EndpointCore> {
        &self.core
    }
}
