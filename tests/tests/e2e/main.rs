//! End-to-end tests of the core: the real binary, a real upstream, real
//! clients. Modules by concern.

mod api;
mod connections;
mod durability;
mod failures;
mod fidelity;
mod modes;
mod policy;
mod safety;
mod storage;
mod streams;
