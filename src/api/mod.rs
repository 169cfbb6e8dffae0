//! The vendor API: the only code that knows Jumdata's wire format.
//!
//! `sign` authenticates calls, `model` parses REPORT bodies leniently, `envelope` parses the
//! `{code, msg, taskNo, data}` wrapper and classifies every result into an [`Outcome`] that tells
//! the caller what to do, and `client` makes the signed HTTP calls.

pub mod sign;

pub use sign::{Credentials, Secret, sign};
