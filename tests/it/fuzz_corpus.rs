//! The fuzz targets' committed seeds (`fuzz/seeds/<target>/`: a few dozen varied inputs and
//! every named finding), replayed through the same entry points the fuzzers call (`vmr::fuzz`),
//! so what fuzzing found stays found without a fuzzer or a nightly toolchain. The working
//! corpus (`fuzz/corpus/`) is not in git and not replayed here. The findings themselves are also
//! named tests in the modules they belong to. See fuzz/README.md.

use std::path::PathBuf;

#[path = "../../fuzz/shape.rs"]
mod shape;

/// Every seed of one target, in a stable order.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no seeds", dir.display());
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).expect("a seed file reads");
            (p, data)
        })
        .collect()
}

/// Runs `f` on every input, naming the input that panics.
fn replay(target: &str, f: impl Fn(&[u8])) {
    for (path, data) in corpus(target) {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&data)));
        assert!(caught.is_ok(), "{} fails", path.display());
    }
}

#[test]
fn response_corpus() {
    replay("response", vmr::fuzz::response);
}

#[test]
fn report_corpus() {
    replay("report", vmr::fuzz::report);
}

#[test]
fn report_shaped_corpus() {
    replay("report_shaped", |data| {
        if let Some((endpoint, body)) = shape::body_of(data) {
            vmr::fuzz::report_body(endpoint, &body);
        }
    });
}

#[test]
fn input_csv_corpus() {
    replay("input_csv", vmr::fuzz::input_csv);
}

#[test]
fn config_corpus() {
    replay("config", vmr::fuzz::config_file);
}

/// The named findings are seeds, so the replay above runs them; one that went missing (say,
/// moved back into the ignored working corpus) would silently stop being replayed.
#[test]
fn findings_are_among_the_seeds() {
    let findings = [("report_shaped", "finding-deep-nesting-in-an-unknown-field")];
    for (target, name) in findings {
        let seeds = corpus(target);
        assert!(
            seeds.iter().any(|(p, _)| p.ends_with(name)),
            "fuzz/seeds/{target}/{name} is missing"
        );
    }
}
