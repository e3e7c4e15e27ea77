//! Per-algorithm configuration records, as the kernel validates them at mount.

use super::algorithm::{Algorithm, AlgorithmSet};
use super::limits::{
    DEFLATE_MAX_WINDOW_BITS, LZMA_MAX_DICT_SIZE, LZMA_MIN_DICT_SIZE, PCLUSTER_MAX_SIZE,
    ZSTD_MAX_WINDOW_LOG,
};
use super::records::MetadataRecords;
use crate::error::Error;
use core::mem::{offset_of, size_of};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The LZ4 configuration record.
#[doc(alias = "z_erofs_lz4_cfgs")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Lz4Config {
    /// LZ4 match distance limit (0 = 64 KiB).
    pub max_distance: U16,
    /// Largest pcluster in blocks (0 is treated as 1).
    pub max_pclusterblks: U16,
    /// Reserved.
    pub reserved: [u8; 10],
}

const _: () = assert!(size_of::<Lz4Config>() == 14);
const _: () = assert!(offset_of!(Lz4Config, max_pclusterblks) == 2);

/// The MicroLZMA configuration record.
#[doc(alias = "z_erofs_lzma_cfgs")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct LzmaConfig {
    /// Dictionary size in bytes (4 KiB to 8 MiB).
    pub dict_size: U32,
    /// Format, must be 0.
    pub format: U16,
    /// Reserved.
    pub reserved: [u8; 8],
}

const _: () = assert!(size_of::<LzmaConfig>() == 14);
const _: () = assert!(offset_of!(LzmaConfig, format) == 4);

/// The DEFLATE configuration record.
#[doc(alias = "z_erofs_deflate_cfgs")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DeflateConfig {
    /// `log2` of the window, 8..=15.
    pub windowbits: u8,
    /// Reserved.
    pub reserved: [u8; 5],
}

const _: () = assert!(size_of::<DeflateConfig>() == 6);

/// The Zstandard configuration record.
#[doc(alias = "z_erofs_zstd_cfgs")]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ZstdConfig {
    /// Format, must be 0.
    pub format: u8,
    /// `windowLog - 10`.
    pub windowlog: u8,
    /// Reserved.
    pub reserved: [u8; 4],
}

const _: () = assert!(size_of::<ZstdConfig>() == 6);
const _: () = assert!(offset_of!(ZstdConfig, windowlog) == 1);

fn bad_config(algorithm: Algorithm, what: &'static str, value: u32) -> Error {
    Error::BadCompressionConfig {
        algorithm: algorithm.id(),
        what,
        value,
    }
}

fn read_config<T: FromBytes + KnownLayout + Immutable>(
    algorithm: Algorithm,
    body: &[u8],
) -> Result<T, Error> {
    T::read_from_prefix(body).map(|(t, _)| t).map_err(|_| {
        bad_config(
            algorithm,
            "record shorter than the struct",
            u32::try_from(body.len()).unwrap_or(u32::MAX),
        )
    })
}

impl Lz4Config {
    /// Parse and validate a record body (`z_erofs_load_lz4_config`): at least 14 bytes and
    /// `max_pclusterblks <= 1 MiB >> blkszbits`.
    ///
    /// # Errors
    ///
    /// [`Error::BadCompressionConfig`].
    pub fn parse(body: &[u8], blkszbits: u8) -> Result<Self, Error> {
        let c: Self = read_config(Algorithm::Lz4, body)?;
        let max = PCLUSTER_MAX_SIZE >> blkszbits.min(20);
        if u32::from(c.max_pclusterblks.get()) > max {
            return Err(bad_config(
                Algorithm::Lz4,
                "max_pclusterblks over 1 MiB",
                c.max_pclusterblks.get().into(),
            ));
        }
        Ok(c)
    }

    /// The effective largest pcluster in blocks (0 on disk means 1).
    pub fn max_pcluster_blocks(&self) -> u16 {
        self.max_pclusterblks.get().max(1)
    }
}

impl LzmaConfig {
    /// Parse and validate a record body (`z_erofs_load_lzma_config`): at least 14 bytes,
    /// `format == 0`, `4 KiB <= dict_size <= 8 MiB`.
    ///
    /// # Errors
    ///
    /// [`Error::BadCompressionConfig`].
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let c: Self = read_config(Algorithm::Lzma, body)?;
        if c.format.get() != 0 {
            return Err(bad_config(
                Algorithm::Lzma,
                "unknown format",
                c.format.get().into(),
            ));
        }
        let d = c.dict_size.get();
        if !(LZMA_MIN_DICT_SIZE..=LZMA_MAX_DICT_SIZE).contains(&d) {
            return Err(bad_config(Algorithm::Lzma, "dict_size out of range", d));
        }
        Ok(c)
    }
}

