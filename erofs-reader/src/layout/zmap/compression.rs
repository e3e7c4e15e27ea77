//! Per-image state for compressed files, from the superblock.

use crate::decode::pcluster_cache::ZCache;
use crate::error::{Context, CorruptKind, Error, Result};
use erofs_format::compress::{AlgorithmSet, CompressionConfigs, PCLUSTER_MAX_DSIZE};
use erofs_format::superblock::{FeatureIncompat, SuperBlock};
use std::sync::atomic::AtomicU64;

/// Per-image state for compressed files: the algorithms and their parameters from the
/// superblock, the limits, and the cache of decoded pclusters.
pub(crate) struct Compression {
    pub(crate) configs: CompressionConfigs,
    /// `LZ4_0PADDING`: LZ4 pclusters are padded with leading zeros.
    pub(crate) zero_padding: bool,
    pub(crate) max_extent: AtomicU64,
    pub(crate) cache: ZCache,
}

impl Compression {
    /// Parse the compression configuration records that follow the superblock (`head`
    /// is the primary device from offset 0, at least up to the records), as the kernel
    /// does at mount (`z_erofs_parse_cfgs`).
    pub(crate) fn new(sb: &SuperBlock, head: &[u8]) -> Result<Self> {
        let configs = match sb.available_compr_algs() {
            Some(algs) => {
                #[allow(
                    clippy::arithmetic_side_effects,
                    reason = "the superblock offset 1024 plus sb_size() <= 128 + 16 * 255"
                )]
                let start = 1024 + sb.sb_size();
                CompressionConfigs::parse(head, start, algs, sb.blkszbits).map_err(|e| {
                    Error::corrupt_as(
                        CorruptKind::Superblock,
                        format!("compression configuration: {e}"),
                        Context::offset(start as u64),
                    )
                })?
            }
            None => CompressionConfigs::legacy(sb.lz4_max_distance().unwrap_or(0)),
        };
        Ok(Compression {
            configs,
            zero_padding: sb.incompat().contains(FeatureIncompat::ZERO_PADDING),
            max_extent: AtomicU64::new(u64::from(PCLUSTER_MAX_DSIZE)),
            cache: ZCache::new(crate::decode::pcluster_cache::DEFAULT_CAPACITY),
        })
    }

    /// The algorithms the superblock declares.
    pub(crate) fn available(&self) -> AlgorithmSet {
        self.configs.available
    }
}
