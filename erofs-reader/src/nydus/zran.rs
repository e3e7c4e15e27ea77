//! Random access into the gzip stream of a Nydus `targz-ref` blob from its ZRan checkpoints.
//!
//! A [`ZranInflateContext`] says: inflating `in_len` gzip bytes from `in_offset`, after the
//! pending bits of the byte before and with a preset window (the dictionary), yields
//! `out_len` bytes of the tar stream. zlib does this with `inflatePrime` and
//! `inflateSetDictionary`. The safe API over zlib-rs (flate2) offers only the dictionary, so
//! the pending bits go in another way, with no `unsafe`: a *primer*, a few bytes of
//! deflate made here, is inflated first. It is a non-final fixed-Huffman block of `n`
//! literals whose length, `10 + 9n` bits, leaves exactly room in its last byte for the
//! pending bits at the top, so the context's input then follows on the same byte grid as in
//! the gzip file (stored blocks, which pad to whole bytes, depend on that). The literals the
//! primer writes are dropped, and the dictionary is set after them (raw inflate takes a
//! dictionary at any point; 32 KiB replaces the whole window, a shorter one, only at the
//! start of a gzip member, is never reached past by valid data).
//!
//! A context may run across the end of a gzip member (a multi-member `.tar.gz`): after the
//! member's deflate stream ends come its 8-byte trailer and the next member's header, and a
//! fresh raw inflate (no dictionary: members do not refer back) goes on from there.

use erofs_format::rafs::ZranInflateContext;

/// Gzip member trailer: CRC-32 and ISIZE.
#[cfg_attr(not(feature = "deflate"), allow(dead_code))]
const GZIP_TRAILER: usize = 8;

/// The literal the primer repeats: 144, the first with a 9-bit fixed-Huffman code.
#[cfg_attr(not(feature = "deflate"), allow(dead_code))]
const PRIMER_LITERAL: u8 = 144;

/// Deflate bits, least significant first, as the format packs them.
#[derive(Default)]
#[cfg_attr(not(feature = "deflate"), allow(dead_code))]
struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

#[cfg_attr(not(feature = "deflate"), allow(dead_code))]
impl BitWriter {
    /// The `n` low bits of `value`, least significant first (header fields, extra bits).
    fn put(&mut self, value: u32, n: usize) {
        for i in 0..n {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if value >> i & 1 == 1
                && let Some(last) = self.bytes.last_mut()
            {
                *last |= 1 << (self.bits % 8);
            }
            // Counts the bits of a primer of a few dozen bits: cannot saturate.
            self.bits = self.bits.saturating_add(1);
        }
    }

    /// An `n`-bit Huffman code (packed most significant bit first).
    fn put_code(&mut self, code: u32, n: usize) {
        for i in (0..n).rev() {
            self.put(code >> i & 1, 1);
        }
    }
}

/// The primer for `bits` (1 to 7) pending bits `value`: the bytes to inflate before the
/// context's input, how many of them hold only primer bits (the last one also holds the
/// pending bits), and how many literals the primer writes.
#[cfg_attr(not(feature = "deflate"), allow(dead_code))]
fn primer(bits: u8, value: u8) -> (Vec<u8>, usize, usize) {
    let bits = usize::from(bits);
    // 10 + 9n ≡ 8 - bits (mod 8)  ⇔  n ≡ 6 - bits (mod 8).
    #[allow(clippy::arithmetic_side_effects, reason = "bits is 1..=7")]
    let literals = (14 - bits) % 8;
    let mut w = BitWriter::default();
    w.put(0, 1); // BFINAL: more blocks follow
    w.put(1, 2); // BTYPE 01: fixed Huffman codes
    for _ in 0..literals {
        // Literals 144..=255 have the 9-bit codes 110010000 + (literal - 144).
        w.put_code(0b1_1001_0000, 9);
    }
    w.put_code(0, 7); // end of block (256)
    let whole = w.bits / 8;
    w.put(u32::from(value), bits);
    (w.bytes, whole, literals)
}