impl DeflateConfig {
    /// Parse and validate a record body (`z_erofs_load_deflate_config`): at least 6 bytes
    /// and `windowbits <= 15`.
    ///
    /// # Errors
    ///
    /// [`Error::BadCompressionConfig`].
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let c: Self = read_config(Algorithm::Deflate, body)?;
        if c.windowbits > DEFLATE_MAX_WINDOW_BITS {
            return Err(bad_config(
                Algorithm::Deflate,
                "windowbits over 15",
                c.windowbits.into(),
            ));
        }
        Ok(c)
    }
}

impl ZstdConfig {
    /// Parse and validate a record body (`z_erofs_load_zstd_config`): at least 6 bytes,
    /// `format == 0`, `windowlog <= 10` (a window of at most 1 MiB).
    ///
    /// # Errors
    ///
    /// [`Error::BadCompressionConfig`].
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let c: Self = read_config(Algorithm::Zstd, body)?;
        if c.format != 0 {
            return Err(bad_config(
                Algorithm::Zstd,
                "unknown format",
                c.format.into(),
            ));
        }
        if c.windowlog > ZSTD_MAX_WINDOW_LOG {
            return Err(bad_config(
                Algorithm::Zstd,
                "windowlog over 1 MiB",
                c.windowlog.into(),
            ));
        }
        Ok(c)
    }

    /// The window size in bytes: `1 << (windowlog + 10)`.
    pub fn window_size(&self) -> u32 {
        1 << (u32::from(self.windowlog.min(ZSTD_MAX_WINDOW_LOG)) + 10)
    }
}

/// The per-algorithm configuration of a filesystem, as the kernel reads it at mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompressionConfigs {
    /// The algorithms in use.
    pub available: AlgorithmSet,
    /// LZ4 parameters (also present, synthesised, on images without `COMPR_CFGS`).
    pub lz4: Option<Lz4Config>,
    /// MicroLZMA parameters.
    pub lzma: Option<LzmaConfig>,
    /// DEFLATE parameters.
    pub deflate: Option<DeflateConfig>,
    /// Zstandard parameters.
    pub zstd: Option<ZstdConfig>,
    /// Byte offset just past the last record (the next metadata, e.g. long xattr
    /// prefixes in older images, follows here).
    pub end: usize,
}

impl CompressionConfigs {
    /// Without `COMPR_CFGS`: LZ4 only, one block per pcluster, and the superblock's `u1`
    /// as the LZ4 distance.
    pub fn legacy(lz4_max_distance: u16) -> Self {
        CompressionConfigs {
            available: AlgorithmSet::LZ4,
            lz4: Some(Lz4Config {
                max_distance: U16::new(lz4_max_distance),
                max_pclusterblks: U16::new(1),
                reserved: [0; 10],
            }),
            ..Self::default()
        }
    }

    /// Parse the records of `available_compr_algs` (with `COMPR_CFGS`), one per set bit in
    /// ascending order, starting at byte `start` of `bytes` (`1024 + superblock size`, with
    /// `bytes` the image from offset 0), validating each like `z_erofs_parse_cfgs`.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedAlgorithms`] for bits above the four known algorithms,
    /// [`Error::BadMetadataRecord`] or [`Error::BadCompressionConfig`] for a bad record.
    pub fn parse(
        bytes: &[u8],
        start: usize,
        available_compr_algs: u16,
        blkszbits: u8,
    ) -> Result<Self, Error> {
        let unknown = available_compr_algs & !AlgorithmSet::all().bits();
        if unknown != 0 {
            return Err(Error::UnsupportedAlgorithms { bits: unknown });
        }
        let available = AlgorithmSet::from_bits_retain(available_compr_algs);
        let mut out = CompressionConfigs {
            available,
            ..Self::default()
        };
        let mut records = MetadataRecords::new(bytes, start);
        for alg in available.algorithms() {
            let body = records.next_record()?;
            match alg {
                Algorithm::Lz4 => out.lz4 = Some(Lz4Config::parse(body, blkszbits)?),
                Algorithm::Lzma => out.lzma = Some(LzmaConfig::parse(body)?),
                Algorithm::Deflate => out.deflate = Some(DeflateConfig::parse(body)?),
                Algorithm::Zstd => out.zstd = Some(ZstdConfig::parse(body)?),
            }
        }
        out.end = records.position();
        Ok(out)
    }
}
