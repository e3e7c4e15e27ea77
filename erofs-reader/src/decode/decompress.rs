//! Decoding one pcluster: the kernel's `fs/erofs/decompressor*.c` rules on top of
//! well-kept codec crates.
//!
//! | algorithm | crate | feature |
//! | --- | --- | --- |
//! | LZ4 (lz4 and lz4hc images) | `lz4_flex` (Rust; its pointer decoder, bounds-checked), plus a small partial decoder here | `lz4` |
//! | MicroLZMA | `liblzma` (liblzma, C), as a raw LZMA1 stream | `lzma` |
//! | DEFLATE (raw) | `flate2` on `zlib-rs` (Rust); whole extents with `libdeflater` (C) | `deflate`; `libdeflate` |
//! | Zstandard | `zstd` (libzstd, C) | `zstd` |
//!
//! Rules shared by all algorithms, as in the kernel:
//!
//! * compressed data sits at the *end* of its pcluster: leading zero bytes are padding and
//!   are skipped (`z_erofs_fixup_insize`; for LZ4 only with the `LZ4_0PADDING` feature, and
//!   a pcluster of zeros only is corrupt);
//! * an extent is decoded into a buffer of exactly its length: *exact* decoding (the
//!   common case) fails unless the data decodes to exactly that many bytes, *partial*
//!   decoding (a dedupe partial reference, or LZ4 without zero padding, whose input runs to
//!   the pcluster end) stops once the buffer is full but still fails if the data ends
//!   before it;
//! * uncompressed pclusters are copied: *shifted* from the first byte, *interlaced*
//!   rotated by the extent's offset within its block (`z_erofs_transform_plain`).
//!
//! The kernel's in-place decompression (decoding over the pages that hold the compressed
//! data when the LZ4 margin allows it) is a memory optimisation with the same output; here
//! input and output are always separate buffers.
//!
//! MicroLZMA (xz's format for EROFS) is an LZMA1 stream whose first byte, always 0 in
//! LZMA, holds the bitwise-negated properties byte (`lc`, `lp`, `pb`); it has no header,
//! no size and no end marker. It is decoded by giving liblzma's raw LZMA1 decoder those
//! properties and the stream with its first byte put back to 0, and stopping when the
//! extent's length is out.

use crate::decode::Encoding;
use crate::error::{Context, CorruptKind, Error, Result};

/// Everything besides the bytes that decides how a pcluster decodes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    pub(crate) encoding: Encoding,
    /// Stop when the output is full instead of requiring the data to end there.
    #[cfg_attr(
        not(any(feature = "lz4", feature = "deflate", feature = "zstd")),
        allow(dead_code)
    )]
    pub(crate) partial: bool,
    /// The extent's file offset modulo the block size (interlaced pclusters).
    pub(crate) block_offset: usize,
    pub(crate) block_size: usize,
    /// `LZ4_0PADDING`.
    pub(crate) lz4_zero_padding: bool,
    pub(crate) ctx: Context,
}

fn corrupt(req: &Request, what: impl std::fmt::Display) -> Error {
    let name = match req.encoding {
        Encoding::Shifted => "uncompressed (shifted)".to_string(),
        Encoding::Interlaced => "uncompressed (interlaced)".to_string(),
        Encoding::Compressed(a) => a.name().to_string(),
    };
    Error::corrupt_as(
        CorruptKind::Decompress,
        format!("{name} pcluster: {what}"),
        req.ctx,
    )
}

