//! `corpora/manifest.json` (schema 2) holds vhdref to the conformance
//! corpus:
//!
//! * the checker (`vhdref::check`) reports exactly the case's `rules`, plus
//!   its `parent_rules` (what an invalid parent breaks on its own, found
//!   when that parent is judged as a layer), no more and no less, and its
//!   verdict is the case's;
//! * every case that must open opens with `Image::open`, is as large as its
//!   `current_size`, reads as its `sha256` (each layer of a chain too),
//!   shows the expected `info` fields and reports no finding outside its
//!   `rules`; every case that must not open is refused with one of them.
//!
//! Cases stored as `.gz` are unpacked into a temporary directory first,
//! keeping their directory layout, so parent locators still resolve.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use serde_json::Value;
use sha2::{Digest, Sha256};
use vhdref::check::{self, CheckOptions, Verdict};
use vhdref::{Image, ParentSource, Rule, Severity};

const FAMILIES: &[&str] = &[
    "win",
    "vpc",
    "vs",
    "d2v",
    "vbox",
    "tap",
    "qemu",
    "azure",
    "pyvhd",
    "vhdref",
    "generator",
];

fn corpora() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(corpora().join("manifest.json"))
        .expect("corpora/manifest.json is readable");
    serde_json::from_str(&text).expect("corpora/manifest.json is JSON")
}

/// Every rule ID with its severity.
fn all_rules() -> BTreeMap<String, Severity> {
    Rule::ALL
        .iter()
        .map(|r| (r.id().to_string(), r.severity()))
        .collect()
}

fn text<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("{}: {key} is a string", case["name"]))
}

fn rules_of(case: &Value) -> BTreeSet<String> {
    ids(case, "rules")
}

/// The rule IDs listed under `key` (empty when the key is absent).
fn ids(case: &Value, key: &str) -> BTreeSet<String> {
    case[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r.as_str().expect("a rule ID is a string").to_string())
        .collect()
}

/// The checker's report on the case: every rule found (in every layer of
/// the chain) and the verdict.
fn check_case(case: &Value, place: &Materialized, failures: &mut Vec<String>) {
    let name = text(case, "name");
    let file = text(case, "file");
    let report = check::check(place.path(file), &CheckOptions::new());
    let got: BTreeSet<String> = report
        .findings
        .iter()
        .map(|f| f.finding.rule.id().to_string())
        .collect();
    let mut want = rules_of(case);
    want.extend(ids(case, "parent_rules"));
    if got != want {
        let detail: Vec<String> = report
            .findings
            .iter()
            .map(|f| {
                format!(
                    "{} at depth {}: {}",
                    f.finding.rule, f.depth, f.finding.message
                )
            })
            .collect();
        failures.push(format!(
            "{name}: the checker found {got:?}, expected {want:?}\n    {}",
            detail.join("\n    ")
        ));
    }
    let verdict = match report.verdict() {
        Verdict::Clean => "valid",
        Verdict::Warnings => "warnings",
        Verdict::Errors | Verdict::NotChecked => "errors",
    };
    if verdict != text(case, "verdict") {
        failures.push(format!(
            "{name}: the checker's verdict is {:?}, expected {}",
            report.verdict(),
            text(case, "verdict")
        ));
    }
}

/// Whether a stored file is gzip-compressed (its name ends in `.gz`).
fn is_gz(name: &str) -> bool {
    Path::new(name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// The stored name without `.gz`.
fn unpacked(name: &str) -> &str {
    if is_gz(name) {
        &name[..name.len() - 3]
    } else {
        name
    }
}

/// Copies `from` to `to`, gunzipping it if its name ends in `.gz`. Runs of
/// zeros are skipped with a seek, so a 256 MiB block costs no disk space.
fn unpack(from: &Path, to: &Path) {
    let file = File::open(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    let mut reader: Box<dyn Read> = if is_gz(&from.to_string_lossy()) {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut out = File::create(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    let mut buf = vec![0u8; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(i64::try_from(n).expect("chunk fits")))
                .expect("seek");
        } else {
            out.write_all(&buf[..n]).expect("write");
        }
        len += n as u64;
    }
    out.set_len(len).expect("set_len");
}

/// The directory a case's files live in, relative to corpora/: its own
/// directory for a chain, corpora/ itself for a single image.
fn case_dir(file: &str) -> Option<&str> {
    file.rsplit_once('/').map(|(dir, _)| dir)
}

/// Where the case can be opened: in place when nothing is compressed,
/// otherwise a temporary copy with every `.gz` unpacked.
struct Materialized {
    _temp: Option<tempfile::TempDir>,
    root: PathBuf,
}

impl Materialized {
    fn new(file: &str) -> Self {
        let src = corpora();
        let files: Vec<String> = match case_dir(file) {
            Some(dir) => std::fs::read_dir(src.join(dir))
                .unwrap_or_else(|e| panic!("{dir}: {e}"))
                .map(|e| {
                    format!(
                        "{dir}/{}",
                        e.expect("dir entry").file_name().to_string_lossy()
                    )
                })
                .collect(),
            None => vec![file.to_string()],
        };
        if !files.iter().any(|f| is_gz(f)) {
            return Materialized {
                _temp: None,
                root: src,
            };
        }
        let temp = tempfile::tempdir().expect("temp dir");
        for f in &files {
            let to = temp.path().join(unpacked(f));
            std::fs::create_dir_all(to.parent().expect("parent dir")).expect("mkdir");
            unpack(&src.join(f), &to);
        }
        Materialized {
            root: temp.path().to_path_buf(),
            _temp: Some(temp),
        }
    }

    fn path(&self, stored: &str) -> PathBuf {
        self.root.join(unpacked(stored))
    }
}

fn contents_sha256(img: &mut Image) -> Result<String, String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let size = img.size();
    while pos < size {
        let n = usize::try_from((size - pos).min(buf.len() as u64)).expect("fits");
        img.read_at(pos, &mut buf[..n])
            .map_err(|e| format!("read at {pos}: {e}"))?;
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hasher.finalize().iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    }))
}

