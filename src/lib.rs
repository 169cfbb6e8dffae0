//! vmr: buy Jumdata vehicle maintenance reports, checkpoint every call, flatten to typed tables.

pub mod api;
pub mod cli;
pub mod cmd;
pub mod sandbox;