/// Decode pcluster bytes `input` into `out` (the whole extent, `out.len()` bytes).
pub(crate) fn decode(req: &Request, input: &[u8], out: &mut [u8]) -> Result<()> {
    match req.encoding {
        Encoding::Shifted => {
            let src = input
                .get(..out.len())
                .ok_or_else(|| corrupt(req, "shorter than its extent"))?;
            out.copy_from_slice(src);
            Ok(())
        }
        Encoding::Interlaced => {
            // The first `block_size - block_offset` bytes of the extent are at the end
            // of the pcluster, the rest from its start.
            let n = out.len();
            if n > input.len() {
                return Err(corrupt(req, "shorter than its extent"));
            }
            let head = req
                .block_offset
                .checked_rem(req.block_size)
                .and_then(|r| req.block_size.checked_sub(r))
                .ok_or_else(|| corrupt(req, "block offset past the block"))?
                .min(n);
            // head <= n <= input.len() (checked above).
            let from = input.len().saturating_sub(head);
            let (first, rest) = out.split_at_mut(head);
            first.copy_from_slice(&input[from..]);
            rest.copy_from_slice(&input[..rest.len()]);
            Ok(())
        }
        Encoding::Compressed(alg) => {
            let skip_padding = match alg {
                erofs_format::compress::Algorithm::Lz4 => req.lz4_zero_padding,
                _ => true,
            };
            let input = if skip_padding {
                let start = input
                    .iter()
                    .position(|&b| b != 0)
                    .ok_or_else(|| corrupt(req, "only zero padding"))?;
                &input[start..]
            } else {
                input
            };
            match alg {
                erofs_format::compress::Algorithm::Lz4 => lz4(req, input, out),
                erofs_format::compress::Algorithm::Lzma => lzma(req, input, out),
                erofs_format::compress::Algorithm::Deflate => deflate(req, input, out),
                erofs_format::compress::Algorithm::Zstd => zstd(req, input, out),
            }
        }
    }
}

#[allow(dead_code)]
fn disabled(alg: &str, feature: &str) -> Error {
    Error::unsupported(format!(
        "{alg} decompression (erofs-reader built without the `{feature}` feature)"
    ))
}

#[cfg(feature = "lz4")]
fn lz4(req: &Request, input: &[u8], out: &mut [u8]) -> Result<()> {
    // Without zero padding the stream is followed by junk up to the pcluster end, so
    // only partial decoding can find where it stops.
    if req.partial || !req.lz4_zero_padding {
        return lz4_partial(input, out).map_err(|e| corrupt(req, e));
    }
    match lz4_flex::block::decompress_into(input, out) {
        Ok(n) if n == out.len() => Ok(()),
        Ok(n) => Err(corrupt(
            req,
            format!("decodes to {n} bytes, the extent has {}", out.len()),
        )),
        Err(e) => Err(corrupt(req, e)),
    }
}

#[cfg(not(feature = "lz4"))]
fn lz4(_: &Request, _: &[u8], _: &mut [u8]) -> Result<()> {
    Err(disabled("lz4", "lz4"))
}

/// LZ4 block decoding that stops as soon as `out` is full (`LZ4_decompress_safe_partial`).
/// Fails if the input ends first or refers before the output start.
#[cfg_attr(not(feature = "lz4"), allow(dead_code))]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "output indices only: o < n by the loop condition, o + take and o + mlen <= n by \
              their min(n - o), start = o - offset after offset <= o, k < mlen; every input \
              position and length read from the input uses checked_add"
)]
pub(crate) fn lz4_partial(src: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
    let n = out.len();
    let (mut i, mut o) = (0usize, 0usize);
    let truncated = || "input ends inside a sequence".to_string();
    let read_len = |i: &mut usize, mut len: usize| -> std::result::Result<usize, String> {
        loop {
            let b = *src.get(*i).ok_or_else(truncated)?;
            *i = i.checked_add(1).ok_or_else(truncated)?;
            len = len.checked_add(usize::from(b)).ok_or_else(truncated)?;
            if b != 255 {
                return Ok(len);
            }
        }
    };
    while o < n {
        let token = *src
            .get(i)
            .ok_or_else(|| format!("input ends after {o} of {n} bytes"))?;
        i = i.checked_add(1).ok_or_else(truncated)?;
        let mut lit = usize::from(token >> 4);
        if lit == 15 {
            lit = read_len(&mut i, lit)?;
        }
        let take = lit.min(n - o);
        let lits = i
            .checked_add(take)
            .and_then(|end| src.get(i..end))
            .ok_or_else(truncated)?;
        out[o..o + take].copy_from_slice(lits);
        o += take;
        if o == n {
            return Ok(());
        }
        i = i.checked_add(lit).ok_or_else(truncated)?;
        if i >= src.len() {
            return Err(format!("input ends after {o} of {n} bytes"));
        }
        let off_end = i.checked_add(2).ok_or_else(truncated)?;
        let off = src.get(i..off_end).ok_or_else(truncated)?;
        let offset = usize::from(u16::from_le_bytes([off[0], off[1]]));
        i = off_end;
        if offset == 0 || offset > o {
            return Err(format!("match offset {offset} before the output start"));
        }
        let mut mlen = usize::from(token & 15);
        if mlen == 15 {
            mlen = read_len(&mut i, mlen)?;
        }
        let mlen = mlen.checked_add(4).ok_or_else(truncated)?.min(n - o);
        let start = o - offset;
        if offset >= mlen {
            out.copy_within(start..start + mlen, o);
        } else {
            for k in 0..mlen {
                out[o + k] = out[start + k];
            }
        }
        o += mlen;
    }
    Ok(())
}

