//! Property: for any CSV content and shard size, the planner's ranges cover
//! every data line exactly once, start at line starts, and never include
//! the header line.

use hourglass_coordinator::plan::{csv_data_start, cut_csv_with_probe};
use hourglass_core::store::{BlobStore, FsStore};
use proptest::prelude::*;

fn lines() -> impl Strategy<Value = (Vec<String>, bool, bool)> {
    // Lines of 0..40 printable characters (empty lines included), whether
    // the file ends with a newline, and whether lines end with CRLF.
    (proptest::collection::vec("[a-z0-9,.]{0,40}", 0..60), any::<bool>(), any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn shards_cover_every_line_exactly_once(
        (body, trailing_newline, crlf) in lines(),
        shard_bytes in 1u64..200,
        probe_bytes in 1u64..32,
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut text = format!("id,a,b{eol}");
        for (i, l) in body.iter().enumerate() {
            text.push_str(l);
            if i + 1 < body.len() || trailing_newline {
                text.push_str(eol);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csv");
        std::fs::write(&path, &text).unwrap();
        let key = path.to_string_lossy().trim_start_matches('/').to_string();
        let store = FsStore::new();
        let size = text.len() as u64;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (start, ranges) = rt.block_on(async {
            let start = csv_data_start(&store as &dyn BlobStore, &key, size).await.unwrap();
            let ranges = cut_csv_with_probe(&store, &key, size, start, shard_bytes, probe_bytes, u64::MAX).await.unwrap();
            (start, ranges)
        });
        let bytes = text.as_bytes();
        // The header line is in no shard.
        prop_assert_eq!(start as usize, "id,a,b".len() + eol.len());
        // Contiguous, non-empty, covering [start, size).
        let mut pos = start;
        for r in &ranges {
            prop_assert_eq!(r[0], pos);
            prop_assert!(r[1] > r[0]);
            pos = r[1];
            // Each range ends at the end of a line.
            prop_assert!(r[1] == size || bytes[r[1] as usize - 1] == b'\n');
        }
        prop_assert_eq!(pos, size.max(start));
        // Re-assembling the shards' lines gives back every data line once.
        let mut rebuilt: Vec<&str> = Vec::new();
        for r in &ranges {
            let s = std::str::from_utf8(&bytes[r[0] as usize..r[1] as usize]).unwrap();
            rebuilt.extend(s.split_inclusive('\n'));
        }
        let expected: Vec<&str> = text[start as usize..].split_inclusive('\n').collect();
        prop_assert_eq!(rebuilt, expected);
    }
}
