//! The specification documents in `spec/` and the code must not drift apart:
//! `spec/rules.md` documents exactly `Rule::ALL` (IDs, order, severities,
//! summaries), every file, function and test it cites exists, and the byte
//! tables of `spec/layouts.md` match the on-disk structs.

use std::path::{Path, PathBuf};

use vhdref::{Rule, Severity};

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read_repo_file(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// The text between backticks, in order.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn looks_like_rule_id(text: &str) -> bool {
    text.contains('-')
        && text
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
}

/// One rule as `spec/rules.md` documents it under its `### ID` heading.
#[derive(Debug, Default)]
struct DocumentedRule {
    id: String,
    severity: String,
    enforced_by: String,
    test: String,
}

fn documented_rules(doc: &str) -> Vec<DocumentedRule> {
    let mut rules: Vec<DocumentedRule> = Vec::new();
    let mut in_rule = false;
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            in_rule = looks_like_rule_id(heading.trim());
            if in_rule {
                rules.push(DocumentedRule {
                    id: heading.trim().to_string(),
                    ..DocumentedRule::default()
                });
            }
            continue;
        }
        if line.starts_with("## ") {
            in_rule = false;
            continue;
        }
        let Some(rule) = rules.last_mut().filter(|_| in_rule) else {
            continue;
        };
        let field = |name: &str| line.strip_prefix(name).map(|v| v.trim().to_string());
        if let Some(v) = field("- Severity:") {
            rule.severity = v;
        } else if let Some(v) = field("- Enforced by:") {
            rule.enforced_by = v;
        } else if let Some(v) = field("- Test:") {
            rule.test = v;
        }
    }
    rules
}

/// Rows `| `ID` | severity | summary |` of the index table.
fn index_rows(doc: &str) -> Vec<(String, String, String)> {
    let mut rows = Vec::new();
    let mut in_index = false;
    for line in doc.lines() {
        if line.starts_with("## ") {
            in_index = line.trim() == "## Index";
            continue;
        }
        if !in_index || !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, id, severity, summary, _] = cells.as_slice() {
            rows.push((
                id.trim_matches('`').to_string(),
                severity.to_string(),
                summary.to_string(),
            ));
        } else {
            panic!("index row does not have three cells: {line}");
        }
    }
    rows
}

fn code_rule_ids() -> Vec<&'static str> {
    Rule::ALL.iter().map(|r| r.id()).collect()
}

#[test]
fn rules_doc_documents_every_rule_of_the_code_in_code_order() {
    let doc = read_repo_file("spec/rules.md");
    let documented: Vec<String> = documented_rules(&doc).into_iter().map(|r| r.id).collect();
    assert_eq!(
        documented,
        code_rule_ids(),
        "### headings of spec/rules.md vs Rule::ALL"
    );
}

#[test]
fn rules_doc_gives_each_rule_the_severity_of_the_code() {
    let doc = read_repo_file("spec/rules.md");
    for documented in documented_rules(&doc) {
        let rule = Rule::from_id(&documented.id)
            .unwrap_or_else(|| panic!("unknown rule {}", documented.id));
        assert_eq!(
            documented.severity,
            severity_name(rule.severity()),
            "severity of {} in spec/rules.md",
            documented.id
        );
    }
}

