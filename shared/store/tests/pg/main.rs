//! Store tests against the real local PostgreSQL (127.0.0.1:5432, or `B24_TEST_PG`).
//! One binary, so the suite links once.

mod common;
mod connection;
mod ledger;
mod limiter;
mod mapping;
mod outbox;
mod portals;
mod reference;
mod schema;
mod state;
mod status;
mod upsert;
