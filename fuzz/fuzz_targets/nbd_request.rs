//! Any bytes as what an NBD client sends `vhd serve` (after a valid
//! handshake when the first byte is odd, so that most inputs reach the
//! transmission phase): the parsers and the session never panic, the
//! server's output starts with its greeting, and a request header that
//! parses is either refused or (flush and disconnect aside) lies inside
//! the export.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::AtomicBool;
use vhdref::serve::proto::{self, GoRequest, MetaRequest, Negotiated};
use vhdref::serve::{ExportInfo, ImageBackend, run_session};
use vhdref::storage::MemStorage;
use vhdref::{CreateOptions, DiskType};

const SIZE: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data
        .get(..proto::REQUEST_LEN)
        .and_then(|h| h.try_into().ok())
        && let Ok(req) = proto::parse_request(header)
    {
        let n = Negotiated {
            size: SIZE,
            writable: true,
            structured: true,
            block_status: true,
        };
        // Flush and disconnect carry no range.
        let ranged = !matches!(
            req.command,
            proto::Command::Flush | proto::Command::Disconnect
        );
        if proto::check_request(&req, &n).is_ok() && ranged {
            assert!(
                req.offset
                    .checked_add(u64::from(req.length))
                    .is_some_and(|e| e <= SIZE)
            );
        }
    }
    let mut input = Vec::new();
    if data.first().is_some_and(|b| b % 2 == 1) {
        input.extend(3u32.to_be_bytes());
        input.extend(proto::encode_option(proto::OPT_STRUCTURED_REPLY, &[]));
        let meta = MetaRequest {
            name: String::new(),
            queries: vec![proto::BASE_ALLOCATION.into()],
        };
        input.extend(proto::encode_option(
            proto::OPT_SET_META_CONTEXT,
            &proto::encode_meta(&meta),
        ));
        let go = GoRequest {
            name: "x".into(),
            info: vec![],
        };
        input.extend(proto::encode_option(proto::OPT_GO, &proto::encode_go(&go)));
    }
    input.extend_from_slice(data.get(1..).unwrap_or_default());
    let Ok(mut img) = CreateOptions::new(DiskType::Dynamic, SIZE)
        .block_size(512 * 1024)
        .create_in(Box::new(MemStorage::new()), "fuzz.vhd", None)
    else {
        return;
    };
    let _ = img.write_at(4096, &[7; 4096]);
    let mut backend = ImageBackend::single(img, data.get(1).is_some_and(|b| b % 2 == 1));
    let export = ExportInfo {
        name: "x".into(),
        description: "fuzz".into(),
        multi_conn: false,
    };
    let mut out = Vec::new();
    let _ = run_session(
        &input[..],
        &mut out,
        &export,
        &mut backend,
        &AtomicBool::new(false),
    );
    assert_eq!(out.get(..18), Some(&proto::greeting()[..]));
});