#[test]
fn rules_doc_index_matches_ids_severities_and_summaries_of_the_code() {
    let doc = read_repo_file("spec/rules.md");
    let rows = index_rows(&doc);
    let expected: Vec<(String, String, String)> = Rule::ALL
        .iter()
        .map(|r| {
            (
                r.id().to_string(),
                severity_name(r.severity()).to_string(),
                r.summary().to_string(),
            )
        })
        .collect();
    assert_eq!(rows, expected, "index table of spec/rules.md vs Rule::ALL");
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Checks that a citation list of the form "`file` `item` `item`; `file` `item`"
/// names files that exist and items each file defines with `fn NAME`.
/// `file_prefix` is `src/` or `tests/`. Returns how many files were cited.
fn check_citations(rule: &str, what: &str, value: &str, file_prefix: &str) -> usize {
    let mut files = 0;
    let mut current: Option<(String, String)> = None;
    let mut items_of_current = 0;
    for span in code_spans(value) {
        if span.starts_with(file_prefix) {
            if let Some((file, _)) = &current {
                assert!(
                    items_of_current > 0,
                    "{rule}: {what} cites {file} without a function"
                );
            }
            let path = repo_file(span);
            assert!(
                path.is_file(),
                "{rule}: {what} cites {span}, which does not exist"
            );
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            current = Some((span.to_string(), text));
            items_of_current = 0;
            files += 1;
        } else if let Some((file, text)) = &current {
            let name = span.rsplit("::").next().unwrap_or(span);
            let defined =
                text.contains(&format!("fn {name}(")) || text.contains(&format!("fn {name}<"));
            assert!(
                defined,
                "{rule}: {what} cites `{span}` in {file}, which defines no fn {name}"
            );
            items_of_current += 1;
        }
    }
    if let Some((file, _)) = &current {
        assert!(
            items_of_current > 0,
            "{rule}: {what} cites {file} without a function"
        );
    }
    files
}

#[test]
fn every_enforcing_file_and_function_cited_in_rules_doc_exists() {
    let doc = read_repo_file("spec/rules.md");
    let mut sources = Vec::new();
    rust_files(&repo_file("src"), &mut sources);
    for documented in documented_rules(&doc) {
        let id = &documented.id;
        if documented.enforced_by.starts_with("none yet") {
            // Honest only while no code mentions the rule besides its definition.
            let rule = Rule::from_id(id).unwrap_or_else(|| panic!("unknown rule {id}"));
            let needle = format!("Rule::{rule:?}");
            for path in &sources {
                if path.ends_with("src/rules.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(path).unwrap_or_default();
                assert!(
                    !text.contains(&needle),
                    "{id} is documented as enforced by none yet, but {} uses {needle}: update spec/rules.md",
                    path.display()
                );
            }
            continue;
        }
        let files = check_citations(id, "enforced by", &documented.enforced_by, "src/");
        assert!(
            files > 0,
            "{id}: no enforcing file cited (found {:?})",
            documented.enforced_by
        );
    }
}

#[test]
fn every_test_cited_in_rules_doc_exists() {
    let doc = read_repo_file("spec/rules.md");
    for documented in documented_rules(&doc) {
        let id = &documented.id;
        if documented.test.starts_with("none yet") {
            continue;
        }
        let files = check_citations(id, "test", &documented.test, "tests/");
        assert!(
            files > 0,
            "{id}: the test line cites no test file (found {:?})",
            documented.test
        );
    }
}

/// Rows `| offset | hex | size | `field` | notes |` of the table under `heading`
/// in `spec/layouts.md`, as (offset, size, field).
fn layout_rows(doc: &str, heading: &str) -> Vec<(usize, usize, String)> {
    let mut rows = Vec::new();
    let mut lines = doc.lines().skip_while(|l| l.trim() != heading).skip(1);
    // Skip prose up to the table, then read it to its end.
    let mut in_table = false;
    for line in lines.by_ref() {
        if line.starts_with('#') {
            break;
        }
        if !line.starts_with('|') {
            if in_table {
                break;
            }
            continue;
        }
        in_table = true;
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(Ok(offset)) = cells.get(1).map(|c| c.parse::<usize>()) else {
            continue; // header or separator row
        };
        let hex = cells
            .get(2)
            .and_then(|c| c.strip_prefix("0x"))
            .map(|h| usize::from_str_radix(h, 16));
        assert_eq!(hex, Some(Ok(offset)), "hex column of {heading} row: {line}");
        let size = cells.get(3).and_then(|c| c.parse::<usize>().ok());
        let field = cells.get(4).map(|c| c.trim_matches('`').to_string());
        match (size, field) {
            (Some(size), Some(field)) => rows.push((offset, size, field)),
            _ => panic!("malformed row under {heading}: {line}"),
        }
    }
    assert!(
        !rows.is_empty(),
        "no table under {heading} in spec/layouts.md"
    );
    rows
}

/// (offset, size, name) of consecutive fields: each size is the distance to
/// the next offset, the last one's to the end of the struct.
fn fields_in_order(fields: &[(&str, usize)], struct_size: usize) -> Vec<(usize, usize, String)> {
    fields
        .iter()
        .enumerate()
        .map(|(i, &(name, offset))| {
            let end = fields.get(i + 1).map_or(struct_size, |next| next.1);
            (offset, end - offset, name.to_string())
        })
        .collect()
}

#[test]
fn layouts_doc_footer_table_matches_the_footer_struct() {
    use std::mem::offset_of;
    use vhdref::format::footer::RawFooter;
    let mut expected = fields_in_order(
        &[
            ("cookie", offset_of!(RawFooter, cookie)),
            ("features", offset_of!(RawFooter, features)),
            (
                "file_format_version",
                offset_of!(RawFooter, file_format_version),
            ),
            ("data_offset", offset_of!(RawFooter, data_offset)),
            ("time_stamp", offset_of!(RawFooter, time_stamp)),
            (
                "creator_application",
                offset_of!(RawFooter, creator_application),
            ),
            ("creator_version", offset_of!(RawFooter, creator_version)),
            ("creator_host_os", offset_of!(RawFooter, creator_host_os)),
            ("original_size", offset_of!(RawFooter, original_size)),
            ("current_size", offset_of!(RawFooter, current_size)),
            ("disk_geometry", offset_of!(RawFooter, cylinders)),
            ("disk_type", offset_of!(RawFooter, disk_type)),
            ("checksum", offset_of!(RawFooter, checksum)),
            ("unique_id", offset_of!(RawFooter, unique_id)),
            ("saved_state", offset_of!(RawFooter, saved_state)),
            ("reserved", offset_of!(RawFooter, reserved)),
        ],
        size_of::<RawFooter>(),
    );
    let geometry = fields_in_order(
        &[
            ("disk_geometry.cylinders", offset_of!(RawFooter, cylinders)),
            ("disk_geometry.heads", offset_of!(RawFooter, heads)),
            (
                "disk_geometry.sectors_per_track",
                offset_of!(RawFooter, sectors_per_track),
            ),
        ],
        offset_of!(RawFooter, disk_type),
    );
    expected.extend(geometry);
    let mut documented = layout_rows(&read_repo_file("spec/layouts.md"), "## Footer");
    expected.sort();
    documented.sort();
    assert_eq!(documented, expected);
    assert_eq!(size_of::<RawFooter>(), 512);
}

#[test]
fn layouts_doc_dynamic_header_table_matches_the_header_struct() {
    use std::mem::offset_of;
    use vhdref::format::dyn_header::RawDynHeader;
    let expected = fields_in_order(
        &[
            ("cookie", offset_of!(RawDynHeader, cookie)),
            ("data_offset", offset_of!(RawDynHeader, data_offset)),
            ("table_offset", offset_of!(RawDynHeader, table_offset)),
            ("header_version", offset_of!(RawDynHeader, header_version)),
            (
                "max_table_entries",
                offset_of!(RawDynHeader, max_table_entries),
            ),
            ("block_size", offset_of!(RawDynHeader, block_size)),
            ("checksum", offset_of!(RawDynHeader, checksum)),
            (
                "parent_unique_id",
                offset_of!(RawDynHeader, parent_unique_id),
            ),
            (
                "parent_time_stamp",
                offset_of!(RawDynHeader, parent_time_stamp),
            ),
            ("reserved", offset_of!(RawDynHeader, reserved1)),
            (
                "parent_unicode_name",
                offset_of!(RawDynHeader, parent_unicode_name),
            ),
            (
                "parent_locator_entries",
                offset_of!(RawDynHeader, parent_locator_entries),
            ),
            ("reserved", offset_of!(RawDynHeader, reserved2)),
        ],
        size_of::<RawDynHeader>(),
    );
    let documented = layout_rows(&read_repo_file("spec/layouts.md"), "## Dynamic header");
    assert_eq!(documented, expected);
    assert_eq!(size_of::<RawDynHeader>(), 1024);
}

#[test]
fn layouts_doc_locator_entry_table_matches_the_locator_struct() {
    use std::mem::offset_of;
    use vhdref::format::locator::RawLocatorEntry;
    let expected = fields_in_order(
        &[
            ("platform_code", offset_of!(RawLocatorEntry, platform_code)),
            (
                "platform_data_space",
                offset_of!(RawLocatorEntry, platform_data_space),
            ),
            (
                "platform_data_length",
                offset_of!(RawLocatorEntry, platform_data_length),
            ),
            ("reserved", offset_of!(RawLocatorEntry, reserved)),
            (
                "platform_data_offset",
                offset_of!(RawLocatorEntry, platform_data_offset),
            ),
        ],
        size_of::<RawLocatorEntry>(),
    );
    let documented = layout_rows(
        &read_repo_file("spec/layouts.md"),
        "### Parent locator entry",
    );
    assert_eq!(documented, expected);
    assert_eq!(size_of::<RawLocatorEntry>() * 8, 192);
}

#[test]
fn every_test_cited_for_errors_that_are_not_rules_exists() {
    let doc = read_repo_file("spec/rules.md");
    let mut in_section = false;
    let mut rows = 0;
    for line in doc.lines() {
        if line.starts_with("## ") {
            in_section = line.trim() == "## Errors that are not rules";
            continue;
        }
        if !in_section || !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(error), Some(test)) = (cells.get(1), cells.get(5)) else {
            panic!("row without a test cell: {line}");
        };
        rows += 1;
        if !test.starts_with("none yet") {
            check_citations(error, "test", test, "tests/");
        }
    }
    assert!(
        rows >= 4,
        "the table of errors that are not rules is missing or short"
    );
}
