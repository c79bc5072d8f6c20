//! `scripts/ci-recipe.sh`, the script the README's "For other projects'
//! CI" section tells projects to copy: it checks every image under a
//! directory (a `JUnit` file each), runs a reader over the corpus (one `JUnit`
//! file), and its exit status fails the job exactly when an image has an
//! error (or a warning, with STRICT=1), the reader fails a case, or there
//! is nothing to check.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the recipe in `dir` with `args` and extra environment.
fn recipe(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(root().join("scripts/ci-recipe.sh"))
        .args(args)
        .current_dir(dir)
        .env("VHD", env!("CARGO_BIN_EXE_vhd"))
        .env_remove("STRICT")
        .env_remove("CORPUS")
        .env_remove("CONFORM_OPTS")
        .env_remove("REPORT_DIR")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("sh runs the recipe")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A directory `images/` holding a clean image made by vhd, an image with
/// only warnings and, if `broken`, one that breaks FTR-CHECKSUM (both from
/// the corpus), one of them in a subdirectory.
fn images(dir: &Path, broken: bool) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(images.join("nightly")).expect("mkdir");
    let made = Command::new(env!("CARGO_BIN_EXE_vhd"))
        .args(["create", "clean.vhd", "8M"])
        .current_dir(&images)
        .output()
        .expect("vhd create runs");
    assert!(made.status.success(), "{}", stderr(&made));
    let corpus = root().join("corpora");
    std::fs::copy(
        corpus.join("w-FTR-FEATURES-zero.vhd"),
        images.join("nightly/warned.vhd"),
    )
    .expect("copy");
    if broken {
        std::fs::copy(
            corpus.join("x-FTR-CHECKSUM-fixed.vhd"),
            images.join("broken.vhd"),
        )
        .expect("copy");
    }
    images
}

#[test]
fn a_broken_image_fails_the_job_and_every_image_gets_a_junit_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    images(dir.path(), true);
    let out = recipe(dir.path(), &["images"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("ERRORS   images/broken.vhd"), "{log}");
    assert!(log.contains("ok       images/clean.vhd"), "{log}");
    assert!(log.contains("warnings images/nightly/warned.vhd"), "{log}");
    let reports = dir.path().join("vhd-reports");
    let broken = read(&reports.join("check-broken.vhd.xml"));
    assert!(broken.starts_with("<?xml"), "{broken}");
    assert!(
        broken.contains("name=\"FTR-CHECKSUM\">\n      <failure type=\"error\""),
        "{broken}"
    );
    let clean = read(&reports.join("check-clean.vhd.xml"));
    assert!(clean.contains("failures=\"0\""), "{clean}");
    let warned = read(&reports.join("check-nightly_warned.vhd.xml"));
    assert!(warned.contains("<failure type=\"warning\""), "{warned}");
}

#[test]
fn clean_and_warned_images_pass_unless_strict() {
    let dir = tempfile::tempdir().expect("temp dir");
    images(dir.path(), false);
    let out = recipe(dir.path(), &["images"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = recipe(dir.path(), &["images"], &[("STRICT", "1")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("ERRORS   images/nightly/warned.vhd"));
}

#[test]
fn a_reader_that_reads_the_corpus_right_passes_and_one_that_does_not_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    images(dir.path(), false);
    let reports = dir.path().join("out");
    let reports_env = reports.to_str().expect("utf-8 temp path");
    let good = format!(
        "{} {{image}} {{raw}}",
        root().join("scripts/conform/read-vhd.sh").display()
    );
    let only_some = "--cases vs-* --cases x-FTR-CHECKSUM-*";
    let env = [("CONFORM_OPTS", only_some), ("REPORT_DIR", reports_env)];
    let out = recipe(dir.path(), &["images", &good], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let junit = read(&reports.join("conform.xml"));
    assert!(
        junit.contains("<testsuites name=\"vhd conform\" tests=\"6\" failures=\"0\""),
        "{junit}"
    );
    assert!(stderr(&out).contains("ok       vhd conform: tests=\"6\" failures=\"0\""));
    // The image file itself is not its guest contents.
    let out = recipe(dir.path(), &["images", "cp {image} {raw}"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let junit = read(&reports.join("conform.xml"));
    assert!(junit.contains("<failure type=\"fail\""), "{junit}");
    assert!(
        stderr(&out).contains("FAILED   vhd conform (exit 2)"),
        "{}",
        stderr(&out)
    );
    // The corpus can be named explicitly (a checkout of vhdref).
    let corpus = root().join("corpora");
    let env = [
        ("CONFORM_OPTS", only_some),
        ("REPORT_DIR", reports_env),
        ("CORPUS", corpus.to_str().expect("utf-8 path")),
    ];
    let out = recipe(dir.path(), &["images", &good], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn nothing_to_check_fails_and_a_wrong_call_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("empty")).expect("mkdir");
    let out = recipe(dir.path(), &["empty"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no *.vhd under empty"),
        "{}",
        stderr(&out)
    );
    let out = recipe(dir.path(), &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = recipe(dir.path(), &["missing"], &[]);
    assert_eq!(out.status.code(), Some(2));
}
