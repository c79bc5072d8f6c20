//! What vhdref writes, every reader reads (issue 12, section 5): every
//! kind of image vhdref makes (create fixed and dynamic, block sizes, the
//! CHS size rule, writes into children a few sectors at a time, chains,
//! convert outputs, a committed parent) against every reader on the
//! machine that supports its type. The matrix is printed (run with
//! `--nocapture`, or read spec/divergences.md) and every supported cell
//! must read the bytes vhdref wrote.
//!
//! Children read right in libvhdi because vhdref widens a child's writes
//! to whole 4 KiB groups (`Image::set_exact_sectors`): libvhdi judges a
//! group by its bitmap byte (divergences D3).

mod common;

use std::fmt::Write as _;

use common::{
    Peer, dissect_read, our_images, peer_available, pyvhdi_read, qemu_read, sevenzip_read, temp_dir,
};
use vhdref::DiskType;

/// A reader and whether it reads differencing images.
const READERS: [(Peer, &str, bool); 5] = [
    (Peer::QemuImg, "qemu-img", false),
    (Peer::PyvhdiSystem, "libvhdi 2021", true),
    (Peer::PyvhdiVenv, "libvhdi 2026", true),
    (Peer::SevenZip, "7-Zip", true),
    (Peer::Dissect, "dissect", false),
];

#[test]
fn every_reader_reads_every_kind_of_image_vhdref_writes() {
    let _serial = common::one_at_a_time();
    let readers: Vec<(Peer, &str, bool)> = READERS
        .into_iter()
        .filter(|&(p, _, _)| peer_available(p))
        .collect();
    if readers.is_empty() {
        return;
    }
    let dir = temp_dir();
    let cases = our_images(dir.path(), 0x3A7);
    let mut table = String::from("| image vhdref wrote | type |");
    for (_, name, _) in &readers {
        let _ = write!(table, " {name} |");
    }
    table.push_str("\n|---|---|");
    table.push_str(&"---|".repeat(readers.len()));
    let mut wrong = Vec::new();
    for case in &cases {
        let _ = write!(table, "\n| {} | {} |", case.name, case.disk_type.name());
        for &(peer, name, differencing) in &readers {
            if case.disk_type == DiskType::Differencing && !differencing {
                table.push_str(" no differencing support |");
                continue;
            }
            let got = match peer {
                Peer::QemuImg => qemu_read(dir.path(), case.path()),
                Peer::PyvhdiSystem | Peer::PyvhdiVenv => {
                    pyvhdi_read(&peer.python(), dir.path(), &case.chain_refs()).0
                }
                Peer::SevenZip => sevenzip_read(case.path()).stdout,
                Peer::Dissect => dissect_read(dir.path(), case.path()).0,
                _ => unreachable!("not a reader"),
            };
            if got == case.expected {
                table.push_str(" reads right |");
            } else {
                table.push_str(" **differs** |");
                wrong.push(format!("{} read by {name}", case.name));
            }
        }
    }
    println!("{table}");
    assert!(
        wrong.is_empty(),
        "readers that differ:\n{}",
        wrong.join("\n")
    );
}
