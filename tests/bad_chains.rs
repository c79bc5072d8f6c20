//! Broken parent chains: missing or wrong parents, loops, chains too deep,
//! size mismatches, locators that lie, names that are not text, and
//! parents outside the directories a caller allows. Every one fails with
//! its rule (or opens with its warning) and never panics.

#[path = "builder/mod.rs"]
mod builder;
#[path = "common/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};

use builder::{Bits, DataSpace, Platform, VhdBuilder, pattern};
use uuid::Uuid;
use vhdref::{Image, OpenOptions};

const SIZE: u64 = 256 * 1024;
const BLOCK: u32 = 4096;

/// Writes a fixed parent of `size` bytes; returns its builder.
fn fixed_parent(path: &Path, size: u64, seed: u8) -> VhdBuilder {
    let b = VhdBuilder::fixed(size).data(&pattern(size as usize, seed));
    std::fs::write(path, b.build()).unwrap();
    b
}

/// A child expecting `parent_id`, with one block of data.
fn child(parent_id: Uuid, stamp: u32) -> VhdBuilder {
    VhdBuilder::differencing(SIZE)
        .block_size(BLOCK)
        .parent_id(parent_id)
        .parent_time_stamp(stamp)
        .block(1, Bits::Sectors(vec![0, 7]), &pattern(BLOCK as usize, 90))
}

fn write(path: &Path, b: &VhdBuilder) -> PathBuf {
    std::fs::write(path, b.build()).unwrap();
    path.to_path_buf()
}

fn rule_of(result: vhdref::Result<Image>) -> (Option<&'static str>, String) {
    match result {
        Ok(img) => panic!("opened, with findings {:?}", img.findings()),
        Err(e) => (e.rule().map(vhdref::Rule::id), e.to_string()),
    }
}

/// Opening `path` with parents allowed only in `inside` fails with
/// PAR-NOT-FOUND, saying a locator led outside the allowed directories.
fn assert_not_followed_outside(path: &Path, inside: PathBuf) {
    let (rule, text) = rule_of(
        OpenOptions::new()
            .allow_parent_dirs(vec![inside])
            .open(path),
    );
    assert_eq!(rule, Some("PAR-NOT-FOUND"), "{text}");
    assert!(text.contains("outside the allowed directories"), "{text}");
}

fn warnings(img: &Image) -> Vec<&'static str> {
    img.findings().iter().map(|f| f.rule.id()).collect()
}

fn read_all(img: &mut Image) -> Vec<u8> {
    let mut buf = vec![0u8; img.size() as usize];
    img.read_at(0, &mut buf).unwrap();
    buf
}

#[test]
fn a_missing_parent_fails_and_lists_every_place_tried() {
    let dir = tempfile::tempdir().unwrap();
    let absolute = dir.path().join("elsewhere").join("gone.vhd");
    let c = child(Uuid::new_v4(), 0)
        .parent_name("named.vhd")
        .locator(Platform::W2ru, ".\\missing.vhd", DataSpace::Bytes)
        .locator(
            Platform::W2ku,
            &absolute.display().to_string(),
            DataSpace::Bytes,
        );
    let path = write(&dir.path().join("child.vhd"), &c);
    let (rule, text) = rule_of(Image::open(&path));
    assert_eq!(rule, Some("PAR-NOT-FOUND"), "{text}");
    for tried in ["missing.vhd", "gone.vhd", "named.vhd"] {
        assert!(text.contains(tried), "{tried} not listed: {text}");
    }
}

#[test]
fn a_child_without_any_locator_or_name_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir.path().join("child.vhd"), &child(Uuid::new_v4(), 0));
    let (rule, text) = rule_of(Image::open(&path));
    assert_eq!(rule, Some("PAR-NOT-FOUND"), "{text}");
    assert!(text.contains("no usable locator"), "{text}");
}

#[test]
fn a_parent_with_another_unique_id_is_refused_naming_both_ids() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), SIZE, 1);
    let expected = Uuid::new_v4();
    let c =
        child(expected, parent.stamp()).locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes);
    let path = write(&dir.path().join("child.vhd"), &c);
    let (rule, text) = rule_of(Image::open(&path));
    assert_eq!(rule, Some("PAR-UNIQUE-ID"), "{text}");
    assert!(text.contains(&expected.to_string()), "{text}");
    assert!(text.contains(&parent.id().to_string()), "{text}");
}