#[cfg(feature = "lzma")]
fn lzma(req: &Request, input: &[u8], out: &mut [u8]) -> Result<()> {
    use liblzma::stream::{Action, Filters, LzmaOptions, Status, Stream};
    let props = !input[0]; // non-empty: padding skipped up to a non-zero byte
    if props >= 9 * 5 * 5 {
        return Err(corrupt(req, format!("bad properties byte {:#x}", input[0])));
    }
    let (lc, lp, pb) = (props % 9, (props / 9) % 5, props / 45);
    // lc < 9 and lp < 5: the sum cannot saturate.
    if lc.saturating_add(lp) > 4 {
        return Err(corrupt(req, format!("lc {lc} + lp {lp} over 4")));
    }
    let mut opts = LzmaOptions::new();
    // No match reaches before the extent's start, so the extent's length is dictionary
    // enough; this keeps memory proportional to the output.
    let dict = u32::try_from(out.len())
        .unwrap_or(u32::MAX)
        .clamp(4096, erofs_format::compress::LZMA_MAX_DICT_SIZE);
    opts.dict_size(dict)
        .literal_context_bits(u32::from(lc))
        .literal_position_bits(u32::from(lp))
        .position_bits(u32::from(pb));
    let mut filters = Filters::new();
    filters.lzma1(&opts);
    let mut s = Stream::new_raw_decoder(&filters).map_err(|e| corrupt(req, e))?;
    let mut done = 0usize;
    let mut st = s
        .process(&[0], &mut out[..0], Action::Run)
        .map_err(|e| corrupt(req, e))?;
    let mut used = 1usize;
    while done < out.len() && st != Status::StreamEnd {
        let (in0, out0) = (s.total_in(), s.total_out());
        st = s
            .process(&input[used..], &mut out[done..], Action::Run)
            .map_err(|e| corrupt(req, e))?;
        let (di, dout) = (advanced(in0, s.total_in()), advanced(out0, s.total_out()));
        // At most the slices handed to the decoder: no saturation.
        used = used.saturating_add(di);
        done = done.saturating_add(dout);
        if di == 0 && dout == 0 {
            break;
        }
    }
    if done != out.len() {
        return Err(corrupt(
            req,
            format!("decodes to {done} bytes, the extent has {}", out.len()),
        ));
    }
    Ok(())
}

#[cfg(not(feature = "lzma"))]
fn lzma(_: &Request, _: &[u8], _: &mut [u8]) -> Result<()> {
    Err(disabled("lzma", "lzma"))
}

#[cfg(all(feature = "deflate", not(feature = "libdeflate")))]
fn deflate(req: &Request, input: &[u8], out: &mut [u8]) -> Result<()> {
    deflate_stream(req, input, out)
}

#[cfg(feature = "libdeflate")]
fn deflate(req: &Request, input: &[u8], out: &mut [u8]) -> Result<()> {
    use libdeflater::{DecompressionError, Decompressor};
    use std::cell::RefCell;
    thread_local! {
        static LIBDEFLATE: RefCell<Decompressor> = RefCell::new(Decompressor::new());
    }
    if !req.partial {
        // libdeflate decodes a whole stream into a buffer of known size, about twice as
        // fast as zlib; it needs the final block, which mkfs.erofs writes. Anything it
        // refuses goes through the streaming decoder, which gives the precise answer.
        let r = LIBDEFLATE.with(|d| d.borrow_mut().deflate_decompress(input, out));
        match r {
            Ok(n) if n == out.len() => return Ok(()),
            Ok(n) => {
                return Err(corrupt(
                    req,
                    format!("decodes to {n} bytes, the extent has {}", out.len()),
                ));
            }
            Err(DecompressionError::InsufficientSpace) => {
                return Err(corrupt(
                    req,
                    format!("decodes to more than the extent's {} bytes", out.len()),
                ));
            }
            Err(DecompressionError::BadData) => {}
        }
    }
    deflate_stream(req, input, out)
}

