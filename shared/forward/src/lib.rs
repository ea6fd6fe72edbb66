//! The deal forwarder: copies one deal from a source portal to a target portal along
//! a configured route, exactly once, and tells the source how it went. The pure rules
//! (mapping, product rows, parties, the job and the route) live in
//! `b24_domain::forward`; the ledger in `b24_store`; this crate runs them against the
//! portals. A Lambda SQS handler and `b24sync forward` both call
//! [`ForwardService::forward`].
//!
//! One forward, in order:
//! 1. claim the deal in the ledger (`Busy`: another invocation has it, retry later);
//! 2. source, one `batch`: `crm.deal.get`, `crm.deal.productrows.get`, the contact and
//!    company to copy (`$result[deal][CONTACT_ID]`), and `crm.deal.fields` /
//!    `crm.status.list` when not cached;
//! 3. target, one `batch`: the deal by `ORIGINATOR_ID` / `ORIGIN_ID` (unless the ledger
//!    knows it: an add whose answer was lost is found here), the contact and company
//!    by theirs, and the metadata when not cached;
//! 4. map the deal (a `MappingError` is permanent and names the field and value) and
//!    download the files of the route's file fields;
//! 5. target, one `batch` with halt: `crm.{contact,company}.add` for parties not
//!    found, `crm.deal.add` or `crm.deal.update`, `crm.deal.productrows.set`
//!    (`id: $result[deal]` after an add). An answer lost around an add marks the
//!    ledger ambiguous and fails retryably; a new deal is recorded at once;
//! 6. source, one `batch`: the timeline comment naming the target deal and, when the
//!    robot waits, `bizproc.event.send` with the route's return values.
//!
//! So a deal with product rows and no files costs 2 requests on each portal with the
//! metadata cached (1 on the target when the ledger knows the deal), and still 2
//! each without it. A failure is recorded in the ledger; on the last attempt, or when
//! retrying cannot help ([`ForwardError::is_permanent`]), it is final and the deal's
//! responsible user gets `im.notify.system.add` on the source portal.

mod error;
mod files;
mod metadata;
mod service;

pub use error::ForwardError;
pub use service::{Attempt, ForwardOptions, ForwardOutcome, ForwardService, Requests};
