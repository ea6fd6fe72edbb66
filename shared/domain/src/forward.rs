//! Forwarding a deal from one portal to another, the pure half: the robot call that
//! asks for it ([`robot`]), the job that carries it to the forwarder ([`job`]), the
//! route as plain data ([`route`]), and what the target deal, its contact and company
//! and its product rows become ([`mapping`], [`parties`], [`products`]).
//!
//! Exactly-once rests on the target deal's `ORIGINATOR_ID` / `ORIGIN_ID`
//! ([`mapping::Origin`]): the forwarder looks the deal up by both before any add.

pub mod job;
pub mod mapping;
pub mod parties;
pub mod products;
pub mod robot;
pub mod route;