#[cfg(feature = "deflate")]
fn deflate_stream(req: &Request, input: &[u8], out: &mut [u8]) -> Result<()> {
    use flate2::{Decompress, FlushDecompress, Status};
    use std::cell::RefCell;
    thread_local! {
        static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
    }
    INFLATE.with(|cell| {
        let mut d = cell.borrow_mut();
        d.reset(false);
        let mut done = 0usize;
        let mut used = 0usize;
        let mut ended = false;
        while done < out.len() {
            let (in0, out0) = (d.total_in(), d.total_out());
            let st = d
                .decompress(&input[used..], &mut out[done..], FlushDecompress::Sync)
                .map_err(|e| corrupt(req, e))?;
            let (di, dout) = (advanced(in0, d.total_in()), advanced(out0, d.total_out()));
            // At most the slices handed to the decoder: no saturation.
            used = used.saturating_add(di);
            done = done.saturating_add(dout);
            if st == Status::StreamEnd {
                ended = true;
                break;
            }
            if di == 0 && dout == 0 {
                break;
            }
        }
        if done != out.len() {
            return Err(corrupt(
                req,
                format!("decodes to {done} bytes, the extent has {}", out.len()),
            ));
        }
        if !req.partial && !ended {
            // Exact decoding: nothing may follow the extent's last byte.
            let mut probe = [0u8; 1];
            let in0 = d.total_out();
            let _ = d.decompress(&input[used..], &mut probe, FlushDecompress::Sync);
            if d.total_out() != in0 {
                return Err(corrupt(
                    req,
                    format!("decodes to more than the extent's {} bytes", out.len()),
                ));
            }
        }
        Ok(())
    })
}

#[cfg(not(feature = "deflate"))]
fn deflate(_: &Request, _: &[u8], _: &mut [u8]) -> Result<()> {
    Err(disabled("deflate", "deflate"))
}

#[cfg(feature = "zstd")]
fn zstd(req: &Request, input: &[u8], out: &mut [u8]) -> Result<()> {
    use std::cell::RefCell;
    use zstd::zstd_safe::{DCtx, InBuffer, OutBuffer, ResetDirective, get_error_name};
    thread_local! {
        static DCTX: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
    }
    DCTX.with(|cell| {
        let mut d = cell.borrow_mut();
        let _ = d.reset(ResetDirective::SessionOnly);
        if !req.partial {
            return match d.decompress(out, input) {
                Ok(n) if n == out.len() => Ok(()),
                Ok(n) => Err(corrupt(
                    req,
                    format!("decodes to {n} bytes, the extent has {}", out.len()),
                )),
                Err(code) => Err(corrupt(req, get_error_name(code))),
            };
        }
        let mut ob = OutBuffer::around(out);
        let mut ib = InBuffer::around(input);
        loop {
            let (p0, o0) = (ib.pos(), ob.pos());
            let r = d
                .decompress_stream(&mut ob, &mut ib)
                .map_err(|code| corrupt(req, get_error_name(code)))?;
            if ob.pos() == ob.capacity() || r == 0 || (ib.pos() == p0 && ob.pos() == o0) {
                break;
            }
        }
        let done = ob.pos();
        let want = ob.capacity();
        if done != want {
            return Err(corrupt(
                req,
                format!("decodes to {done} bytes, the extent has {want}"),
            ));
        }
        Ok(())
    })
}

#[cfg(not(feature = "zstd"))]
fn zstd(_: &Request, _: &[u8], _: &mut [u8]) -> Result<()> {
    Err(disabled("zstd", "zstd"))
}

