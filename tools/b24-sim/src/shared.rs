//! The state every request handler shares.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::events::{EventAuth, EventQueue};
use crate::faults::FaultInjector;
use crate::limits::Limiter;
use crate::portal::{Portal, SeedPlan};
use crate::robots::Application;
use crate::stats::SimStats;
use crate::values::PortalClock;

pub(crate) struct Shared {
    pub portal: RwLock<Portal>,
    /// What `POST /_sim/reset` regenerates.
    pub plan: SeedPlan,
    pub clock: PortalClock,
    pub user_id: u64,
    pub secret: String,
    pub limiter: Mutex<Limiter>,
    pub stats: Arc<Mutex<SimStats>>,
    pub faults: Mutex<FaultInjector>,
    pub events: Option<EventQueue>,
    /// The portal's domain, REST endpoint and member ID as outgoing calls show them.
    pub identity: EventAuth,
    /// The installed application (its token gives the application context).
    pub application: Application,
    /// `auth[refresh_token]` of robot calls (no OAuth server takes it).
    pub refresh_token: String,
    /// Sends robot calls.
    pub http: reqwest::Client,
}
