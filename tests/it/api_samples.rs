//! The API layer on the vendor responses kept in `samples/responses/`: every one is classified as
//! the vendor page says, and every REPORT in them parses with the values the page shows (through
//! the export's view and through the reference model).

use crate::export::reference_model::Report;
use std::path::PathBuf;
use vmr::api::view::{Held, ReportView, Slot};
use vmr::api::{Endpoint, Outcome, classify};

fn sample(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("samples/responses")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn each_sample_is_classified_as_the_vendor_page_says() {
    type Case = (&'static str, Endpoint, fn(&Outcome) -> bool);
    let cases: [Case; 6] = [
        ("generate_inline.json", Endpoint::Generate, |o| {
            matches!(
                o,
                Outcome::Report {
                    request_id: Some(_)
                }
            )
        }),
        ("generate_request_id_only.json", Endpoint::Generate, |o| {
            matches!(o, Outcome::Accepted { .. })
        }),
        ("generate_703.json", Endpoint::Generate, |o| {
            matches!(o, Outcome::Fail { code: 703, .. })
        }),
        ("get_200.json", Endpoint::Get, |o| {
            matches!(o, Outcome::Report { .. })
        }),
        ("get_701.json", Endpoint::Get, |o| {
            matches!(o, Outcome::NotReady { .. })
        }),
        ("html_error.html", Endpoint::Get, |o| {
            matches!(o, Outcome::Transient { .. })
        }),
    ];
    for (name, ep, want) in cases {
        let status = if name.ends_with(".html") { 502 } else { 200 };
        let (outcome, answer) = classify(ep, status, &sample(name));
        assert!(want(&outcome), "{name}: {outcome:?}");
        assert_eq!(
            answer.billed(),
            name.contains("200") || name.contains("inline") || name.contains("request_id_only"),
            "{name}"
        );
    }
}

#[test]
fn reports_in_the_samples_parse_with_the_pages_values() {
    for (name, ep) in [
        ("generate_inline.json", Endpoint::Generate),
        ("get_200.json", Endpoint::Get),
    ] {
        let body = sample(name);
        let raw = vmr::api::report_json(ep, &body).unwrap_or_else(|| panic!("{name}: no REPORT"));
        // What export reads: the borrowed view.
        let v: ReportView = serde_json::from_str(raw.get()).expect("REPORT parses as the view");
        assert!(v.brand_name.text().value().is_some(), "{name}");
        let Held::Is(parts) = &v.overview.0 else {
            panic!("{name}: no overview")
        };
        assert!(parts.iter().any(|(k, _)| k == "appearance"), "{name}");
        let Held::Is(slots) = &v.result_content.0 else {
            panic!("{name}: no records")
        };
        assert!(slots.iter().any(|s| matches!(s, Slot::Record(_))), "{name}");
        // The reference model reads the same, and keeps all of it.
        let r: Report = serde_json::from_str(raw.get()).expect("REPORT parses");
        assert!(r.brand_name.get().is_some(), "{name}");
        assert!(
            r.overview_parts().iter().any(|(k, _)| *k == "appearance"),
            "{name}"
        );
        assert!(r.result_content.iter().count() > 0, "{name}");
        // Unknown fields survive a parse and a serialize.
        let again: serde_json::Value = serde_json::to_value(&r).expect("serializes");
        let orig: serde_json::Value = serde_json::from_str(raw.get()).expect("JSON");
        for key in orig.as_object().expect("object").keys() {
            assert!(again.get(key).is_some(), "{name}: field {key} lost");
        }
    }
}
