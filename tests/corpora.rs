//! Every case of `corpora/manifest.json` gets exactly its manifest verdict:
//! `valid` opens with no finding and reads as the recorded contents,
//! `warnings` opens with exactly the listed warning rules and reads right,
//! `invalid` fails to open with the listed rule.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};
use vhdref::Image;

fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/manifest.json"),
    )
    .expect("corpora/manifest.json");
    let json: Value = serde_json::from_str(&text).expect("manifest is JSON");
    json["cases"].as_array().expect("cases").clone()
}

fn contents_sha256(img: &mut Image) -> String {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < img.size() {
        let n = (img.size() - pos).min(buf.len() as u64) as usize;
        img.read_at(pos, &mut buf[..n]).expect("read");
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

#[test]
fn every_corpus_case_gets_its_manifest_verdict() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora");
    let cases = manifest();
    assert!(cases.len() >= 10, "the corpus has its cases");
    let mut failures = Vec::new();
    for case in &cases {
        let file = case["file"].as_str().expect("file");
        let verdict = case["verdict"].as_str().expect("verdict");
        let rules: BTreeSet<String> = case["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .map(|r| r.as_str().expect("rule id").to_string())
            .collect();
        match (verdict, Image::open(dir.join(file))) {
            ("invalid", Ok(_)) => failures.push(format!("{file}: opened, expected {rules:?}")),
            ("invalid", Err(e)) => {
                let got = e.rule().map(|r| r.id().to_string());
                if got.as_ref().is_none_or(|g| !rules.contains(g)) {
                    failures.push(format!("{file}: error {e}, expected {rules:?}"));
                }
            }
            (_, Err(e)) => failures.push(format!("{file}: {e}, expected {verdict}")),
            (_, Ok(mut img)) => {
                let found: BTreeSet<String> = img
                    .findings()
                    .iter()
                    .map(|f| f.rule.id().to_string())
                    .collect();
                let expected = if verdict == "valid" {
                    BTreeSet::new()
                } else {
                    rules.clone()
                };
                if found != expected {
                    failures.push(format!("{file}: findings {found:?}, expected {expected:?}"));
                }
                let size = case["current_size"].as_u64().expect("current_size");
                if img.size() != size {
                    failures.push(format!("{file}: size {}, expected {size}", img.size()));
                } else if contents_sha256(&mut img) != case["sha256"].as_str().expect("sha256") {
                    failures.push(format!("{file}: contents differ from the manifest"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
}
