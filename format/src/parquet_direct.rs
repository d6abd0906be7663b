//! Model features straight from Parquet pages into the row-major tensor.
//!
//! The Arrow reader decodes every column into its own array (dictionary
//! indices expanded, buffers allocated and zeroed), and the tensor is then
//! gathered from those arrays: two passes over every value, through memory.
//! For the common shape of a feature file (flat numeric columns, required or
//! optional, PLAIN, dictionary or BYTE_STREAM_SPLIT pages) this module
//! decodes each page's values itself and stores them straight into their
//! slot of the tensor, a block of rows at a time so the block stays in
//! cache. Page headers, decompression and checksums stay with the `parquet`
//! crate's page reader; anything else (nested columns, other encodings,
//! other types) keeps the Arrow path, decided per shard from the footer
//! before a row is read.

use bytes::{Buf, Bytes};
use parquet::basic::{Encoding, Type as Physical};
use parquet::column::page::{Page, PageReader};
use parquet::file::metadata::{ColumnChunkMetaData, RowGroupMetaData};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::schema::types::SchemaDescriptor;
use std::collections::VecDeque;
use std::sync::Arc;

/// Rows decoded per column before moving to the next column: a block of
/// the tensor (256 rows × 39 features = 40 KB) stays in L1/L2 while every
/// column writes its slot of it.
const BLOCK_ROWS: usize = 128;

/// Encodings a feature column's chunk may list for this reader (levels are
/// listed as RLE or, by old writers, BIT_PACKED).
#[allow(deprecated)] // BIT_PACKED: only for definition levels, read below.
fn supported_encoding(e: Encoding) -> bool {
    matches!(
        e,
        Encoding::PLAIN
            | Encoding::PLAIN_DICTIONARY
            | Encoding::RLE_DICTIONARY
            | Encoding::RLE
            | Encoding::BIT_PACKED
            | Encoding::BYTE_STREAM_SPLIT
    )
}

/// The leaf column of top-level field `name`, when it can be read here: not
/// nested or repeated, at most one definition level, a numeric physical type
/// whose Arrow type is the plain one (no decimal, date, unsigned or other
/// logical reading).
pub fn direct_column(schema: &SchemaDescriptor, name: &str, arrow: &arrow_schema::DataType) -> Option<usize> {
    use arrow_schema::DataType as A;
    let i = schema.columns().iter().position(|c| c.path().parts() == [name])?;
    let c = schema.column(i);
    let types_match = matches!(
        (c.physical_type(), arrow),
        (Physical::FLOAT, A::Float32)
            | (Physical::DOUBLE, A::Float64)
            | (Physical::INT32, A::Int32)
            | (Physical::INT64, A::Int64)
    );
    (types_match && c.max_rep_level() == 0 && c.max_def_level() <= 1).then_some(i)
}

/// Whether every chunk of `leaves` in `row_group` uses only encodings read
/// here.
pub fn row_group_supported(row_group: &RowGroupMetaData, leaves: &[usize]) -> bool {
    leaves.iter().all(|&l| row_group.column(l).encodings().all(supported_encoding))
}

/// A column chunk's bytes, addressed by file offset as the page reader asks.
struct ChunkBytes {
    offset: u64,
    data: Bytes,
}

impl ChunkBytes {
    fn slice(&self, start: u64, len: Option<usize>) -> parquet::errors::Result<Bytes> {
        let from = start.checked_sub(self.offset).map(|s| s as usize).filter(|&s| s <= self.data.len());
        let Some(from) = from else {
            return Err(parquet::errors::ParquetError::EOF(format!("offset {start} is outside the column chunk")));
        };
        let to = len.map_or(self.data.len(), |l| from + l);
        if to > self.data.len() {
            return Err(parquet::errors::ParquetError::EOF(format!(
                "{len:?} bytes at {start} run past the column chunk"
            )));
        }
        Ok(self.data.slice(from..to))
    }
}

