//! `vhd conform`: vhdref's own reader and writers pass every case; each
//! adapter of `scripts/conform/peers.tsv` whose peer is installed fails
//! exactly the cases its `scripts/conform/expected/NAME.txt` lists (a new
//! divergence, or one that went away, fails the test); broken readers and
//! writers fail the cases they break; `--cases` selects, the JSON and
//! `JUnit` reports are well-formed and agree with the summary, and the
//! exit status says whether everything passed.
//!
//! The real adapters run over every case once each (5 to 75 s per peer
//! on a loaded two-core machine, about two minutes for the whole file
//! with the default two test threads); everything else runs on a handful
//! of cases.

#[path = "common/skip.rs"]
mod skip;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `vhd conform ARGS` in the source tree.
fn conform(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_vhd"))
        .arg("conform")
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("vhd runs");
    assert_ne!(
        out.status.code(),
        Some(101),
        "vhd conform {args:?} panicked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `vhd conform ARGS --output json` and parses the report.
fn conform_json(args: &[&str]) -> (Option<i32>, Value) {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = conform(&all);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "vhd conform {args:?} --output json is not JSON ({e}): {}\nstderr: {}",
            stdout(&out),
            stderr(&out)
        )
    });
    (out.status.code(), report)
}

/// Every case of every suite: (suite peer, case).
fn cases(report: &Value) -> Vec<(String, Value)> {
    report["suites"]
        .as_array()
        .expect("suites")
        .iter()
        .flat_map(|s| {
            let peer = s["peer"].as_str().expect("peer").to_string();
            s["cases"]
                .as_array()
                .expect("cases")
                .iter()
                .map(move |c| (peer.clone(), c.clone()))
        })
        .collect()
}

/// The case of that name in a one-suite report.
fn case<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["suites"][0]["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name} in {report}"))
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(root().join("corpora/manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest is JSON")
}