/// What `vhd info` would show for the fields the manifest pins.
fn check_info(case: &Value, img: &Image, failures: &mut Vec<String>) {
    let name = text(case, "name");
    let info = &case["info"];
    let f = img.footer();
    let g = f.disk_geometry;
    let mut expect = |key: &str, got: Value| {
        if info[key] != got {
            failures.push(format!(
                "{name}: info {key} is {got}, expected {}",
                info[key]
            ));
        }
    };
    expect("type", Value::from(img.disk_type().name()));
    expect("current_size", Value::from(f.current_size));
    expect(
        "block_size",
        img.block_size().map_or(Value::Null, Value::from),
    );
    expect(
        "creator_application",
        Value::from(f.creator_application_str()),
    );
    expect("creator_host_os", Value::from(f.creator_host_os_str()));
    expect(
        "geometry",
        serde_json::json!([g.cylinders, g.heads, g.sectors_per_track]),
    );
    if let Some(want) = info.get("parent_source") {
        let got = match img.parent_source() {
            Some(ParentSource::Locator { platform, .. }) => {
                serde_json::json!({"via": "locator", "platform": platform})
            }
            Some(ParentSource::Name(_)) => serde_json::json!({"via": "name"}),
            Some(ParentSource::Caller(_)) => serde_json::json!({"via": "caller"}),
            None => Value::Null,
        };
        if &got != want {
            failures.push(format!("{name}: parent found {got}, expected {want}"));
        }
    }
}

fn check_open_case(case: &Value, failures: &mut Vec<String>) {
    let name = text(case, "name");
    let file = text(case, "file");
    let rules = rules_of(case);
    let place = Materialized::new(file);
    check_case(case, &place, failures);
    let mut img = match Image::open(place.path(file)) {
        Ok(img) => img,
        Err(e) => {
            failures.push(format!("{name}: does not open: {e}"));
            return;
        }
    };
    for finding in img.findings() {
        if !rules.contains(finding.rule.id()) {
            failures.push(format!(
                "{name}: finding {} ({}) is not in {rules:?}",
                finding.rule.id(),
                finding.message
            ));
        }
    }
    let size = case["current_size"].as_u64().expect("current_size");
    if img.size() != size {
        failures.push(format!("{name}: size {}, expected {size}", img.size()));
        return;
    }
    check_info(case, &img, failures);
    match contents_sha256(&mut img) {
        Ok(got) if got == text(case, "sha256") => {}
        Ok(got) => failures.push(format!(
            "{name}: contents hash to {got}, not the manifest's"
        )),
        Err(e) => failures.push(format!("{name}: {e}")),
    }
    drop(img);
    for layer in case["layers"].as_array().into_iter().flatten() {
        let Some(want) = layer["sha256"].as_str() else {
            continue;
        };
        let lf = text(layer, "file");
        match Image::open(place.path(lf)) {
            Ok(mut l) => match contents_sha256(&mut l) {
                Ok(got) if got == want => {}
                Ok(_) => failures.push(format!("{name}: layer {lf} reads differently")),
                Err(e) => failures.push(format!("{name}: layer {lf}: {e}")),
            },
            Err(e) => failures.push(format!("{name}: layer {lf} does not open: {e}")),
        }
    }
}

fn check_refused_case(case: &Value, failures: &mut Vec<String>) {
    let name = text(case, "name");
    let file = text(case, "file");
    let rules = rules_of(case);
    let place = Materialized::new(file);
    check_case(case, &place, failures);
    match Image::open(place.path(file)) {
        Ok(_) => failures.push(format!("{name}: opened, expected a refusal with {rules:?}")),
        Err(e) => {
            let got = e.rule().map(|r| r.id().to_string());
            if !got.as_ref().is_some_and(|g| rules.contains(g)) {
                failures.push(format!(
                    "{name}: refused with {e}, expected one of {rules:?}"
                ));
            }
        }
    }
}

