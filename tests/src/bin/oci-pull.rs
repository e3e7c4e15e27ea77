//! The full-pull peer of `benches/container_start.rs`, run in the test VM as a static
//! binary: pull an image the way containerd does without lazy pulling, then let the
//! container start.
//!
//! ```text
//! oci-pull pull REF ROOTFS CONTENT   resolve REF, download every layer into CONTENT (the
//!                                    content store, digest-checked), then gunzip and untar
//!                                    each, bottom first, into ROOTFS
//! oci-pull bootstrap REF OUT         resolve REF (a Nydus image), fetch its bootstrap layer
//!                                    and write the bootstrap (`image/image.boot`) to OUT, as
//!                                    nydus-snapshotter does before it starts nydusd
//! oci-pull now                       print the wall clock in milliseconds (busybox `date`
//!                                    has no sub-second format)
//! ```
//!
//! `OCI_PULL_INSECURE=HOST[:PORT],...` lets these hosts answer plain HTTP (as
//! `erofs-ondemand --insecure-registry`; loopback hosts always may).
//!
//! Layers are `tar+gzip` (or plain `tar`); whiteouts are not applied (the benchmark's image
//! has one layer). Prints `pulled layers=N bytes=B` on success.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use oci_lazy::{Client, Config, LazyLayout, Reference};

/// The client, with the hosts of `OCI_PULL_INSECURE` allowed plain HTTP.
fn client() -> Result<Client, String> {
    let mut config = Config::default();
    if let Ok(hosts) = std::env::var("OCI_PULL_INSECURE") {
        config.insecure_registries = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
    }
    Client::new(config).map_err(|e| e.to_string())
}

/// The bootstrap of the Nydus image `reference`, written to `out`; its size.
fn bootstrap(reference: &str, out: &Path) -> Result<usize, String> {
    let reference: Reference = reference.parse().map_err(|e| format!("{reference}: {e}"))?;
    let client = client()?;
    let image = client.resolve(&reference).map_err(|e| e.to_string())?;
    let Some(LazyLayout::Nydus { bootstrap }) = image.lazy_layout() else {
        return Err(format!("{reference}: not a Nydus image"));
    };
    let boot = client
        .fetch_nydus_bootstrap(reference.repository(), bootstrap)
        .map_err(|e| e.to_string())?;
    std::fs::write(out, &boot).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(boot.len())
}

fn pull(reference: &str, rootfs: &Path, content: &Path) -> Result<(usize, u64), String> {
    let reference: Reference = reference.parse().map_err(|e| format!("{reference}: {e}"))?;
    let client = client()?;
    let image = client.resolve(&reference).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(content).map_err(|e| format!("{}: {e}", content.display()))?;
    std::fs::create_dir_all(rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    let mut total = 0;
    // Download every layer first (containerd fetches into its content store, then unpacks).
    let mut files = Vec::new();
    for layer in &image.layers {
        let path = content.join(layer.digest.to_string().replace(':', "-"));
        let tmp = path.with_extension("partial");
        let mut out =
            BufWriter::new(File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?);
        let n = client
            .copy_blob(reference.repository(), &layer.digest, &mut out)
            .map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
        total += n;
        files.push((path, layer.media_type.clone()));
    }
    for (path, media_type) in &files {
        let f = BufReader::new(File::open(path).map_err(|e| e.to_string())?);
        let reader: Box<dyn Read> =
            if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
                Box::new(flate2::read::GzDecoder::new(f))
            } else if media_type.ends_with(".tar") || media_type.ends_with("tar") {
                Box::new(f)
            } else {
                return Err(format!(
                    "layer {}: media type {media_type} is not a tar",
                    path.display()
                ));
            };
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_overwrite(true);
        archive
            .unpack(rootfs)
            .map_err(|e| format!("unpacking {}: {e}", path.display()))?;
    }
    Ok((files.len(), total))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["now"] => {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            println!("{ms}");
            ExitCode::SUCCESS
        }
        ["pull", reference, rootfs, content] => {
            match pull(reference, Path::new(rootfs), Path::new(content)) {
                Ok((layers, bytes)) => {
                    println!("pulled layers={layers} bytes={bytes}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("oci-pull: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        ["bootstrap", reference, out] => match bootstrap(reference, Path::new(out)) {
            Ok(n) => {
                println!("bootstrap bytes={n}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("oci-pull: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: oci-pull pull REF ROOTFS CONTENT | oci-pull bootstrap REF OUT | oci-pull now"
            );
            ExitCode::from(2)
        }
    }
}
