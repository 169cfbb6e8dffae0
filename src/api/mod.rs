//! The vendor API: the only code that knows Jumdata's wire format.
//!
//! `sign` authenticates calls, `scalar` holds the rules that turn a vendor scalar of any JSON
//! shape into a typed value, `view` reads a REPORT body leniently (borrowed, for export),
//! `lenient` reads a billed body that is a complete JSON document but not strict JSON,
//! `outcome` parses the `{code, msg, taskNo, data}` envelope and classifies every result into an
//! [`Outcome`] that tells the caller what to do, and `client` makes the signed HTTP calls.

pub mod client;
pub mod lenient;
pub mod outcome;
pub mod scalar;
pub mod sign;
pub mod view;

pub use client::{Client, ClientOptions, Exchange, now_ms};
pub use outcome::{Answer, Delivery, Endpoint, Outcome, classify, report_json};
pub use sign::{Credentials, Secret, sign};