#[test]
fn ignoring_the_parent_id_opens_with_a_warning_and_reads_the_parent() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), SIZE, 1);
    let c = child(Uuid::new_v4(), parent.stamp()).locator(
        Platform::W2ru,
        ".\\parent.vhd",
        DataSpace::Bytes,
    );
    let path = write(&dir.path().join("child.vhd"), &c);
    let mut img = OpenOptions::new()
        .ignore_parent_id(true)
        .open(&path)
        .unwrap();
    assert_eq!(warnings(&img), ["PAR-UNIQUE-ID"]);
    assert!(read_all(&mut img) == c.expected(&parent.expected(&[])));
}

#[test]
fn a_parent_given_by_the_caller_with_the_wrong_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), SIZE, 1);
    let path = write(
        &dir.path().join("child.vhd"),
        &child(Uuid::new_v4(), parent.stamp()),
    );
    let (rule, text) = rule_of(
        OpenOptions::new()
            .parent(dir.path().join("parent.vhd"))
            .open(&path),
    );
    assert_eq!(rule, Some("PAR-UNIQUE-ID"), "{text}");
}

#[test]
fn a_child_whose_locator_points_to_itself_is_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let id = Uuid::new_v4();
    let c = child(id, 0)
        .unique_id(id)
        .locator(Platform::W2ru, ".\\self.vhd", DataSpace::Bytes);
    let path = write(&dir.path().join("self.vhd"), &c);
    let (rule, text) = rule_of(Image::open(&path));
    assert_eq!(rule, Some("PAR-LOOP"), "{text}");
    // Opening for writing (an exclusive lock on the child) must say the same.
    let (rule, text) = rule_of(Image::open_rw(&path));
    assert_eq!(rule, Some("PAR-LOOP"), "{text}");
}

#[test]
fn two_children_that_are_each_others_parent_are_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (a_id, b_id) = (Uuid::new_v4(), Uuid::new_v4());
    let a = child(b_id, 0)
        .unique_id(a_id)
        .locator(Platform::W2ru, ".\\b.vhd", DataSpace::Bytes);
    let b = child(a_id, 0).unique_id(b_id).parent_name("a.vhd");
    let a_path = write(&dir.path().join("a.vhd"), &a);
    let b_path = write(&dir.path().join("b.vhd"), &b);
    for path in [a_path, b_path] {
        let (rule, text) = rule_of(Image::open(&path));
        assert_eq!(rule, Some("PAR-LOOP"), "{}: {text}", path.display());
    }
}

/// Writes a base image and `children` differencing images, each the child
/// of the one before; child `k` holds data in guest sector `k`.
fn chain(dir: &Path, children: usize) -> Vec<PathBuf> {
    let base = VhdBuilder::dynamic(SIZE).block_size(BLOCK);
    let mut paths = vec![write(&dir.join("c0.vhd"), &base)];
    let mut prev = (base.id(), base.stamp());
    for k in 1..=children {
        let sectors_per_block = u64::from(BLOCK) / 512;
        let sector = k as u64;
        let mut data = vec![0u8; BLOCK as usize];
        let at = (sector % sectors_per_block * 512) as usize;
        data[at..at + 512].fill(k as u8);
        let c = VhdBuilder::differencing(SIZE)
            .block_size(BLOCK)
            .parent_id(prev.0)
            .parent_time_stamp(prev.1)
            .locator(
                Platform::W2ru,
                &format!(".\\c{}.vhd", k - 1),
                DataSpace::Sectors,
            )
            .block(
                (sector / sectors_per_block) as u32,
                Bits::Sectors(vec![sector % sectors_per_block]),
                &data,
            );
        paths.push(write(&dir.join(format!("c{k}.vhd")), &c));
        prev = (c.id(), c.stamp());
    }
    paths
}

