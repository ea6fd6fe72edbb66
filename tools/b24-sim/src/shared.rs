//! The state every request handler shares.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::events::EventQueue;
use crate::faults::FaultInjector;
use crate::limits::Limiter;
use crate::portal::{Portal, SeedPlan};
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
}
