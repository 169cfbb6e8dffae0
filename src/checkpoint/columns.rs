//! The checkpoint's columns, table by table, with the type each has in both dialects: what
//! `vmr state copy` moves between SQLite and PostgreSQL. Written beside [`super::schema`]'s
//! tables, and held to them by a unit test there.

/// A column's type, the same on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Text,
    Blob,
}

use Kind::{Blob, Int, Text};

/// A table's name, its columns, and the key it is read in order of.
pub(crate) type Table = (&'static str, &'static [(&'static str, Kind)], &'static str);

/// Every table of the checkpoint with its columns and the key it is read in order of: what
/// `vmr state copy` moves between the two dialects (a unit test holds it to the tables of
/// [`super::schema::TABLES`]).
pub(crate) const TABLE_COLUMNS: &[Table] = &[
    ("meta", &[("key", Text), ("value", Text)], "key"),
    (
        "batches",
        &[
            ("id", Text),
            ("input_file", Text),
            ("first_seen_at", Int),
            ("rows_read", Int),
            ("accepted", Int),
            ("duplicates", Int),
            ("rejected", Int),
            ("check_digit_warnings", Int),
            ("complete", Int),
        ],
        "id",
    ),
    (
        "vins",
        &[
            ("id", Int),
            ("vin", Text),
            ("license_img_url", Text),
            ("state", Text),
            ("code", Int),
            ("message", Text),
            ("request_id", Text),
            ("task_no", Text),
            ("submit_attempts", Int),
            ("poll_attempts", Int),
            ("billed_calls", Int),
            ("unknown_calls", Int),
            ("next_poll_at", Int),
            ("poll_interval_ms", Int),
            ("first_seen_at", Int),
            ("submitted_at", Int),
            ("completed_at", Int),
            ("input_file", Text),
            ("input_line", Int),
            ("batch_id", Text),
            ("check_digit_ok", Int),
            ("accepted_at", Int),
            ("purchase", Int),
            ("failure", Text),
        ],
        "id",
    ),
    (
        "calls",
        &[
            ("id", Int),
            ("vin_id", Int),
            ("endpoint", Text),
            ("request_id", Text),
            ("http_status", Int),
            ("code", Int),
            ("msg", Text),
            ("task_no", Text),
            ("billed", Int),
            ("delivery", Text),
            ("started_at", Int),
            ("ended_at", Int),
            ("error", Text),
            ("body", Blob),
            ("purchase", Int),
            ("uid", Text),
        ],
        "id",
    ),
    (
        "runs",
        &[
            ("id", Int),
            ("command", Text),
            ("started_at", Int),
            ("ended_at", Int),
            ("exit_code", Int),
            ("outcome", Text),
        ],
        "id",
    ),
    (
        "resolutions",
        &[
            ("id", Int),
            ("vin_id", Int),
            ("at", Int),
            ("action", Text),
            ("request_id", Text),
            ("note", Text),
            ("from_state", Text),
            ("to_state", Text),
        ],
        "id",
    ),
    (
        "reports",
        &[
            ("vin_id", Int),
            ("version", Int),
            ("purchase", Int),
            ("vin", Text),
            ("request_id", Text),
            ("task_no", Text),
            ("endpoint", Text),
            ("fetched_at", Int),
            ("body", Blob),
        ],
        "vin_id, version",
    ),
    (
        "purchases",
        &[
            ("vin_id", Int),
            ("purchase", Int),
            ("state", Text),
            ("code", Int),
            ("message", Text),
            ("request_id", Text),
            ("task_no", Text),
            ("submitted_at", Int),
            ("accepted_at", Int),
            ("completed_at", Int),
            ("report_version", Int),
            ("failure", Text),
        ],
        "vin_id, purchase",
    ),
    (
        "batch_vins",
        &[("batch_id", Text), ("vin_id", Int)],
        "batch_id, vin_id",
    ),
];