#[test]
fn a_chain_of_64_images_opens_and_reads_every_layer_but_65_or_more_is_too_deep() {
    let dir = tempfile::tempdir().unwrap();
    let paths = chain(dir.path(), 66);
    let mut img = Image::open(&paths[63]).unwrap();
    assert_eq!(img.chain().len(), 64);
    let contents = read_all(&mut img);
    for (sector, bytes) in contents.chunks(512).enumerate() {
        let want = if (1..=63).contains(&sector) {
            sector as u8
        } else {
            0
        };
        assert!(bytes.iter().all(|&b| b == want), "sector {sector}");
    }
    drop(img);
    for k in [64, 66] {
        let (rule, text) = rule_of(Image::open(&paths[k]));
        assert_eq!(rule, Some("PAR-DEPTH"), "c{k}: {text}");
    }
}

#[test]
fn a_parent_of_another_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), SIZE * 2, 1);
    let c = child(parent.id(), parent.stamp()).parent_name("parent.vhd");
    let path = write(&dir.path().join("child.vhd"), &c);
    let (rule, text) = rule_of(Image::open(&path));
    assert_eq!(rule, Some("PAR-SIZE"), "{text}");
    assert!(
        text.contains(&(SIZE * 2).to_string()) && text.contains(&SIZE.to_string()),
        "{text}"
    );
}

#[test]
fn locators_outside_the_file_are_warned_about_and_skipped() {
    let bad: [(Option<u64>, Option<u32>); 5] = [
        (Some(1 << 40), None),
        (Some(u64::MAX - 8), None),
        (None, Some(u32::MAX)),
        (None, Some(64 * 1024 + 2)),
        (Some(0), None),
    ];
    for (offset, length) in bad {
        let dir = tempfile::tempdir().unwrap();
        let parent = fixed_parent(&dir.path().join("parent.vhd"), SIZE, 2);
        let c = child(parent.id(), parent.stamp())
            .locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes)
            .locator_fields(offset, length)
            .locator(
                Platform::W2ku,
                &dir.path().join("parent.vhd").display().to_string(),
                DataSpace::Bytes,
            );
        let path = write(&dir.path().join("child.vhd"), &c);
        let mut img = Image::open(&path).unwrap_or_else(|e| panic!("{offset:?}/{length:?}: {e}"));
        assert_eq!(
            warnings(&img),
            ["PAR-LOCATOR-BOUNDS"],
            "{offset:?}/{length:?}"
        );
        assert!(read_all(&mut img) == c.expected(&parent.expected(&[])));
    }
}

#[test]
fn only_locators_outside_the_file_give_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), SIZE, 2);
    let c = child(parent.id(), parent.stamp())
        .locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes)
        .locator_fields(Some(1 << 40), None)
        .locator(Platform::W2ku, "/parent.vhd", DataSpace::Sectors)
        .locator_fields(None, Some(u32::MAX));
    let path = write(&dir.path().join("child.vhd"), &c);
    let (rule, text) = rule_of(Image::open(&path));
    assert_eq!(rule, Some("PAR-NOT-FOUND"), "{text}");
    assert!(text.contains("out of bounds"), "{text}");
}

#[test]
fn a_parent_name_that_is_not_utf16_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), SIZE, 3);
    // A lone high surrogate followed by 'A'.
    let c = child(parent.id(), parent.stamp())
        .parent_name_raw(&[0xD8, 0x00, 0x00, 0x41])
        .locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes);
    let path = write(&dir.path().join("child.vhd"), &c);
    let img = Image::open(&path).unwrap();
    assert_eq!(warnings(&img), ["PAR-NAME"]);
}

#[test]
fn locator_data_that_is_not_text_is_warned_about_and_skipped() {
    let garbage: [(Platform, &[u8]); 4] = [
        (Platform::W2ru, &[0x00, 0xD8, 0x41, 0x00]),
        (Platform::W2ku, &[0x2E, 0x00, 0x5C]),
        (Platform::MacX, &[0x66, 0xFF, 0xFE, 0x80]),
        (Platform::W2ru, &[0, 0, 0, 0]),
    ];
    for (platform, bytes) in garbage {
        let dir = tempfile::tempdir().unwrap();
        let parent = fixed_parent(&dir.path().join("parent.vhd"), SIZE, 4);
        let c = child(parent.id(), parent.stamp())
            .locator_bytes(platform, bytes, DataSpace::Bytes)
            .locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes);
        let path = write(&dir.path().join("child.vhd"), &c);
        let img = Image::open(&path).unwrap_or_else(|e| panic!("{platform:?} {bytes:?}: {e}"));
        assert_eq!(
            warnings(&img),
            ["PAR-LOCATOR-ENCODING"],
            "{platform:?} {bytes:?}"
        );
    }
}

