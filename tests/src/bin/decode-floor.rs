//! The decoder's floor for `vm_fanotify figures`, run in the test VM as a static binary: the
//! chunks of a Nydus RAFS image's blob decoded by [`BlobSource`] (the call the fill path
//! makes for each 1 MiB chunk: `read_exact_at` of the chunk's uncompressed range, its stored
//! bytes copied out of the source and decoded into the caller's buffer) and nothing else: no
//! events, no backing file, no reader. The stored blob is read into memory first; the
//! decoded-chunk cache is off, so every round decodes every chunk.
//!
//! ```text
//! decode-floor BOOTSTRAP BLOB_DIR ROUNDS [OUT]
//! ```
//!
//! Prints `chunks=N stored=S decoded=D` and then, for each round, one thread decoding every
//! chunk in order and two threads taking chunks from a shared counter (the best any fill path
//! could do on two CPUs): `t1_ns=A,B,... t2_ns=A,B,...`. With `OUT`, each round also decodes
//! on one and on two threads and writes every chunk at its offset of the file `OUT` (created
//! sparse, buffered writes, no sync: what a fill writes into a backing file), `w1_ns=...
//! w2_ns=...`. Exits 1 with the error if a chunk fails to decode or a write fails, or the
//! decoded sizes do not add up to the chunks' declared sizes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use erofs_reader::nydus::{BlobSource, RafsMeta};
use erofs_reader::{Image, Source};

/// The uncompressed ranges of the blob's chunks, in blob order.
type Chunks = Vec<(u64, usize)>;

fn setup(boot: &str, dir: &str) -> Result<(BlobSource, Chunks, u64), String> {
    let image = Image::open(boot).map_err(|e| format!("{boot}: {e}"))?;
    let meta = RafsMeta::from_image(&image)
        .map_err(|e| format!("{boot}: {e}"))?
        .ok_or_else(|| format!("{boot}: not a RAFS bootstrap"))?;
    let info = meta
        .blobs()
        .first()
        .ok_or_else(|| format!("{boot}: no blob"))?;
    let path = std::path::Path::new(dir).join(&info.id);
    let stored: Arc<[u8]> = std::fs::read(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .into();
    let size = stored.len() as u64;
    let source = BlobSource::new(stored, &info.record).with_cache_capacity(0);
    let chunks = source
        .chunk_infos()
        .map_err(|e| format!("chunk map: {e}"))?
        .iter()
        .map(|c| (c.uncompressed_offset, c.uncompressed_size as usize))
        .collect();
    Ok((source, chunks, size))
}

/// Decode the chunks `next()` hands out into `buf` (and write each to `out` at its offset);
/// the bytes decoded.
fn decode(
    source: &BlobSource,
    chunks: &Chunks,
    out: Option<&File>,
    mut next: impl FnMut() -> usize,
) -> Result<u64, String> {
    let mut buf = vec![0u8; chunks.iter().map(|c| c.1).max().unwrap_or(0)];
    let mut done = 0u64;
    loop {
        let Some(&(off, len)) = chunks.get(next()) else {
            return Ok(done);
        };
        source
            .read_exact_at(&mut buf[..len], off)
            .map_err(|e| format!("chunk at {off}: {e}"))?;
        if let Some(out) = out {
            out.write_all_at(&buf[..len], off)
                .map_err(|e| format!("writing the chunk at {off}: {e}"))?;
        }
        done += len as u64;
    }
}

fn round(
    source: &BlobSource,
    chunks: &Chunks,
    threads: usize,
    out: Option<&str>,
) -> Result<(u64, u64), String> {
    let counter = AtomicUsize::new(0);
    let next = || counter.fetch_add(1, Ordering::Relaxed);
    // A new sparse file each pass, as a cold backing file (not timed).
    let out = match out {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            Some(File::create(path).map_err(|e| format!("{path}: {e}"))?)
        }
        None => None,
    };
    let t0 = Instant::now();
    let done = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| decode(source, chunks, out.as_ref(), next)))
            .collect();
        workers.into_iter().try_fold(0u64, |acc, w| {
            Ok::<_, String>(acc + w.join().map_err(|_| "decoder panicked")??)
        })
    })?;
    Ok((done, t0.elapsed().as_nanos() as u64))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (boot, dir, rounds, out) = match &args[..] {
        [boot, dir, rounds] => (boot, dir, rounds, None),
        [boot, dir, rounds, out] => (boot, dir, rounds, Some(out.as_str())),
        _ => {
            eprintln!("usage: decode-floor BOOTSTRAP BLOB_DIR ROUNDS [OUT]");
            return ExitCode::FAILURE;
        }
    };
    let run = || -> Result<String, String> {
        let rounds: usize = rounds.parse().map_err(|e| format!("ROUNDS: {e}"))?;
        let (source, chunks, stored) = setup(boot, dir)?;
        let want: u64 = chunks.iter().map(|c| c.1 as u64).sum();
        let (mut t1, mut t2, mut w1, mut w2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let mut passes = vec![(1, None, &mut t1), (2, None, &mut t2)];
            if out.is_some() {
                passes.push((1, out, &mut w1));
                passes.push((2, out, &mut w2));
            }
            for (threads, out, times) in passes {
                let (done, ns) = round(&source, &chunks, threads, out)?;
                if done != want {
                    return Err(format!(
                        "{threads} threads decoded {done} bytes, not {want}"
                    ));
                }
                times.push(ns.to_string());
            }
        }
        let mut line = format!(
            "chunks={} stored={stored} decoded={want} t1_ns={} t2_ns={}",
            chunks.len(),
            t1.join(","),
            t2.join(",")
        );
        if out.is_some() {
            line.push_str(&format!(" w1_ns={} w2_ns={}", w1.join(","), w2.join(",")));
        }
        Ok(line)
    };
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("decode-floor: {e}");
            ExitCode::FAILURE
        }
    }
}
