//! Whole-chunk decoders of Nydus blobs: lz4 block and zstd frame.

#[cfg(feature = "lz4")]
pub(crate) fn lz4_block(input: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
    match lz4_flex::block::decompress_into(input, out) {
        Ok(n) if n == out.len() => Ok(()),
        Ok(n) => Err(format!("lz4 block decodes to {n} bytes, not {}", out.len())),
        Err(e) => Err(format!("lz4 block: {e}")),
    }
}

#[cfg(not(feature = "lz4"))]
pub(crate) fn lz4_block(_: &[u8], _: &mut [u8]) -> std::result::Result<(), String> {
    Err("lz4_block chunks need the `lz4` feature".into())
}

#[cfg(feature = "zstd")]
pub(crate) fn zstd_frame(input: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
    use std::cell::RefCell;
    use zstd::zstd_safe::{DCtx, ResetDirective, get_error_name};
    thread_local! {
        static DCTX: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
    }
    DCTX.with(|cell| {
        let mut d = cell.borrow_mut();
        let _ = d.reset(ResetDirective::SessionOnly);
        match d.decompress(out, input) {
            Ok(n) if n == out.len() => Ok(()),
            Ok(n) => Err(format!(
                "zstd frame decodes to {n} bytes, not {}",
                out.len()
            )),
            Err(code) => Err(format!("zstd: {}", get_error_name(code))),
        }
    })
}

#[cfg(not(feature = "zstd"))]
pub(crate) fn zstd_frame(_: &[u8], _: &mut [u8]) -> std::result::Result<(), String> {
    Err("zstd chunks need the `zstd` feature".into())
}