#[test]
fn an_unknown_platform_code_is_warned_about_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), SIZE, 5);
    let c = child(parent.id(), parent.stamp())
        .locator(Platform::Code(*b"Zzz!"), ".\\parent.vhd", DataSpace::Bytes)
        .parent_name("parent.vhd");
    let path = write(&dir.path().join("child.vhd"), &c);
    let img = Image::open(&path).unwrap();
    assert_eq!(warnings(&img), ["PAR-LOCATOR-PLATFORM"]);
}

#[test]
fn a_parent_outside_the_allowed_directories_is_not_followed_and_the_error_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (outside, inside) = (dir.path().join("outside"), dir.path().join("inside"));
    std::fs::create_dir(&outside).unwrap();
    std::fs::create_dir(&inside).unwrap();
    let parent = fixed_parent(&outside.join("parent.vhd"), SIZE, 6);
    let c = child(parent.id(), parent.stamp())
        .locator(Platform::W2ru, "..\\outside\\parent.vhd", DataSpace::Bytes)
        .locator(
            Platform::W2ku,
            &outside.join("parent.vhd").display().to_string(),
            DataSpace::Bytes,
        );
    let path = write(&inside.join("child.vhd"), &c);
    let (rule, text) = rule_of(
        OpenOptions::new()
            .allow_parent_dirs(vec![inside.clone()])
            .open(&path),
    );
    assert_eq!(rule, Some("PAR-NOT-FOUND"), "{text}");
    assert!(text.contains("outside the allowed directories"), "{text}");
    // Allowing the parent's directory lets it through.
    let mut img = OpenOptions::new()
        .allow_parent_dirs(vec![inside, outside])
        .open(&path)
        .unwrap();
    assert!(read_all(&mut img) == c.expected(&parent.expected(&[])));
}

#[cfg(unix)]
#[test]
fn a_symlink_inside_the_allowed_directory_does_not_smuggle_in_an_outside_parent() {
    let dir = tempfile::tempdir().unwrap();
    let (outside, inside) = (dir.path().join("outside"), dir.path().join("inside"));
    std::fs::create_dir(&outside).unwrap();
    std::fs::create_dir(&inside).unwrap();
    let parent = fixed_parent(&outside.join("parent.vhd"), SIZE, 6);
    std::os::unix::fs::symlink(outside.join("parent.vhd"), inside.join("parent.vhd")).unwrap();
    let c = child(parent.id(), parent.stamp()).locator(
        Platform::W2ru,
        ".\\parent.vhd",
        DataSpace::Bytes,
    );
    let path = write(&inside.join("child.vhd"), &c);
    assert_not_followed_outside(&path, inside);
}

#[test]
fn a_block_over_a_locators_data_is_an_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), SIZE, 7);
    let c = child(parent.id(), parent.stamp())
        .locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes)
        .corrupt_at(|bytes, layout| {
            let sector = (layout.locators[0] / 512) as u32;
            let at = builder::BAT_OFFSET as usize + 4;
            bytes[at..at + 4].copy_from_slice(&sector.to_be_bytes());
        });
    let path = write(&dir.path().join("child.vhd"), &c);
    let (rule, text) = rule_of(Image::open(&path));
    assert_eq!(rule, Some("BAT-ENTRY-OVERLAP"), "{text}");
    assert!(text.contains("locator"), "{text}");
}

/// Runs `f` on a thread and fails if it does not finish within 10 s (a
/// hang would otherwise stall the whole suite).
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("did not finish within 10 s (hung on a locator?)")
}

