//! Pure domain logic shared by every function and tool. Nothing in this crate
//! performs IO or knows about AWS, Lambda, HTTP clients or databases.

pub mod back_sync;
pub mod change;
pub mod database;
pub mod entity;
pub mod event;
pub mod forward;
pub mod item;
pub mod limits;
pub mod ports;
mod request_body;
pub mod schema;
pub mod sync;
pub mod values;
pub mod webhook;
