//! The decoder's floor for `vm_fanotify figures`, run in the test VM as a static binary: the
//! chunks of a Nydus RAFS image's blob decoded by [`BlobSource`] (the call the fill path
//! makes for each 1 MiB chunk: `read_exact_at` of the chunk's uncompressed range, its stored
//! bytes copied out of the source and decoded into the caller's buffer) and nothing else: no
//! events, no backing file, no reader. The stored blob is read into memory first; the
//! decoded-chunk cache is off, so every round decodes every chunk.
//!
//! ```text
//! decode-floor BOOTSTRAP BLOB_DIR ROUNDS
//! ```
//!
//! Prints `chunks=N stored=S decoded=D` and then, for each round, one thread decoding every
//! chunk in order and two threads taking chunks from a shared counter (the best any fill path
//! could do on two CPUs): `t1_ns=A,B,... t2_ns=A,B,...`. Exits 1 with the error if a chunk
//! fails to decode or the decoded sizes do not add up to the chunks' declared sizes.

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

/// Decode the chunks `next()` hands out into `buf`; the bytes decoded.
fn decode(
    source: &BlobSource,
    chunks: &Chunks,
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
        done += len as u64;
    }
}

fn round(source: &BlobSource, chunks: &Chunks, threads: usize) -> Result<(u64, u64), String> {
    let counter = AtomicUsize::new(0);
    let next = || counter.fetch_add(1, Ordering::Relaxed);
    let t0 = Instant::now();
    let done = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| decode(source, chunks, next)))
            .collect();
        workers.into_iter().try_fold(0u64, |acc, w| {
            Ok::<_, String>(acc + w.join().map_err(|_| "decoder panicked")??)
        })
    })?;
    Ok((done, t0.elapsed().as_nanos() as u64))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [boot, dir, rounds] = &args[..] else {
        eprintln!("usage: decode-floor BOOTSTRAP BLOB_DIR ROUNDS");
        return ExitCode::FAILURE;
    };
    let run = || -> Result<String, String> {
        let rounds: usize = rounds.parse().map_err(|e| format!("ROUNDS: {e}"))?;
        let (source, chunks, stored) = setup(boot, dir)?;
        let want: u64 = chunks.iter().map(|c| c.1 as u64).sum();
        let (mut t1, mut t2) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            for (threads, times) in [(1, &mut t1), (2, &mut t2)] {
                let (done, ns) = round(&source, &chunks, threads)?;
                if done != want {
                    return Err(format!(
                        "{threads} threads decoded {done} bytes, not {want}"
                    ));
                }
                times.push(ns.to_string());
            }
        }
        Ok(format!(
            "chunks={} stored={stored} decoded={want} t1_ns={} t2_ns={}",
            chunks.len(),
            t1.join(","),
            t2.join(",")
        ))
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