#[cfg(unix)]
#[test]
fn a_locator_naming_a_fifo_or_a_device_is_not_opened() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.vhd");
    match std::process::Command::new("mkfifo").arg(&fifo).status() {
        Ok(s) if s.success() => {}
        other => {
            skip::skip(&format!("mkfifo failed: {other:?}"));
            return;
        }
    }
    let parent = fixed_parent(&dir.path().join("parent.vhd"), SIZE, 8);
    // Only hostile locators: a FIFO (opening it would wait for a writer
    // forever) and a character device.
    let c = child(parent.id(), parent.stamp())
        .locator(Platform::W2ru, ".\\fifo.vhd", DataSpace::Bytes)
        .locator(Platform::W2ku, "/dev/zero", DataSpace::Bytes);
    let path = write(&dir.path().join("child.vhd"), &c);
    let (rule, text) = within_10s(move || rule_of(Image::open(&path)));
    // They exist but are not images: the first is named as the invalid
    // parent, and every place tried is listed.
    assert_eq!(rule, Some("PAR-INVALID"), "{text}");
    assert!(
        text.contains("fifo.vhd") && text.contains("/dev/zero"),
        "{text}"
    );
    // With a good locator after them, the good one is used.
    let c = c.locator(
        Platform::W2ku,
        &dir.path().join("parent.vhd").display().to_string(),
        DataSpace::Bytes,
    );
    let path = write(&dir.path().join("child2.vhd"), &c);
    let expected = c.expected(&parent.expected(&[]));
    let contents = within_10s(move || read_all(&mut Image::open(&path).unwrap()));
    assert!(contents == expected);
}

#[test]
fn allowed_directories_bind_every_level_of_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (outside, inside) = (dir.path().join("outside"), dir.path().join("inside"));
    std::fs::create_dir(&outside).unwrap();
    std::fs::create_dir(&inside).unwrap();
    let base = fixed_parent(&outside.join("base.vhd"), SIZE, 9);
    let mid = child(base.id(), base.stamp()).locator(
        Platform::W2ku,
        &outside.join("base.vhd").display().to_string(),
        DataSpace::Bytes,
    );
    write(&inside.join("mid.vhd"), &mid);
    let top = child(mid.id(), mid.stamp()).locator(Platform::W2ru, ".\\mid.vhd", DataSpace::Bytes);
    let path = write(&inside.join("top.vhd"), &top);
    assert_not_followed_outside(&path, inside);
}

#[test]
fn a_locator_whose_data_lies_in_the_bat_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), SIZE, 5);
    // The builder puts the BAT at 1536; point the locator's data there.
    let c = child(parent.id(), parent.stamp())
        .locator(Platform::W2ru, ".\\parent.vhd", DataSpace::Bytes)
        .locator_fields(Some(1536 + 8), None);
    let path = write(&dir.path().join("child.vhd"), &c);
    let (rule, text) = rule_of(Image::open(&path));
    assert_eq!(rule, Some("HDR-TABLE-OFFSET"), "{text}");
    assert!(text.contains("parent locator 0"), "{text}");
}

#[test]
fn a_locator_to_a_parent_with_another_unique_id_is_passed_over_for_the_next() {
    // PAR-UNIQUE-ID during resolution: a candidate with another ID is not
    // the parent, so the next locator is tried. Whichever locator the
    // resolver tries first, the impostor is in one child's first place.
    let dir = tempfile::tempdir().unwrap();
    let parent = fixed_parent(&dir.path().join("parent.vhd"), SIZE, 1);
    fixed_parent(&dir.path().join("impostor.vhd"), SIZE, 2);
    for (first, second, name) in [
        ("impostor", "parent", "a.vhd"),
        ("parent", "impostor", "b.vhd"),
    ] {
        let c = child(parent.id(), parent.stamp())
            .locator(Platform::W2ru, &format!(".\\{first}.vhd"), DataSpace::Bytes)
            .locator(
                Platform::W2ku,
                &dir.path().join(format!("{second}.vhd")).to_string_lossy(),
                DataSpace::Bytes,
            );
        let path = write(&dir.path().join(name), &c);
        let mut img = Image::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(warnings(&img).is_empty(), "{name}: {:?}", img.findings());
        assert!(
            read_all(&mut img) == c.expected(&parent.expected(&[])),
            "{name} reads its real parent under its own sectors"
        );
    }
}