fn corpus_names() -> Vec<String> {
    manifest()["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| c["name"].as_str().expect("name").to_string())
        .collect()
}

/// Corpus cases whose image is a differencing image (a chain).
fn differencing_cases() -> usize {
    manifest()["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| !c["layers"].is_null() || c["info"]["type"] == "differencing")
        .count()
}

fn writer_case_count() -> usize {
    vhdref::conform::writer_cases().len()
}

/// The last line of human output: `N passed, N failed, N unsupported`.
fn summary_line(out: &Output) -> (usize, usize, usize) {
    let text = stdout(out);
    let last = text.lines().last().unwrap_or_default().to_string();
    let numbers: Vec<usize> = last
        .split(", ")
        .map(|part| {
            part.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a summary line: {last:?}"))
        })
        .collect();
    assert_eq!(numbers.len(), 3, "not a summary line: {last:?}");
    assert!(
        last.ends_with(" unsupported") && last.contains(" passed, ") && last.contains(" failed, "),
        "not a summary line: {last:?}"
    );
    (numbers[0], numbers[1], numbers[2])
}

// ------------------------------------------------------------------ --self

#[test]
fn vhdrefs_own_reader_and_writers_pass_every_case() {
    let out = conform(&["--self"]);
    let (passed, failed, unsupported) = summary_line(&out);
    let text = stdout(&out);
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("pass"))
        .collect();
    assert_eq!(
        (failed, unsupported),
        (0, 0),
        "vhd conform --self:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        passed,
        corpus_names().len() + 2 * writer_case_count(),
        "every corpus case once, every writer case for fixed and dynamic"
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

// ------------------------------------------------------- the real adapters

/// One line of scripts/conform/peers.tsv.
struct Adapter {
    name: String,
    kind: String,
    probe: String,
    command: String,
    options: Vec<String>,
}

fn adapter(name: &str) -> Adapter {
    let text =
        std::fs::read_to_string(root().join("scripts/conform/peers.tsv")).expect("peers.tsv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 5, "peers.tsv: 5 tab-separated fields: {l:?}");
            Adapter {
                name: f[0].to_string(),
                kind: f[1].to_string(),
                probe: f[2].to_string(),
                command: f[3].to_string(),
                options: f[4].split_whitespace().map(String::from).collect(),
            }
        })
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("peers.tsv has no adapter {name}"))
}

/// The case names of scripts/conform/expected/NAME.txt.
fn expected_failures(name: &str) -> BTreeSet<String> {
    let path = root().join(format!("scripts/conform/expected/{name}.txt"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split('#').next())
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// Whether the adapter's peer is installed (its probe succeeds); if not,
/// the test is skipped (and fails under `VHDREF_REQUIRE_PEERS=1`).
fn installed(a: &Adapter) -> bool {
    let out = Command::new("sh")
        .args(["-c", &a.probe])
        .env("VHD", env!("CARGO_BIN_EXE_vhd"))
        .current_dir(root())
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            skip::skip(&format!(
                "{}: `{}` failed: {}",
                a.name,
                a.probe,
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            false
        }
        Err(e) => {
            skip::skip(&format!("{}: `{}` could not run: {e}", a.name, a.probe));
            false
        }
    }
}

/// Shows a line in the test output even when the test passes.
fn show(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Runs the adapter over every case and holds it to its expected
/// failures: no more, no fewer; unsupported cases exactly those it
/// declares; the exit status 0 only when nothing failed.
fn adapter_fails_exactly_its_known_divergences(name: &str) {
    let a = adapter(name);
    if !installed(&a) {
        return;
    }
    let flag = format!("--{}", a.kind);
    let mut args: Vec<&str> = vec![&flag, &a.command, "--name", &a.name];
    args.extend(a.options.iter().map(String::as_str));
    let start = Instant::now();
    let (code, report) = conform_json(&args);
    let suite = &report["suites"][0];
    let summary = &suite["summary"];
    show(&format!(
        "conform {} {}: {} passed, {} failed, {} unsupported in {:.1} s",
        a.kind,
        a.name,
        summary["passed"],
        summary["failed"],
        summary["unsupported"],
        start.elapsed().as_secs_f64()
    ));
    let all = cases(&report);
    let failed: BTreeSet<String> = all
        .iter()
        .filter(|(_, c)| c["outcome"] == "fail")
        .map(|(_, c)| c["name"].as_str().expect("name").to_string())
        .collect();
    let expected = expected_failures(name);
    let new: Vec<String> = all
        .iter()
        .filter(|(_, c)| c["outcome"] == "fail")
        .filter(|(_, c)| !expected.contains(c["name"].as_str().unwrap_or_default()))
        .map(|(_, c)| format!("{}: {}", c["name"], c["detail"]))
        .collect();
    let gone: Vec<&String> = expected.difference(&failed).collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "{name}: the failures are not scripts/conform/expected/{name}.txt\n\
         new failures:\n  {}\nexpected but passed: {gone:?}\n\
         (if this is a real change, rerun scripts/conform/divergences.py --update-expected \
         and explain it in spec/divergences.md)",
        new.join("\n  ")
    );
    let total = if a.kind == "reader" {
        corpus_names().len()
    } else {
        writer_case_count()
    };
    let unsupported = if a.options.iter().any(|o| o == "--skip-differencing") {
        differencing_cases()
    } else {
        0
    };
    assert_eq!(summary["unsupported"], unsupported, "{name}: unsupported");
    assert_eq!(summary["failed"], failed.len(), "{name}: failed");
    assert_eq!(
        summary["passed"],
        total - failed.len() - unsupported,
        "{name}: passed"
    );
    let want = if failed.is_empty() && unsupported == 0 {
        0
    } else {
        2
    };
    assert_eq!(code, Some(want), "{name}: exit status");
}

macro_rules! adapter_tests {
    ($($test:ident => $name:literal,)*) => {$(
        #[test]
        fn $test() {
            adapter_fails_exactly_its_known_divergences($name);
        }
    )*};
}

adapter_tests! {
    qemu_reader_fails_exactly_its_known_divergences => "qemu",
    libvhdi_debian_reader_fails_exactly_its_known_divergences => "libvhdi-debian",
    libvhdi_2026_reader_fails_exactly_its_known_divergences => "libvhdi-2026",
    sevenzip_reader_fails_exactly_its_known_divergences => "7zip",
    dissect_reader_fails_exactly_its_known_divergences => "dissect",
    vhd_reader_script_passes_every_case => "vhd",
    qemu_dynamic_writer_fails_exactly_its_known_divergences => "qemu-dynamic",
    qemu_dynamic_force_size_writer_fails_exactly_its_known_divergences => "qemu-dynamic-force-size",
    qemu_fixed_writer_fails_exactly_its_known_divergences => "qemu-fixed",
    qemu_fixed_force_size_writer_fails_exactly_its_known_divergences => "qemu-fixed-force-size",
    pyvhd_writer_fails_exactly_its_known_divergences => "pyvhd",
    vhd_dynamic_writer_script_passes_every_case => "vhd-dynamic",
    vhd_fixed_writer_script_passes_every_case => "vhd-fixed",
}

#[test]
fn every_adapter_of_the_registry_has_a_test_and_an_expected_list() {
    let text =
        std::fs::read_to_string(root().join("scripts/conform/peers.tsv")).expect("peers.tsv");
    let this = std::fs::read_to_string(root().join("tests/conform.rs")).expect("this file");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let name = line.split('\t').next().unwrap_or_default();
        assert!(
            this.contains(&format!("=> \"{name}\",")),
            "peers.tsv lists {name}, which no test runs"
        );
        assert!(
            root()
                .join(format!("scripts/conform/expected/{name}.txt"))
                .is_file(),
            "scripts/conform/expected/{name}.txt is missing"
        );
    }
}

#[test]
fn every_expected_failure_names_a_divergence_the_spec_describes() {
    let spec = std::fs::read_to_string(root().join("spec/divergences.md")).expect("divergences");
    let dir = root().join("scripts/conform/expected");
    for entry in std::fs::read_dir(&dir).expect("expected/") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        for line in text.lines().filter_map(|l| l.split('#').next()) {
            let mut words = line.split_whitespace();
            let Some(case) = words.next() else { continue };
            let tags: Vec<&str> = words.collect();
            assert!(
                !tags.is_empty(),
                "{}: {case} names no divergence",
                path.display()
            );
            for tag in tags {
                assert!(
                    spec.contains(&format!("\n| {tag} | ")),
                    "{}: {case}: {tag} is not a row of spec/divergences.md",
                    path.display()
                );
            }
        }
    }
}

// ------------------------------------------------- broken readers and writers

#[test]
fn a_reader_that_copies_the_image_fails_valid_and_error_cases() {
    // The raw output is the VHD file itself, not its guest contents.
    let (code, report) = conform_json(&[
        "--reader",
        "cp {image} {raw}",
        "--cases",
        "azure-fixed-1m",
        "--cases",
        "vpc-dynamic",
        "--cases",
        "x-FTR-CHECKSUM-fixed",
    ]);
    assert_eq!(code, Some(2));
    let fixed = case(&report, "azure-fixed-1m");
    assert_eq!(fixed["outcome"], "fail");
    // A fixed image is its contents and a footer: the prefix is right.
    assert_eq!(
        fixed["detail"],
        "1049088 bytes, expected 1048576; the first 1048576 bytes are right"
    );
    let dynamic = case(&report, "vpc-dynamic");
    assert_eq!(dynamic["outcome"], "fail");
    assert_eq!(dynamic["offset"], 0, "{dynamic}");
    let broken = case(&report, "x-FTR-CHECKSUM-fixed");
    assert_eq!(broken["outcome"], "fail");
    assert_eq!(broken["rules"], serde_json::json!(["FTR-CHECKSUM"]));
    assert!(
        broken["detail"]
            .as_str()
            .is_some_and(|d| d.ends_with("from an image that breaks FTR-CHECKSUM")),
        "{broken}"
    );
}

#[test]
fn a_reader_that_changes_one_byte_is_caught_at_that_offset() {
    let template = r#""$VHD" convert --from vhd --to raw {image} {raw} >/dev/null && printf 'Z' | dd of={raw} bs=1 seek=5000 conv=notrunc 2>/dev/null"#;
    let (code, report) = conform_json(&["--reader", template, "--cases", "vpc-dynamic"]);
    assert_eq!(code, Some(2));
    let c = case(&report, "vpc-dynamic");
    assert_eq!(c["outcome"], "fail");
    assert_eq!(c["offset"], 5000, "{c}");
    assert!(
        c["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("differs from offset 0x1388 (sector 9): 0x5a")),
        "{c}"
    );
}

#[test]
fn a_reader_that_refuses_everything_passes_only_the_error_cases() {
    let (code, report) = conform_json(&[
        "--reader",
        "echo no >&2; exit 3 # {image} {raw}",
        "--cases",
        "vs-fixed",
        "--cases",
        "x-HDR-CHECKSUM",
    ]);
    assert_eq!(code, Some(2));
    let valid = case(&report, "vs-fixed");
    assert_eq!(valid["outcome"], "fail");
    assert_eq!(valid["detail"], "refused a readable image (exit 3: no)");
    assert_eq!(valid["status"], "exit 3");
    assert_eq!(valid["output"], "no");
    let error = case(&report, "x-HDR-CHECKSUM");
    assert_eq!(error["outcome"], "pass");
    assert_eq!(error["detail"], "refused it (exit 3: no)");
}

#[test]
fn a_reader_that_is_not_installed_refuses_nothing() {
    let (code, report) = conform_json(&[
        "--reader",
        "no-such-reader-here {image} {raw}",
        "--cases",
        "x-HDR-CHECKSUM",
    ]);
    assert_eq!(code, Some(2));
    let c = case(&report, "x-HDR-CHECKSUM");
    assert_eq!(c["outcome"], "fail");
    assert!(
        c["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("the command did not run (exit 127: ")),
        "{c}"
    );
}

#[test]
fn a_reader_that_hangs_is_killed_at_the_time_limit_with_everything_it_started() {
    let dir = tempfile::tempdir().expect("temp dir");
    let late = dir.path().join("late");
    // The shell starts a subshell that would write a file after 3 s, and
    // waits for it: killing only the shell would leave the subshell to
    // write it.
    let template = format!(
        "(sleep 3 && touch '{}') & wait # {{image}} {{raw}}",
        late.display()
    );
    let start = Instant::now();
    let (code, report) = conform_json(&[
        "--reader",
        &template,
        "--timeout",
        "1",
        "--cases",
        "vs-fixed",
    ]);
    assert_eq!(code, Some(2));
    assert_eq!(
        case(&report, "vs-fixed")["detail"],
        "timed out reading a valid image"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !late.exists(),
        "a process the reader started outlived the time limit"
    );
}

#[test]
fn an_interrupted_run_kills_the_reader_removes_its_scratch_and_reports_what_finished() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scratch = dir.path().join("tmp");
    std::fs::create_dir(&scratch).expect("scratch parent");
    let started = dir.path().join("started");
    let late = dir.path().join("late");
    // The first case (vs-dynamic) reads with vhd; the second hangs in a subshell that
    // would write a file after 4 s. SIGINT comes while it hangs.
    let template = format!(
        "case {{image}} in *vs-dynamic*) \"$VHD\" convert {{image}} {{raw}} --to raw;; \
         *) touch '{started}'; (sleep 4 && touch '{late}') & wait;; esac",
        started = started.display(),
        late = late.display()
    );
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_vhd"))
        .args(["conform", "--output", "json", "--reader", &template])
        .args(["--cases", "vs-fixed", "--cases", "vs-dynamic"])
        .current_dir(root())
        .env("TMPDIR", &scratch)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vhd runs");
    while !started.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the hanging case never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-INT", &pid]).status();
    assert!(killed.is_ok_and(|s| s.success()), "kill -INT {pid}");
    let interrupted = Instant::now();
    let out = child.wait_with_output().expect("vhd ends");
    assert!(
        interrupted.elapsed() < Duration::from_secs(3),
        "an interrupt must not wait for the reader: {:?}",
        interrupted.elapsed()
    );
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted; the report covers the 1 case that finished"),
        "{}",
        stderr(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let names: Vec<Value> = cases(&report)
        .into_iter()
        .map(|(_, c)| c["name"].clone())
        .collect();
    assert_eq!(names, ["vs-dynamic"], "only the finished case is reported");
    assert_eq!(case(&report, "vs-dynamic")["outcome"], "pass");
    let left: Vec<_> = std::fs::read_dir(&scratch).expect("scratch").collect();
    assert!(left.is_empty(), "scratch directories left behind: {left:?}");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        !late.exists(),
        "a process the reader started outlived the interrupt"
    );
}

#[test]
fn a_writer_that_copies_the_raw_disk_writes_no_vhd() {
    let (code, report) = conform_json(&[
        "--writer",
        "cp {raw} {image}",
        "--cases",
        "one-sector",
        "--cases",
        "empty",
    ]);
    assert_eq!(code, Some(2));
    for name in ["one-sector", "empty"] {
        let c = case(&report, name);
        assert_eq!(c["outcome"], "fail", "{c}");
        assert!(
            c["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("wrote no image the checker can read")),
            "{c}"
        );
    }
}

#[test]
fn a_writer_that_ignores_its_input_fails_on_contents_and_size() {
    let (code, report) = conform_json(&[
        "--writer",
        r#""$VHD" create {image} 1M >/dev/null # {raw}"#,
        "--cases",
        "one-sector",
        "--cases",
        "empty",
    ]);
    assert_eq!(code, Some(2));
    let one = case(&report, "one-sector");
    assert_eq!(one["outcome"], "fail");
    assert_eq!(one["offset"], 0);
    let empty = case(&report, "empty");
    assert_eq!(empty["outcome"], "fail");
    assert!(
        empty["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("grew the disk from 0 to 1048576 bytes")),
        "{empty}"
    );
}

#[test]
fn a_writer_whose_image_breaks_a_rule_fails_with_that_rule() {
    // vhd writes a good fixed image; then a byte of its footer's creator
    // application changes, and the checksum no longer holds.
    let template = r#""$VHD" convert --from raw --to fixed {raw} {image} >/dev/null && size=$(wc -c < {image}) && printf X | dd of={image} bs=1 seek=$((size - 512 + 28)) conv=notrunc 2>/dev/null"#;
    let (code, report) = conform_json(&["--writer", template, "--cases", "ones-4m"]);
    assert_eq!(code, Some(2));
    let c = case(&report, "ones-4m");
    assert_eq!(c["outcome"], "fail");
    assert_eq!(c["rules"], serde_json::json!(["FTR-CHECKSUM"]), "{c}");
}

// ------------------------------------------------- selection and declarations

#[test]
fn cases_selects_by_shell_pattern_in_the_corpus_and_the_writer_set() {
    let (code, report) = conform_json(&[
        "--self",
        "--cases",
        "block-size-*k",
        "--cases",
        "chs-69632-*",
    ]);
    assert_eq!(code, Some(0));
    let mut got: Vec<(String, String)> = cases(&report)
        .into_iter()
        .map(|(peer, c)| (peer, c["name"].as_str().unwrap_or_default().to_string()))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = corpus_names()
        .into_iter()
        .filter(|n| n.starts_with("block-size-") && n.ends_with('k'))
        .map(|n| ("vhdref".to_string(), n))
        .collect();
    for peer in ["vhdref-dynamic", "vhdref-fixed"] {
        for n in ["chs-69632-below", "chs-69632-at"] {
            want.push((peer.to_string(), n.to_string()));
        }
    }
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        want.len(),
        10 + 4,
        "block-size-1k .. 512k, and two sizes twice"
    );
}

#[test]
fn a_pattern_that_matches_nothing_is_an_error() {
    let out = conform(&["--self", "--cases", "no-such-case-*"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no case matches --cases no-such-case-*"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn declared_unsupported_cases_fail_the_run_unless_allowed() {
    let reader = "scripts/conform/read-vhd.sh {image} {raw}";
    let args = [
        "--reader",
        reader,
        "--cases",
        "chain-depth-*",
        "--cases",
        "vs-fixed",
        "--skip-differencing",
    ];
    let out = conform(&args);
    assert_eq!(summary_line(&out), (1, 0, 5), "{}", stdout(&out));
    assert_eq!(out.status.code(), Some(2));
    let mut allowed = args.to_vec();
    allowed.push("--allow-unsupported");
    let out = conform(&allowed);
    assert_eq!(summary_line(&out), (1, 0, 5));
    assert_eq!(out.status.code(), Some(0));
    let (_, report) = conform_json(&[
        "--reader",
        reader,
        "--cases",
        "vs-*",
        "--unsupported",
        "vs-chain",
    ]);
    let c = case(&report, "vs-chain");
    assert_eq!(c["outcome"], "unsupported");
    assert_eq!(c["detail"], "declared unsupported (--unsupported vs-chain)");
}

#[test]
fn usage_errors_say_what_is_missing() {
    let out = conform(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--reader CMD, --writer CMD or --self"));
    let out = conform(&["--reader", "cp {image} out.raw"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("must contain {raw}"),
        "{}",
        stderr(&out)
    );
    let out = conform(&["--self", "--corpus", "/nonexistent/corpus"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/corpus/manifest.json: cannot read it"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn list_shows_the_selected_cases_without_running_them() {
    let out = conform(&[
        "--self", "--list", "--cases", "empty", "--cases", "vs-fixed",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("reader  vs-fixed  valid"), "{text}");
    assert!(text.contains("writer  empty  0 bytes"), "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");
}

// ------------------------------------------------------------------ reports

#[test]
fn the_json_report_adds_up() {
    let (code, report) = conform_json(&[
        "--reader",
        "cp {image} {raw}",
        "--cases",
        "vs-*",
        "--cases",
        "x-FTR-COOKIE-*",
    ]);
    assert_eq!(code, Some(2));
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["exit_code"], 2);
    assert!(
        report["corpus"]
            .as_str()
            .is_some_and(|c| c.ends_with("corpora"))
    );
    let all = cases(&report);
    let count = |o: &str| all.iter().filter(|(_, c)| c["outcome"] == o).count();
    assert_eq!(report["summary"]["passed"], count("pass"));
    assert_eq!(report["summary"]["failed"], count("fail"));
    assert_eq!(report["summary"]["unsupported"], count("unsupported"));
    assert_eq!(report["suites"][0]["kind"], "reader");
    assert_eq!(report["suites"][0]["peer"], "cp");
    assert_eq!(report["suites"][0]["command"], "cp {image} {raw}");
    for (_, c) in &all {
        for key in ["detail", "status", "output"] {
            assert!(c[key].is_string(), "{key} of {c}");
        }
        assert!(c["seconds"].as_f64().is_some_and(|s| s >= 0.0), "{c}");
        assert!(c["notes"].is_array() && c["rules"].is_array(), "{c}");
    }
}

#[test]
fn the_junit_report_is_well_formed_and_agrees_with_the_json_one() {
    // A reader that refuses everything, with markup and a control
    // character in what it says.
    let args = [
        "--reader",
        r#"printf '<b> & "it'"'"'s" \001\n' >&2; exit 1 # {image} {raw}"#,
        "--cases",
        "vs-*",
        "--cases",
        "x-FTR-COOKIE-*",
        "--unsupported",
        "vs-chain",
    ];
    let (_, report) = conform_json(&args);
    let mut junit_args = args.to_vec();
    junit_args.extend(["--output", "junit"]);
    let out = conform(&junit_args);
    assert_eq!(out.status.code(), Some(2));
    let xml = stdout(&out);
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
    let elements = well_formed(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let total = cases(&report).len();
    assert_eq!(elements.iter().filter(|e| *e == "testcase").count(), total);
    let s = &report["summary"];
    assert_eq!(
        elements.iter().filter(|e| *e == "failure").count(),
        usize::try_from(s["failed"].as_u64().unwrap_or(0)).unwrap_or(0)
    );
    assert_eq!(elements.iter().filter(|e| *e == "skipped").count(), 1);
    assert!(
        xml.contains("(exit 1: &lt;b&gt; &amp; &quot;it&apos;s&quot; \\x01)"),
        "{xml}"
    );
    assert!(xml.contains(&format!(
        "<testsuites name=\"vhd conform\" tests=\"{total}\" failures=\"{}\" skipped=\"1\"",
        s["failed"]
    )));
}

/// Checks that `xml` is well-formed (a declaration, then one root element;
/// tags nest and close; attributes are quoted; entities are the five XML
/// ones or character references). Returns the element names in order.
fn well_formed(xml: &str) -> Result<Vec<String>, String> {
    let body = xml
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
        .ok_or("no XML declaration")?;
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = body;
    let mut roots = 0;
    while let Some(open) = rest.find('<') {
        check_text(&rest[..open])?;
        if stack.is_empty() && !rest[..open].trim().is_empty() {
            return Err("text outside the root element".into());
        }
        let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let top = stack.pop().ok_or("close without open")?;
            if top != name {
                return Err(format!("</{name}> closes <{top}>"));
            }
            continue;
        }
        let empty = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if name.is_empty() {
            return Err(format!("bad tag <{tag}>"));
        }
        check_attributes(&tag[name.len()..])?;
        if stack.is_empty() {
            roots += 1;
        }
        names.push(name.clone());
        if !empty {
            stack.push(name);
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed elements {stack:?}"));
    }
    if roots != 1 || !rest.trim().is_empty() {
        return Err("not exactly one root element".into());
    }
    Ok(names)
}

fn check_text(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        let end = rest[amp..].find(';').ok_or("unterminated entity")? + amp;
        let entity = &rest[amp + 1..end];
        let known = matches!(entity, "amp" | "lt" | "gt" | "quot" | "apos")
            || entity
                .strip_prefix("#x")
                .is_some_and(|h| u32::from_str_radix(h, 16).is_ok())
            || entity
                .strip_prefix('#')
                .is_some_and(|d| d.parse::<u32>().is_ok());
        if !known {
            return Err(format!("unknown entity &{entity};"));
        }
        rest = &rest[end + 1..];
    }
    if text
        .chars()
        .any(|c| (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r'))
    {
        return Err("a control character in text".into());
    }
    Ok(())
}

fn check_attributes(mut attrs: &str) -> Result<(), String> {
    loop {
        attrs = attrs.trim_start();
        if attrs.is_empty() {
            return Ok(());
        }
        let eq = attrs
            .find('=')
            .ok_or_else(|| format!("attribute without value: {attrs}"))?;
        let value = attrs[eq + 1..]
            .strip_prefix('"')
            .ok_or_else(|| format!("unquoted attribute: {attrs}"))?;
        let end = value.find('"').ok_or("unterminated attribute")?;
        check_text(&value[..end])?;
        if value[..end].contains('<') {
            return Err("< in an attribute".into());
        }
        attrs = &value[end + 1..];
    }
}

#[test]
fn the_checker_for_xml_rejects_what_is_not_well_formed() {
    let head = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    assert!(well_formed(&format!("{head}<a><b/></a>\n")).is_ok());
    for bad in [
        "<a><b></a>",
        "<a>",
        "<a/><b/>",
        "<a x=1/>",
        "<a>&nbsp;</a>",
        "<a>\u{1}</a>",
        "text<a/>",
    ] {
        assert!(
            well_formed(&format!("{head}{bad}")).is_err(),
            "{bad} passed"
        );
    }
}

// ------------------------------------------------------------ the corpus dir

#[test]
fn the_corpus_can_be_given_elsewhere() {
    // A corpus of two cases copied elsewhere, with a manifest of its own.
    let dir = tempfile::tempdir().expect("temp dir");
    let corpus = dir.path().join("mini");
    std::fs::create_dir(&corpus).expect("mkdir");
    let m = manifest();
    let picked: Vec<Value> = m["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["name"] == "vs-fixed" || c["name"] == "x-FTR-CHECKSUM-fixed")
        .cloned()
        .collect();
    for c in &picked {
        let file = c["file"].as_str().expect("file");
        std::fs::copy(root().join("corpora").join(file), corpus.join(file)).expect("copy");
    }
    let mini = serde_json::json!({"schema_version": 2, "cases": picked});
    std::fs::write(corpus.join("manifest.json"), mini.to_string()).expect("manifest");
    // The reader spoils the image after reading it.
    let out = conform(&[
        "--reader",
        "scripts/conform/read-vhd.sh {image} {raw} && printf X | dd of={image} bs=1 conv=notrunc 2>/dev/null",
        "--corpus",
        corpus.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(summary_line(&out), (2, 0, 0), "{}", stdout(&out));
    assert_eq!(out.status.code(), Some(0));
    // The reader worked on a copy: the corpus is as it was.
    assert_eq!(
        std::fs::read(corpus.join("vs-fixed.vhd")).expect("read"),
        std::fs::read(root().join("corpora/vs-fixed.vhd")).expect("read")
    );
}