/// Bytes a streaming decoder consumed or produced in one call, from its running counters
/// (which only grow, by at most the slice handed to it).
#[cfg_attr(not(any(feature = "lzma", feature = "deflate")), allow(dead_code))]
fn advanced(before: u64, after: u64) -> usize {
    usize::try_from(after.saturating_sub(before)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(encoding: Encoding, partial: bool) -> Request {
        Request {
            encoding,
            partial,
            block_offset: 0,
            block_size: 4096,
            lz4_zero_padding: true,
            ctx: Context::NONE,
        }
    }

    #[test]
    fn lz4_partial_literals_and_overlapping_match() {
        // "abc" literals, then a match of length 9 at offset 3 (overlapping copy).
        let src = [0x35, b'a', b'b', b'c', 3, 0];
        let mut out = [0u8; 12];
        lz4_partial(&src, &mut out).unwrap();
        assert_eq!(&out, b"abcabcabcabc");
        // Stopping early is fine...
        let mut short = [0u8; 5];
        lz4_partial(&src, &mut short).unwrap();
        assert_eq!(&short, b"abcab");
        // ...running out of input is not.
        let mut long = [0u8; 13];
        assert!(lz4_partial(&src, &mut long).is_err());
        // A match before the start of the output is refused.
        let bad = [0x15, b'a', 2, 0];
        assert!(lz4_partial(&bad, &mut [0u8; 8]).is_err());
    }

    #[test]
    fn interlaced_rotation() {
        let input: Vec<u8> = (0..16u8).collect();
        let mut r = req(Encoding::Interlaced, false);
        r.block_size = 16;
        r.block_offset = 4;
        let mut out = [0u8; 16];
        decode(&r, &input, &mut out).unwrap();
        // The first 12 bytes come from the pcluster's end, the last 4 from its start.
        assert_eq!(&out[..12], &input[4..]);
        assert_eq!(&out[12..], &input[..4]);
    }

    #[test]
    fn shifted_needs_enough_input() {
        let r = req(Encoding::Shifted, false);
        assert!(decode(&r, &[1, 2, 3], &mut [0u8; 4]).is_err());
        let mut out = [0u8; 2];
        decode(&r, &[1, 2, 3], &mut out).unwrap();
        assert_eq!(out, [1, 2]);
    }

    use erofs_format::compress::Algorithm as A;
    use proptest::prelude::*;

    proptest! {
        /// Garbage never panics, whatever the algorithm, length or mode; and what
        /// succeeds filled exactly the output.
        #[test]
        fn garbage_never_panics(
            input in proptest::collection::vec(any::<u8>(), 0..600),
            out_len in 0usize..5000,
            alg in 0u8..6,
            partial in any::<bool>(),
            zero_padding in any::<bool>(),
            block_offset in 0usize..4096,
        ) {
            let encoding = match alg {
                0 => Encoding::Shifted,
                1 => Encoding::Interlaced,
                n => Encoding::Compressed(A::from_id(n - 2).unwrap()),
            };
            let r = Request {
                encoding,
                partial,
                block_offset,
                block_size: 4096,
                lz4_zero_padding: zero_padding,
                ctx: Context::NONE,
            };
            let mut out = vec![0u8; out_len];
            let _ = decode(&r, &input, &mut out);
        }

        /// The partial LZ4 decoder agrees with lz4_flex on every prefix of valid data.
        #[cfg(feature = "lz4")]
        #[test]
        fn lz4_partial_matches_lz4_flex(
            data in proptest::collection::vec(0u8..4, 0..3000),
            cut in 0usize..3000,
        ) {
            let c = lz4_flex::block::compress(&data);
            let n = cut.min(data.len());
            let mut out = vec![0u8; n];
            lz4_partial(&c, &mut out).unwrap();
            prop_assert_eq!(&out[..], &data[..n]);
        }
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn lz4_wrong_length_is_corrupt() {
        let data = b"hello hello hello hello hello hello".repeat(20);
        let c = lz4_flex::block::compress(&data);
        let mut padded = vec![0u8; 7];
        padded.extend_from_slice(&c);
        let r = req(
            Encoding::Compressed(erofs_format::compress::Algorithm::Lz4),
            false,
        );
        let mut out = vec![0u8; data.len()];
        decode(&r, &padded, &mut out).unwrap();
        assert_eq!(out, data);
        let mut short = vec![0u8; data.len() - 1];
        assert!(decode(&r, &padded, &mut short).unwrap_err().is_corrupt());
        let mut long = vec![0u8; data.len() + 1];
        assert!(decode(&r, &padded, &mut long).unwrap_err().is_corrupt());
        // Partial decoding accepts a prefix.
        let r = req(
            Encoding::Compressed(erofs_format::compress::Algorithm::Lz4),
            true,
        );
        decode(&r, &padded, &mut short).unwrap();
        assert_eq!(short, data[..data.len() - 1]);
        // All padding is corrupt.
        assert!(decode(&r, &[0u8; 64], &mut short).unwrap_err().is_corrupt());
    }
}
