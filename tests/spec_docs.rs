//! The specification documents in `spec/` and the code must not drift apart:
//! `spec/rules.md` documents exactly `Rule::ALL` (IDs, order, severities,
//! summaries), every file, function and test it cites exists, every test
//! cited for a rule names that rule, and the byte tables of
//! `spec/layouts.md` match the on-disk structs.

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
    see_also: String,
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
        } else if let Some(v) = field("- See also:") {
            rule.see_also = v;
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
        check_citations(id, "see also", &documented.see_also, "tests/");
    }
}

/// The body of `fn name` in the Rust source `text`, from its opening brace
/// to the matching closing one. Braces inside string and character
/// literals and comments do not count.
fn fn_body<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = [format!("fn {name}("), format!("fn {name}<")]
        .iter()
        .find_map(|pattern| text.find(pattern.as_str()))?;
    let bytes = text.as_bytes();
    let open = start + text[start..].find('{')?;
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[open..=i]);
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i += text[i..].find('\n').unwrap_or(text.len() - i);
            }
            b'"' => {
                // A string (raw strings here have no `"` inside).
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'\'' => {
                // A character literal ('x', '\n', '\'') or a lifetime.
                if bytes.get(i + 1) == Some(&b'\\') {
                    i += 2 + text[i + 2..].find('\'').unwrap_or(0);
                } else if bytes.get(i + 2) == Some(&b'\'') {
                    i += 2;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether `word` occurs in `text` as a whole word: not preceded or
/// followed by a letter, digit, `_` or `-` (so `PAR-NAME` is not found in
/// `PAR-NAME-MISMATCH`, nor `Rule::ParName` in `Rule::ParNameMismatch`).
fn contains_word(text: &str, word: &str) -> bool {
    let part_of_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    text.match_indices(word).any(|(at, _)| {
        !text[..at].chars().next_back().is_some_and(part_of_word)
            && !text[at + word.len()..]
                .chars()
                .next()
                .is_some_and(part_of_word)
    })
}

/// Whether `body` calls the function `name` (`name(` not preceded by a
/// letter, digit or `_`).
fn calls(body: &str, name: &str) -> bool {
    body.match_indices(&format!("{name}(")).any(|(at, _)| {
        !body[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The names of the functions defined in `text` (`fn NAME(` or `fn NAME<`).
fn defined_fns(text: &str) -> Vec<&str> {
    text.match_indices("fn ")
        .filter_map(|(at, _)| {
            let rest = &text[at + 3..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
            matches!(rest.as_bytes()[end], b'(' | b'<').then(|| &rest[..end])
        })
        .collect()
}

/// Whether the test `name` of the source `text` names `rule`: its body, or
/// the body of a function of the same file that it calls (a table of
/// cases, a helper that builds the image and asserts), contains the rule's
/// ID or its `Rule::` variant as a whole word.
fn test_names_rule(text: &str, name: &str, rule: Rule) -> bool {
    let variant = format!("Rule::{rule:?}");
    let names = |body: &str| contains_word(body, rule.id()) || contains_word(body, &variant);
    let Some(body) = fn_body(text, name) else {
        return false;
    };
    names(body)
        || defined_fns(text)
            .into_iter()
            .filter(|f| *f != name && calls(body, f))
            .filter_map(|f| fn_body(text, f))
            .any(names)
}

/// The tests cited on a "Test:" line, as (file, test name) pairs.
fn cited_tests(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut file: Option<&str> = None;
    for span in code_spans(value) {
        if span.starts_with("tests/") {
            file = Some(span);
        } else if let Some(f) = file {
            let name = span.rsplit("::").next().unwrap_or(span);
            out.push((f.to_string(), name.to_string()));
        }
    }
    out
}

/// A test cited for a rule must be about that rule: it asserts on the rule
/// or its ID, not merely pass near it. The check is textual (see
/// [`test_names_rule`]); `scripts/rule-mutants.sh` checks the same
/// citations by running them with the rule switched off.
#[test]
fn every_test_cited_for_a_rule_names_that_rule() {
    let doc = read_repo_file("spec/rules.md");
    let mut unnamed = Vec::new();
    for documented in documented_rules(&doc) {
        let rule = Rule::from_id(&documented.id)
            .unwrap_or_else(|| panic!("unknown rule {}", documented.id));
        for (file, test) in cited_tests(&documented.test) {
            let text = read_repo_file(&file);
            if !test_names_rule(&text, &test, rule) {
                unnamed.push(format!("{}: {file} {test}", rule.id()));
            }
        }
    }
    assert!(
        unnamed.is_empty(),
        "cited tests that do not name their rule (neither the ID nor the Rule:: variant in the test or a function of its file it calls):\n{}",
        unnamed.join("\n")
    );
}

#[test]
fn the_check_for_a_named_rule_reads_bodies_and_whole_words() {
    let text = r#"
fn table() -> Vec<&'static str> { vec!["PAR-NAME-MISMATCH", "x}"] }
#[test]
fn a_test_with_a_table() { for case in table() { let _ = '}'; } }
fn a_test_with_a_helper() { assert!(by_variant(x)); }
fn by_variant() { assert_eq!(rule, Rule::ParNameMismatch); }
fn by_id<'a>() { // PAR-SIZE is only in a comment here
    assert!(message.contains("(PAR-SIZE)"));
}
fn elsewhere() {}
// PAR-LOOP
"#;
    assert!(test_names_rule(
        text,
        "a_test_with_a_table",
        Rule::ParNameMismatch
    ));
    assert!(!test_names_rule(text, "a_test_with_a_table", Rule::ParName));
    assert!(test_names_rule(text, "by_variant", Rule::ParNameMismatch));
    assert!(test_names_rule(
        text,
        "a_test_with_a_helper",
        Rule::ParNameMismatch
    ));
    assert!(!test_names_rule(text, "by_variant", Rule::ParName));
    assert!(test_names_rule(text, "by_id", Rule::ParSize));
    assert!(!test_names_rule(text, "elsewhere", Rule::ParLoop));
    assert!(!test_names_rule(text, "missing", Rule::ParLoop));
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