#[test]
fn every_corpus_case_gets_its_manifest_verdict() {
    let manifest = manifest();
    assert_eq!(manifest["schema_version"], 2, "manifest schema version");
    let cases = manifest["cases"].as_array().expect("cases");
    let mut failures = Vec::new();
    for case in cases {
        if case["open"].as_bool().expect("open is a boolean") {
            check_open_case(case, &mut failures);
        } else {
            check_refused_case(case, &mut failures);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn the_manifest_is_consistent_and_covers_every_rule() {
    let manifest = manifest();
    let cases = manifest["cases"].as_array().expect("cases");
    assert!(
        cases.len() >= 150,
        "at least 150 cases, found {}",
        cases.len()
    );
    let rules = all_rules();
    let mut names = BTreeSet::new();
    let mut covered: BTreeSet<String> = BTreeSet::new();
    let mut problems = Vec::new();
    for case in cases {
        let name = text(case, "name");
        if !names.insert(name.to_string()) {
            problems.push(format!("{name}: duplicate name"));
        }
        let file = text(case, "file");
        let stem = case_dir(file).unwrap_or_else(|| {
            unpacked(file)
                .strip_suffix(".vhd")
                .unwrap_or_else(|| unpacked(file))
        });
        if stem != name {
            problems.push(format!("{name}: file {file} is not named after the case"));
        }
        if !corpora().join(file).is_file() {
            problems.push(format!("{name}: {file} is missing"));
        }
        if !FAMILIES.contains(&text(case, "family")) {
            problems.push(format!("{name}: unknown family {}", case["family"]));
        }
        let case_rules = rules_of(case);
        let sorted: Vec<&String> = case_rules.iter().collect();
        let listed: Vec<&str> = case["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if sorted.len() != listed.len() || sorted.iter().zip(&listed).any(|(a, b)| a != b) {
            problems.push(format!("{name}: rules are not sorted and unique"));
        }
        let mut errors = false;
        for r in &case_rules {
            match rules.get(r) {
                None => problems.push(format!("{name}: unknown rule {r}")),
                Some(Severity::Error) => errors = true,
                Some(Severity::Warning) => {}
            }
        }
        let verdict = text(case, "verdict");
        let expected_verdict = if errors {
            "errors"
        } else if case_rules.is_empty() {
            "valid"
        } else {
            "warnings"
        };
        if verdict != expected_verdict {
            problems.push(format!(
                "{name}: verdict {verdict}, rules say {expected_verdict}"
            ));
        }
        if case["open"].as_bool() != Some(!errors) {
            problems.push(format!("{name}: open must be {}", !errors));
        }
        if !errors && (case["sha256"].as_str().is_none() || case["info"].is_null()) {
            problems.push(format!("{name}: an image that opens needs sha256 and info"));
        }
        check_name(
            name,
            &case_rules,
            &rules,
            errors,
            &mut covered,
            &mut problems,
        );
    }
    for rule in rules.keys() {
        if !covered.contains(rule) {
            problems.push(format!("rule {rule} has no x-/w- case named after it"));
        }
    }
    assert!(
        problems.is_empty(),
        "manifest problems:\n{}",
        problems.join("\n")
    );
}

/// `x-RULE...` names an error rule the case breaks, `w-RULE...` a warning
/// rule (and no error), any other name a valid case; records which rules
/// have a case named after them.
fn check_name(
    name: &str,
    case_rules: &BTreeSet<String>,
    rules: &BTreeMap<String, Severity>,
    errors: bool,
    covered: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    let named = |prefix: &str, severity: Severity| {
        name.strip_prefix(prefix).is_some_and(|rest| {
            case_rules
                .iter()
                .any(|r| rest.starts_with(r.as_str()) && rules.get(r) == Some(&severity))
        })
    };
    if name.starts_with("x-") {
        if !named("x-", Severity::Error) {
            problems.push(format!(
                "{name}: an x- case must name an error rule it breaks"
            ));
        }
    } else if name.starts_with("w-") {
        if !named("w-", Severity::Warning) || errors {
            problems.push(format!(
                "{name}: a w- case must name a warning rule it breaks"
            ));
        }
    } else if !case_rules.is_empty() {
        problems.push(format!("{name}: a case without x-/w- must be valid"));
    }
    if let Some(rest) = name.strip_prefix("x-").or_else(|| name.strip_prefix("w-")) {
        for r in case_rules {
            if rest.starts_with(r.as_str()) {
                covered.insert(r.clone());
            }
        }
    }
}