impl Length for ChunkBytes {
    fn len(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

impl ChunkReader for ChunkBytes {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}

/// The RLE / bit-packing hybrid (dictionary indices, definition levels).
struct Hybrid {
    buf: Bytes,
    pos: usize,
    bit_width: u32,
    /// Values left in the current run.
    left: usize,
    /// The current run: `Some(value)` repeats it; `None` is bit-packed,
    /// starting at bit `bit` of `buf`.
    repeat: Option<u32>,
    bit: usize,
}

impl Hybrid {
    fn new(buf: Bytes, bit_width: u32) -> Result<Self, String> {
        if bit_width > 32 {
            return Err(format!("bit width {bit_width} is over 32"));
        }
        Ok(Hybrid { buf, pos: 0, bit_width, left: 0, repeat: None, bit: 0 })
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("a run header runs past the page")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a run header is over 10 bytes".into())
    }

    fn next_run(&mut self) -> Result<(), String> {
        let header = self.varint()?;
        let count = usize::try_from(header >> 1).map_err(|_| "a run is too long")?;
        // The low bit: 1 for a bit-packed run (of `count` groups of 8), 0
        // for a repeated one.
        if header & 1 == 0 {
            let bytes = self.bit_width.div_ceil(8) as usize;
            let raw = self.buf.get(self.pos..self.pos + bytes).ok_or("a repeated run's value runs past the page")?;
            let mut v = [0u8; 4];
            v[..bytes].copy_from_slice(raw);
            self.pos += bytes;
            self.repeat = Some(u32::from_le_bytes(v));
            self.left = count;
        } else {
            let values = count.checked_mul(8).ok_or("a run is too long")?;
            let bytes = count * self.bit_width as usize;
            // A page's last run may be cut short: its values stop at the page's end.
            let available = (self.buf.len() - self.pos) * 8 / self.bit_width.max(1) as usize;
            self.repeat = None;
            self.bit = self.pos * 8;
            self.left = if self.bit_width == 0 { values } else { values.min(available) };
            self.pos = (self.pos + bytes).min(self.buf.len());
        }
        if self.left == 0 && count > 0 && self.bit_width > 0 {
            return Err("an empty bit-packed run".into());
        }
        Ok(())
    }

    /// Fills `out` completely, or fails when the page has fewer values.
    fn read(&mut self, out: &mut [u32]) -> Result<(), String> {
        let mut i = 0;
        while i < out.len() {
            if self.left == 0 {
                self.next_run()?;
                continue;
            }
            let k = self.left.min(out.len() - i);
            match self.repeat {
                Some(v) => out[i..i + k].fill(v),
                None => self.unpack(&mut out[i..i + k]),
            }
            self.left -= k;
            i += k;
        }
        Ok(())
    }

    /// `out.len()` bit-packed values from bit `self.bit` (LSB first).
    fn unpack(&mut self, out: &mut [u32]) {
        let w = self.bit_width as usize;
        if w == 0 {
            out.fill(0);
            return;
        }
        let mask = if w == 32 { u64::from(u32::MAX) } else { (1u64 << w) - 1 };
        let buf = &self.buf[..];
        let mut bit = self.bit;
        // Values whose 8-byte window lies inside the buffer: one unaligned
        // load each. The last few are read through a zero-padded copy.
        let last_start = (buf.len().saturating_sub(8) * 8 + 7).saturating_sub(bit);
        let fast = if buf.len() >= 8 && bit <= buf.len().saturating_sub(8) * 8 + 7 {
            (last_start / w + 1).min(out.len())
        } else {
            0
        };
        for o in &mut out[..fast] {
            let byte = bit / 8;
            let word = u64::from_le_bytes(buf[byte..byte + 8].try_into().expect("8 bytes"));
            *o = ((word >> (bit % 8)) & mask) as u32;
            bit += w;
        }
        for o in &mut out[fast..] {
            let byte = bit / 8;
            let mut tail = [0u8; 8];
            let rest = &buf[byte.min(buf.len())..];
            let k = rest.len().min(8);
            tail[..k].copy_from_slice(&rest[..k]);
            *o = ((u64::from_le_bytes(tail) >> (bit % 8)) & mask) as u32;
            bit += w;
        }
        self.bit = bit;
    }
}

/// Definition levels of an optional column's page (0: null, 1: present).
enum Levels {
    Hybrid(Hybrid),
    /// The deprecated BIT_PACKED encoding: one bit per level, most
    /// significant bit first.
    MsbFirst {
        buf: Bytes,
        next: usize,
    },
}

impl Levels {
    fn read(&mut self, out: &mut [u32]) -> Result<(), String> {
        match self {
            Levels::Hybrid(h) => h.read(out),
            Levels::MsbFirst { buf, next } => {
                for o in out.iter_mut() {
                    let byte = *buf.get(*next / 8).ok_or("definition levels run past the page")?;
                    *o = u32::from((byte >> (7 - *next % 8)) & 1);
                    *next += 1;
                }
                Ok(())
            }
        }
    }
}

/// The values of one data page.
enum Values {
    Plain {
        buf: Bytes,
        pos: usize,
    },
    Dict(Hybrid),
    /// BYTE_STREAM_SPLIT: byte `b` of value `i` at `b * count + i`.
    Split {
        buf: Bytes,
        count: usize,
        next: usize,
    },
}

/// Reads one physical value from little-endian bytes as f32.
#[inline]
fn value(physical: Physical, b: &[u8]) -> f32 {
    match physical {
        Physical::FLOAT => f32::from_le_bytes(b.try_into().expect("4 bytes")),
        Physical::DOUBLE => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
        Physical::INT32 => i32::from_le_bytes(b.try_into().expect("4 bytes")) as f32,
        _ => i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
    }
}

fn width_of(physical: Physical) -> usize {
    match physical {
        Physical::FLOAT | Physical::INT32 => 4,
        _ => 8,
    }
}

/// One feature column of one row group, decoded page by page.
struct ColumnDecoder {
    /// `row group G: column "NAME"`, for errors.
    context: String,
    physical: Physical,
    optional: bool,
    pages: SerializedPageReader<ChunkBytes>,
    dict: Vec<f32>,
    /// Level entries (rows) left in the current page.
    left: usize,
    levels: Option<Levels>,
    values: Option<Values>,
    /// Scratch: indices or levels, and values, for one block.
    idx: Vec<u32>,
    defs: Vec<u32>,
    vals: Vec<f32>,
}

impl ColumnDecoder {
    fn new(meta: &ColumnChunkMetaData, data: Bytes, rows: usize, group: usize) -> Result<Self, String> {
        let context = format!("row group {group}: column {:?}", meta.column_path().string());
        let (offset, _) = meta.byte_range();
        let chunk = Arc::new(ChunkBytes { offset, data });
        let pages = SerializedPageReader::new(chunk, meta, rows, None).map_err(|e| format!("{context}: {e}"))?;
        Ok(ColumnDecoder {
            context,
            physical: meta.column_type(),
            optional: meta.column_descr().max_def_level() == 1,
            pages,
            dict: Vec::new(),
            left: 0,
            levels: None,
            values: None,
            idx: vec![0; BLOCK_ROWS],
            defs: vec![0; BLOCK_ROWS],
            vals: vec![0.0; BLOCK_ROWS],
        })
    }

    fn plain(&self, buf: &[u8], count: usize) -> Result<Vec<f32>, String> {
        let w = width_of(self.physical);
        let bytes = buf.get(..count * w).ok_or("the dictionary page is shorter than its value count")?;
        Ok(bytes.chunks_exact(w).map(|b| value(self.physical, b)).collect())
    }

    /// Moves to the next data page (reading a dictionary page on the way).
    #[allow(deprecated)] // BIT_PACKED definition levels, from old writers.
    fn next_page(&mut self) -> Result<(), String> {
        loop {
            let page = self
                .pages
                .get_next_page()
                .map_err(|e| e.to_string())?
                .ok_or("the column chunk has fewer rows than its row group")?;
            let (buf, rows, encoding, levels) = match page {
                Page::DictionaryPage { buf, num_values, encoding, .. } => {
                    if !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY) {
                        return Err(format!("dictionary page encoding {encoding} is not supported"));
                    }
                    self.dict = self.plain(&buf, num_values as usize)?;
                    continue;
                }
                Page::DataPage { mut buf, num_values, encoding, def_level_encoding, .. } => {
                    let levels = if !self.optional {
                        None
                    } else if def_level_encoding == Encoding::RLE {
                        if buf.len() < 4 {
                            return Err("a data page ends inside its definition levels' length".into());
                        }
                        let len = buf.get_u32_le() as usize;
                        if len > buf.len() {
                            return Err("definition levels run past the data page".into());
                        }
                        Some(Levels::Hybrid(Hybrid::new(buf.split_to(len), 1)?))
                    } else if def_level_encoding == Encoding::BIT_PACKED {
                        let len = (num_values as usize).div_ceil(8);
                        if len > buf.len() {
                            return Err("definition levels run past the data page".into());
                        }
                        Some(Levels::MsbFirst { buf: buf.split_to(len), next: 0 })
                    } else {
                        return Err(format!("definition level encoding {def_level_encoding} is not supported"));
                    };
                    (buf, num_values as usize, encoding, levels)
                }
                Page::DataPageV2 {
                    mut buf,
                    num_values,
                    encoding,
                    num_nulls,
                    def_levels_byte_len,
                    rep_levels_byte_len,
                    ..
                } => {
                    let (rep, def) = (rep_levels_byte_len as usize, def_levels_byte_len as usize);
                    if rep + def > buf.len() {
                        return Err("levels run past the data page".into());
                    }
                    buf.advance(rep);
                    let def_buf = buf.split_to(def);
                    // No nulls in the page: its levels are all 1, skip them.
                    let levels = (self.optional && num_nulls > 0).then(|| Hybrid::new(def_buf, 1).map(Levels::Hybrid));
                    (buf, num_values as usize, encoding, levels.transpose()?)
                }
            };
            self.values = Some(match encoding {
                Encoding::PLAIN => Values::Plain { buf, pos: 0 },
                Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY => {
                    if buf.is_empty() {
                        // A page of nulls only has no indices.
                        Values::Plain { buf, pos: 0 }
                    } else {
                        let mut buf = buf;
                        let bit_width = u32::from(buf.get_u8());
                        Values::Dict(Hybrid::new(buf, bit_width)?)
                    }
                }
                Encoding::BYTE_STREAM_SPLIT => {
                    let count = buf.len() / width_of(self.physical);
                    Values::Split { buf, count, next: 0 }
                }
                other => return Err(format!("page encoding {other} is not supported")),
            });
            self.levels = levels;
            self.left = rows;
            return Ok(());
        }
    }

    /// Decodes the next `n` (≤ `BLOCK_ROWS`) present values into
    /// `out[0]`, `out[stride]`, …
    fn decode_values(&mut self, n: usize, out: &mut [f32], stride: usize) -> Result<(), String> {
        let physical = self.physical;
        let w = width_of(physical);
        let slots = out.chunks_mut(stride).take(n).map(|row| &mut row[0]);
        match self.values.as_mut().expect("a page is open") {
            Values::Plain { buf, pos } => {
                let bytes = buf.get(*pos..*pos + n * w).ok_or("the page has fewer values than rows")?;
                match physical {
                    Physical::FLOAT => slots
                        .zip(bytes.chunks_exact(4))
                        .for_each(|(v, b)| *v = f32::from_le_bytes(b.try_into().expect("4 bytes"))),
                    Physical::DOUBLE => slots
                        .zip(bytes.chunks_exact(8))
                        .for_each(|(v, b)| *v = f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
                    Physical::INT32 => slots
                        .zip(bytes.chunks_exact(4))
                        .for_each(|(v, b)| *v = i32::from_le_bytes(b.try_into().expect("4 bytes")) as f32),
                    _ => slots
                        .zip(bytes.chunks_exact(8))
                        .for_each(|(v, b)| *v = i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32),
                }
                *pos += n * w;
            }
            Values::Dict(h) => {
                let idx = &mut self.idx[..n];
                h.read(idx)?;
                let dict = &self.dict[..];
                // One range check per block, not per value.
                let max = idx.iter().copied().max().unwrap_or(0);
                if max as usize >= dict.len() {
                    return Err(format!(
                        "dictionary index {max} is out of range (the dictionary has {} values)",
                        dict.len()
                    ));
                }
                slots.zip(idx.iter()).for_each(|(v, &i)| *v = dict[i as usize]);
            }
            Values::Split { buf, count, next } => {
                if *next + n > *count {
                    return Err("the page has fewer values than rows".into());
                }
                let mut b = [0u8; 8];
                for (k, v) in slots.enumerate() {
                    for (s, byte) in b[..w].iter_mut().enumerate() {
                        *byte = buf[s * *count + *next + k];
                    }
                    *v = value(physical, &b[..w]);
                }
                *next += n;
            }
        }
        Ok(())
    }

    /// Writes the next `n` rows into `out[row * stride + col]`, `n` ≤
    /// `BLOCK_ROWS`; a null is NaN (missing).
    fn fill(&mut self, out: &mut [f32], stride: usize, col: usize, mut n: usize) -> Result<(), String> {
        let mut row = 0;
        while n > 0 {
            if self.left == 0 {
                self.next_page()?;
                continue;
            }
            let k = n.min(self.left);
            let at = row * stride + col;
            match self.levels.as_mut() {
                None => self.decode_values(k, &mut out[at..], stride)?,
                Some(levels) => {
                    let defs = &mut self.defs[..k];
                    levels.read(defs)?;
                    let present = defs.iter().filter(|&&d| d == 1).count();
                    let mut vals = std::mem::take(&mut self.vals);
                    if present > 0 {
                        self.decode_values(present, &mut vals, 1)?;
                    }
                    let mut j = 0;
                    for (slot, &d) in out[at..].iter_mut().step_by(stride).zip(&self.defs[..k]) {
                        *slot = if d == 1 {
                            j += 1;
                            vals[j - 1]
                        } else {
                            f32::NAN
                        };
                    }
                    self.vals = vals;
                }
            }
            self.left -= k;
            row += k;
            n -= k;
        }
        Ok(())
    }
}

/// One model input: its columns' decoders for the loaded row groups.
struct Input {
    width: usize,
    /// Per loaded row group (front: the one being read), one decoder per
    /// column in the input's order, and the rows left in it.
    groups: VecDeque<(Vec<ColumnDecoder>, usize)>,
}

/// The feature tensors of a shard, row group by row group. The caller
/// loads each row group's column chunks (`load`) before taking its rows.
pub struct FeatureReader {
    /// Leaf column indices per input, in the input's order.
    leaves: Vec<Vec<usize>>,
    inputs: Vec<Input>,
}

impl FeatureReader {
    pub fn new(leaves: Vec<Vec<usize>>) -> Self {
        let inputs = leaves.iter().map(|l| Input { width: l.len(), groups: VecDeque::new() }).collect();
        FeatureReader { leaves, inputs }
    }

    /// Every leaf column read, each once, in order: what `load` is given
    /// the chunks of.
    pub fn distinct_leaves(&self) -> Vec<usize> {
        let mut all: Vec<usize> = self.leaves.iter().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Adds a row group: `chunks[i]` is the chunk of `distinct_leaves()[i]`.
    pub fn load(&mut self, group: usize, row_group: &RowGroupMetaData, chunks: &[Bytes]) -> Result<(), String> {
        let distinct = self.distinct_leaves();
        let rows = usize::try_from(row_group.num_rows()).map_err(|_| "negative row count")?;
        for (input, leaves) in self.inputs.iter_mut().zip(&self.leaves) {
            let decoders = leaves
                .iter()
                .map(|l| {
                    let at = distinct.binary_search(l).expect("a distinct leaf");
                    ColumnDecoder::new(row_group.column(*l), chunks[at].clone(), rows, group)
                })
                .collect::<Result<Vec<_>, String>>()?;
            input.groups.push_back((decoders, rows));
        }
        Ok(())
    }

    /// Rows loaded and not yet taken.
    pub fn rows_loaded(&self) -> usize {
        self.inputs.first().map_or(0, |i| i.groups.iter().map(|g| g.1).sum())
    }

    /// The next `rows` rows of every input, row-major. Fails when fewer are
    /// loaded, or a page is malformed (the message names no file: the
    /// caller adds it).
    pub fn take(&mut self, rows: usize) -> Result<Vec<Vec<f32>>, String> {
        if rows > self.rows_loaded() {
            return Err(format!("{rows} rows asked for, {} loaded", self.rows_loaded()));
        }
        let mut out = Vec::with_capacity(self.inputs.len());
        for input in &mut self.inputs {
            let w = input.width;
            let mut t = super::tensor_buffer(rows * w);
            let mut row = 0;
            while row < rows {
                let (decoders, left) = input.groups.front_mut().expect("rows are loaded");
                if *left == 0 {
                    input.groups.pop_front();
                    continue;
                }
                let n = (rows - row).min(*left).min(BLOCK_ROWS);
                let block = &mut t[row * w..(row + n) * w];
                for (j, d) in decoders.iter_mut().enumerate() {
                    d.fill(block, w, j, n).map_err(|e| format!("{}: {e}", d.context))?;
                }
                *left -= n;
                row += n;
            }
            while input.groups.front().is_some_and(|g| g.1 == 0) {
                input.groups.pop_front();
            }
            out.push(t);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hybrid(bytes: &[u8], w: u32, n: usize) -> Vec<u32> {
        let mut h = Hybrid::new(Bytes::copy_from_slice(bytes), w).unwrap();
        let mut out = vec![0; n];
        h.read(&mut out).unwrap();
        out
    }

    #[test]
    fn rle_and_bit_packed_runs() {
        // A repeated run of 5 × 3, then 8 bit-packed values 0..8 at width
        // 3 (the format's own example).
        let mut bytes = vec![5 << 1, 3, 1 << 1 | 1, 0b1000_1000, 0b1100_0110, 0b1111_1010];
        assert_eq!(hybrid(&bytes, 3, 13), [3, 3, 3, 3, 3, 0, 1, 2, 3, 4, 5, 6, 7]);
        // Asking past the data is an error, not a panic.
        bytes.truncate(3);
        let mut h = Hybrid::new(Bytes::from(bytes), 3).unwrap();
        assert!(h.read(&mut [0; 13]).is_err());
    }

    #[test]
    fn msb_first_levels() {
        let mut l = Levels::MsbFirst { buf: Bytes::from_static(&[0b1011_0000]), next: 0 };
        let mut out = [9; 4];
        l.read(&mut out).unwrap();
        assert_eq!(out, [1, 0, 1, 1]);
    }
}