/// Inflate context `ctx` from `input` (exactly its `in_len` gzip bytes) with its dictionary
/// `dict` into `out` (exactly its `out_len` bytes).
///
/// # Errors
///
/// A message if the input is not a deflate stream from that checkpoint, ends before `out`
/// is full, or a member boundary inside it is not followed by a gzip header.
#[cfg(feature = "deflate")]
pub(super) fn inflate_context(
    ctx: &ZranInflateContext,
    dict: &[u8],
    input: &[u8],
    out: &mut [u8],
) -> Result<(), String> {
    use flate2::{Decompress, FlushDecompress, Status};

    if input.len() != ctx.in_len.get() as usize || out.len() != ctx.out_len.get() as usize {
        return Err("buffers differ from the ZRan context's sizes".into());
    }
    let mut inflater = Decompress::new(false);
    // What to inflate before `input`: the rest of the primer (with the pending bits).
    let mut head: Vec<u8> = Vec::new();
    if let Some((bits, value)) = ctx.prime() {
        let (primer, whole, literals) = primer(bits, value);
        let mut dropped = [0u8; 8];
        let dropped = &mut dropped[..literals];
        inflater
            .decompress(&primer[..whole], dropped, FlushDecompress::None)
            .map_err(|e| format!("ZRan primer: {e}"))?;
        if inflater.total_out() != literals as u64 || dropped.iter().any(|&b| b != PRIMER_LITERAL) {
            return Err("the inflater did not take the ZRan primer".into());
        }
        head = usize::try_from(inflater.total_in())
            .ok()
            .and_then(|n| primer.get(n..))
            .ok_or("the inflater took more than the ZRan primer")?
            .to_vec();
    }
    if !dict.is_empty() {
        inflater
            .set_dictionary(dict)
            .map_err(|e| format!("ZRan dictionary: {e}"))?;
    }
    // The primer's rest is taken into the inflater's bit buffer (it cannot finish a symbol).
    let (in0, out0) = (inflater.total_in(), inflater.total_out());
    inflater
        .decompress(&head, out, FlushDecompress::None)
        .map_err(|e| format!("ZRan primer: {e}"))?;
    if inflater.total_in().checked_sub(in0) != Some(head.len() as u64)
        || inflater.total_out() != out0
    {
        return Err("the inflater did not take the ZRan pending bits".into());
    }
    let mut pos = 0usize;
    let mut done = 0usize;
    while done < out.len() {
        let (in0, out0) = (inflater.total_in(), inflater.total_out());
        let status = inflater
            .decompress(&input[pos..], &mut out[done..], FlushDecompress::None)
            .map_err(|e| format!("inflate at ZRan output byte {done}: {e}"))?;
        // Both totals grow by at most the slice lengths given.
        let used = grown(in0, inflater.total_in());
        let made = grown(out0, inflater.total_out());
        pos = pos.saturating_add(used);
        done = done.saturating_add(made);
        if done == out.len() {
            break;
        }
        match status {
            Status::StreamEnd => {
                // The member's deflate stream ends at `pos`: its trailer, then the next
                // member's header.
                let header = pos.saturating_add(GZIP_TRAILER);
                let body = input
                    .get(header..)
                    .and_then(gzip_header_len)
                    .ok_or_else(|| {
                        format!(
                            "gzip member ends at ZRan output byte {done} of {} with no member \
                             header after it",
                            out.len()
                        )
                    })?;
                // body <= input.len() - header (gzip_header_len).
                pos = header.saturating_add(body);
                inflater.reset(false);
            }
            _ if used == 0 && made == 0 => {
                return Err(format!(
                    "gzip input of the ZRan context ends at output byte {done} of {}",
                    out.len()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(not(feature = "deflate"))]
pub(super) fn inflate_context(
    _: &ZranInflateContext,
    _: &[u8],
    _: &[u8],
    _: &mut [u8],
) -> Result<(), String> {
    Err("ZRan (gzip) chunks need the `deflate` feature".into())
}

/// Length of the gzip member header at the start of `b` (RFC 1952: magic, method 8, flags,
/// then the optional extra field, name, comment and header CRC), or `None` if `b` does not
/// start with a whole one.
#[cfg_attr(not(feature = "deflate"), allow(dead_code))]
fn gzip_header_len(b: &[u8]) -> Option<usize> {
    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;
    let fixed = b.get(..10)?;
    if fixed[..3] != [0x1f, 0x8b, 8] || fixed[3] & 0xE0 != 0 {
        return None;
    }
    let flags = fixed[3];
    let mut at = 10usize;
    if flags & FEXTRA != 0 {
        let xlen = b.get(at..at.checked_add(2)?)?;
        at = at
            .checked_add(2)?
            .checked_add(usize::from(u16::from_le_bytes([xlen[0], xlen[1]])))?;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let nul = b.get(at..)?.iter().position(|&c| c == 0)?;
            at = at.checked_add(nul)?.checked_add(1)?;
        }
    }
    if flags & FHCRC != 0 {
        at = at.checked_add(2)?;
    }
    (at <= b.len()).then_some(at)
}

/// Bytes an inflater consumed or produced in one call, from its running counters (which
/// grow by at most the slices handed to it, so the sums above cannot saturate).
#[cfg_attr(not(feature = "deflate"), allow(dead_code))]
fn grown(before: u64, after: u64) -> usize {
    usize::try_from(after.saturating_sub(before)).unwrap_or(usize::MAX)
}

#[cfg(all(test, feature = "deflate"))]
mod tests {
    use super::*;
    use flate2::write::{DeflateEncoder, GzEncoder};
    use flate2::{Compression, Decompress, FlushDecompress, Status};
    use std::io::Write;
    use zerocopy::FromZeros;
    use zerocopy::little_endian::U32;

    /// Deterministic compressible text.
    fn text(n: usize) -> Vec<u8> {
        let words = ["gzip ", "zran ", "window ", "block\n", "nydus ", "tar "];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(words[(x % 6) as usize].as_bytes());
        }
        out.truncate(n);
        out
    }

    #[test]
    fn gzip_headers() {
        let plain = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        assert_eq!(gzip_header_len(&plain), Some(10));
        assert_eq!(gzip_header_len(&plain[..9]), None);
        let mut named = plain.to_vec();
        named[3] = 0x08 | 0x04 | 0x10 | 0x02;
        named.extend_from_slice(&[3, 0, b'x', b'y', b'z']);
        named.extend_from_slice(b"l.tar\0");
        named.extend_from_slice(b"hi\0");
        named.extend_from_slice(&[0xAA, 0xBB]);
        assert_eq!(gzip_header_len(&named), Some(named.len()));
        assert_eq!(gzip_header_len(&named[..named.len() - 1]), None);
        assert_eq!(
            gzip_header_len(&named[..named.len() - 3]),
            None,
            "comment cut"
        );
        let mut bad = plain;
        bad[2] = 9;
        assert_eq!(gzip_header_len(&bad), None);
        bad = plain;
        bad[3] = 0x20;
        assert_eq!(gzip_header_len(&bad), None, "reserved flag");
        // An extra field longer than the data: no panic.
        let mut long = plain.to_vec();
        long[3] = 0x04;
        long.extend_from_slice(&[0xFF, 0xFF]);
        assert_eq!(gzip_header_len(&long), None);
    }

    fn context(in_len: usize, out_len: usize, dict: usize) -> ZranInflateContext {
        let mut c = ZranInflateContext::new_zeroed();
        c.in_len = U32::new(in_len as u32);
        c.out_len = U32::new(out_len as u32);
        c.dict_size = U32::new(dict as u32);
        c
    }

    /// A raw deflate stream of `a` then `b` with a sync flush between: `b` starts on a byte
    /// boundary and may refer back into `a` (its window).
    fn two_parts(a: &[u8], b: &[u8]) -> (Vec<u8>, usize) {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(a).unwrap();
        e.flush().unwrap();
        let cut = e.get_ref().len();
        e.write_all(b).unwrap();
        (e.finish().unwrap(), cut)
    }

    #[test]
    fn from_a_byte_aligned_checkpoint_with_a_dictionary() {
        let all = text(300_000);
        let (a, b) = all.split_at(200_000);
        let (stream, cut) = two_parts(a, b);
        let input = &stream[cut..];
        let want = &b[..100_000];
        let dict = &a[a.len() - 32768..];
        let ctx = context(input.len(), want.len(), dict.len());
        let mut out = vec![0u8; want.len()];
        inflate_context(&ctx, dict, input, &mut out).unwrap();
        assert_eq!(out, want);
        // Without the window the back-references have nothing to point at.
        let ctx0 = context(input.len(), want.len(), 0);
        let r = inflate_context(&ctx0, &[], input, &mut out);
        assert!(r.is_err() || out != want);
        // Too little input: an error, not a hang.
        let short = &input[..input.len() / 3];
        let ctx = context(short.len(), b.len(), dict.len());
        let mut out = vec![0u8; b.len()];
        let e = inflate_context(&ctx, dict, short, &mut out).unwrap_err();
        assert!(e.contains("ends"), "{e}");
        // Buffers that disagree with the context.
        assert!(inflate_context(&ctx, dict, short, &mut out[1..]).is_err());
    }

    /// A checkpoint 2 bits into a byte: the stream is an empty fixed-Huffman block (10 bits)
    /// and then a byte-aligned deflate stream, so the second starts at bit 10.
    #[test]
    fn from_a_checkpoint_inside_a_byte() {
        let all = text(120_000);
        let (a, b) = all.split_at(70_000);
        let (stream, cut) = two_parts(a, b);
        // `stream[cut..]` starts on a byte boundary. Prepend, bit-wise, an empty non-final
        // fixed block (BFINAL 0, BTYPE 01, end-of-block code 0000000).
        let rest = &stream[cut..];
        let mut bits: Vec<bool> = vec![false, true, false]; // BFINAL 0, BTYPE 01 (LSB first)
        bits.extend([false; 7]); // code 256
        bits.extend(unpack(rest));
        let packed = pack(&bits);
        // The checkpoint as zlib reports it: two bytes taken, 6 bits of the second unused.
        let mut ctx = context(packed.len() - 2, b.len(), 32768);
        ctx.ctx_byte = packed[1];
        ctx.ctx_bits = 6;
        let dict = &a[a.len() - 32768..];
        let mut out = vec![0u8; b.len()];
        inflate_context(&ctx, dict, &packed[2..], &mut out).unwrap();
        assert_eq!(out, b);
        // The whole packed stream with the window decodes the same (sanity of the packing).
        let mut d = Decompress::new(false);
        d.set_dictionary(dict).unwrap();
        let mut whole = vec![0u8; b.len()];
        let st = d
            .decompress(&packed, &mut whole, FlushDecompress::Finish)
            .unwrap();
        assert!(matches!(st, Status::StreamEnd | Status::Ok));
        assert_eq!(whole, b);
        // A wrong pending-bit count decodes garbage or fails.
        ctx.ctx_bits = 5;
        let r = inflate_context(&ctx, dict, &packed[2..], &mut out);
        assert!(r.is_err() || out != b);
    }

    fn gzip(data: &[u8], name: Option<&str>) -> Vec<u8> {
        let mut b = flate2::GzBuilder::new();
        if let Some(n) = name {
            b = b.filename(n);
        }
        let mut e: GzEncoder<Vec<u8>> = b.write(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn across_gzip_members() {
        let all = text(90_000);
        let (a, b) = all.split_at(50_000);
        let mut file = gzip(a, None);
        let first = file.len();
        file.extend(gzip(b, Some("second")));
        // A context from the first member's deflate start through both members.
        let input = &file[10..];
        let ctx = context(input.len(), all.len(), 0);
        let mut out = vec![0u8; all.len()];
        inflate_context(&ctx, &[], input, &mut out).unwrap();
        assert_eq!(out, all);
        // Stopping short of the second member's data is an error.
        let cut = &file[10..first + 12];
        let ctx = context(cut.len(), all.len(), 0);
        assert!(inflate_context(&ctx, &[], cut, &mut out).is_err());
        // A damaged second header: an error.
        let mut bad = file.clone();
        bad[first + 1] = 0;
        let ctx = context(bad.len() - 10, all.len(), 0);
        let e = inflate_context(&ctx, &[], &bad[10..], &mut out).unwrap_err();
        assert!(e.contains("member"), "{e}");
    }

    /// Pack bits (LSB first) into bytes.
    fn pack(bits: &[bool]) -> Vec<u8> {
        bits.chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |acc, (i, &v)| acc | (u8::from(v) << i))
            })
            .collect()
    }

    fn unpack(bytes: &[u8]) -> impl Iterator<Item = bool> + '_ {
        bytes
            .iter()
            .flat_map(|b| (0..8).map(move |i| b >> i & 1 == 1))
    }

    #[test]
    fn across_gzip_members_from_inside_a_byte() {
        let all = text(60_000);
        let mut layouts = [0; 2];
        for (split, empty) in (25_000..25_012).flat_map(|s| (1..=3).map(move |k| (s, k))) {
            let (a, b) = all.split_at(split);
            // Member one: a deflate stream that starts with `empty` empty fixed blocks, so the
            // data (and the member's end) sit 10, 20 or 30 bits off the byte grid.
            let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
            e.write_all(a).unwrap();
            let raw = e.finish().unwrap();
            let mut bits = Vec::new();
            for _ in 0..empty {
                bits.extend([false, true, false]);
                bits.extend([false; 7]);
            }
            bits.extend(unpack(&raw));
            let packed = pack(&bits);
            let mut crc = flate2::Crc::new();
            crc.update(a);
            // The shift may leave a last byte of padding only: the member's trailer starts
            // there or after it; keep the layout a gzip decoder accepts.
            let member = |deflate: &[u8]| {
                let mut file = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
                file.extend_from_slice(deflate);
                file.extend_from_slice(&crc.sum().to_le_bytes());
                file.extend_from_slice(&(a.len() as u32).to_le_bytes());
                file.extend(gzip(b, Some("two")));
                file
            };
            let valid = |file: &[u8]| {
                let mut d = flate2::read::MultiGzDecoder::new(file);
                let mut back = Vec::new();
                std::io::Read::read_to_end(&mut d, &mut back).is_ok() && back == all
            };
            let files: Vec<(usize, Vec<u8>)> = [&packed[..], &packed[..packed.len() - 1]]
                .into_iter()
                .map(member)
                .enumerate()
                .filter(|(_, f)| valid(f))
                .collect();
            assert_eq!(files.len(), 1, "split {split}");
            let (layout, file) = &files[0];
            layouts[*layout] += 1;
            // The checkpoint after the empty blocks, as zlib reports it: the bytes taken, and
            // the bits of the last one not used.
            let taken = 10 + (10 * empty as usize).div_ceil(8);
            let input = &file[taken..];
            let mut ctx = context(input.len(), all.len(), 0);
            ctx.ctx_byte = file[taken - 1];
            ctx.ctx_bits = (8 * (taken - 10) - 10 * empty as usize) as u8;
            let mut out = vec![0u8; all.len()];
            inflate_context(&ctx, &[], input, &mut out).unwrap();
            assert_eq!(out, all, "split {split}");
        }
        // Both places of the trailer relative to the shifted stream were met.
        assert!(layouts.iter().all(|&n| n > 0), "{layouts:?}");
    }

    /// Put literal `lit` with its fixed-Huffman code.
    fn fixed_literal(w: &mut BitWriter, lit: u8) {
        if lit < 144 {
            w.put_code(0b0011_0000 + u32::from(lit), 8);
        } else {
            w.put_code(0b1_1001_0000 + u32::from(lit - 144), 9);
        }
    }

    /// A stored block of `data` (at most 65535 bytes): header, padding to the byte grid,
    /// LEN, NLEN, the bytes.
    fn stored_block(w: &mut BitWriter, data: &[u8], last: bool) {
        w.put(u32::from(last), 1);
        w.put(0, 2);
        while !w.bits.is_multiple_of(8) {
            w.put(0, 1);
        }
        let len = data.len() as u32;
        w.put(len, 16);
        w.put(!len & 0xFFFF, 16);
        for &b in data {
            w.put(b.into(), 8);
        }
    }

    #[test]
    fn primer_leaves_room_for_the_pending_bits() {
        for bits in 1..=7u8 {
            let (p, whole, literals) = primer(bits, 0x7F >> (7 - bits));
            // The primer's bits end `bits` short of a whole byte: its last byte carries the
            // pending bits at the top.
            assert_eq!(p.len(), whole + 1, "bits {bits}");
            assert_eq!(10 + 9 * literals, 8 * whole + 8 - usize::from(bits));
            assert_eq!(p[whole] >> (8 - bits), 0x7F >> (7 - bits));
        }
    }

    /// Checkpoints at every bit offset, each followed by stored blocks (which pad to the
    /// gzip file's byte grid) and a fixed-Huffman block.
    #[test]
    fn stored_blocks_after_a_checkpoint_at_every_bit() {
        let data1 = text(3000);
        let data2 = text(5000);
        let mut seen = [false; 8];
        for j in 0..24usize {
            let window: Vec<u8> = (0..j)
                .map(|i| if i % 2 == 0 { b'a' } else { 200 })
                .collect();
            let mut w = BitWriter::default();
            w.put(0, 1);
            w.put(1, 2);
            for &b in &window {
                fixed_literal(&mut w, b);
            }
            w.put_code(0, 7);
            let at = w.bits;
            stored_block(&mut w, &data1, false);
            w.put(0, 1);
            w.put(1, 2);
            for &b in b"xyz" {
                fixed_literal(&mut w, b);
            }
            w.put_code(0, 7);
            stored_block(&mut w, &data2, true);
            let want = [&data1[..], b"xyz", &data2[..]].concat();
            // The checkpoint as zlib reports it.
            let taken = at.div_ceil(8);
            let bits = (8 * taken - at) as u8;
            seen[usize::from(bits)] = true;
            let input = &w.bytes[taken..];
            let mut ctx = context(input.len(), want.len(), window.len());
            ctx.ctx_bits = bits;
            ctx.ctx_byte = if bits > 0 { w.bytes[taken - 1] } else { 0 };
            let mut out = vec![0u8; want.len()];
            inflate_context(&ctx, &window, input, &mut out)
                .unwrap_or_else(|e| panic!("{j} literals, {bits} bits: {e}"));
            assert!(out == want, "{j} literals, {bits} bits");
        }
        assert_eq!(seen, [true; 8]);
    }

    proptest::proptest! {
        #[test]
        fn hostile_contexts_never_panic(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..3000),
            dict in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100),
            out_len in 1usize..20_000,
            byte in proptest::prelude::any::<u8>(),
            bits in 0u8..8,
        ) {
            let mut ctx = context(input.len(), out_len, dict.len());
            ctx.ctx_byte = byte;
            ctx.ctx_bits = bits;
            let mut out = vec![0u8; out_len];
            let _ = inflate_context(&ctx, &dict, &input, &mut out);
        }
    }
}
