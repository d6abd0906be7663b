//! Compressed text inputs (gzip, zstd): the one way a compressed stream is
//! opened, for the planner's sample and the worker's shard.

use hourglass_core::task::Compression;
use std::io::Read;

/// `reader`'s bytes decompressed. Concatenated gzip members are read as
/// one stream, as `gzip -d` does.
pub fn decoder<'r, R: Read + 'r>(compression: Compression, reader: R) -> std::io::Result<Box<dyn Read + 'r>> {
    Ok(match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
    })
}
