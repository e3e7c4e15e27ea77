//! The text commands a daemon writes to `/dev/cachefiles`: [`Command`], its encoder, and a
//! decoder that follows the kernel's parser (`cachefiles_daemon_write` and the verb handlers),
//! so test doubles of the kernel can read what a daemon wrote.
//!
//! One command per `write()`. The encoder writes plain decimal numbers with no leading zeros
//! (the kernel parses `copen` numbers with base 0, so `010` would be octal) and no newline.

use core::fmt::{self, Write as _};

use crate::error::{DecodeError, EncodeError};
use crate::msg::MsgId;

/// Longest command the kernel accepts: one 4 KiB page minus one byte. (Kernels with larger
/// pages accept more; this crate keeps to the smallest.)
pub const COMMAND_MAX_LEN: usize = 4095;

/// An errno value a daemon can return for an OPEN (`copen <id>,-<errno>`): `1..=4095`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(u16);

impl Errno {
    /// Largest errno the kernel accepts (`MAX_ERRNO`).
    pub const MAX: i32 = 4095;
    /// `EIO`.
    pub const EIO: Errno = Errno(5);
    /// `ENOENT`.
    pub const ENOENT: Errno = Errno(2);
    /// `EINVAL`.
    pub const EINVAL: Errno = Errno(22);
    /// `ENOMEM`.
    pub const ENOMEM: Errno = Errno(12);

    /// `Some` if `errno` (positive, as in `errno.h`) is in `1..=4095`.
    pub const fn new(errno: i32) -> Option<Self> {
        if errno >= 1 && errno <= Self::MAX {
            // In range, so the cast keeps the value.
            Some(Errno(errno as u16))
        } else {
            None
        }
    }

    /// The positive errno value.
    pub const fn get(self) -> i32 {
        self.0 as i32
    }
}

/// The answer to an OPEN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpenReply {
    /// The object exists and is this many bytes long (at most `i64::MAX`).
    Size(u64),
    /// The object cannot be opened; the kernel fails the cookie with this errno.
    Error(Errno),
}

/// A command written to `/dev/cachefiles`.
///
/// Byte-string arguments are taken as the kernel sees them: no NUL, no newline, no leading
/// whitespace (the kernel would skip it), and not empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command<'a> {
    /// `dir <path>`: the cache's root directory; once.
    Dir(&'a [u8]),
    /// `tag <name>`: the cache's name (default `CacheFiles`); once.
    Tag(&'a [u8]),
    /// `secctx <label>`: the LSM context the cache acts with; once.
    Secctx(&'a [u8]),
    /// `bind` or `bind ondemand`: bring the cache up, in on-demand mode or not.
    Bind {
        /// `true` for `bind ondemand`.
        ondemand: bool,
    },
    /// `copen <msg_id>,<size>` or `copen <msg_id>,-<errno>`: answer an OPEN.
    Copen {
        /// The OPEN's id.
        msg_id: MsgId,
        /// Size or error.
        reply: OpenReply,
    },
    /// `restore`: re-deliver every pending request (daemon fail-over, kernel 6.8+).
    Restore,
    /// `cull <name>`: cull the named object in the daemon's current directory.
    Cull(&'a [u8]),
    /// `inuse <name>`: ask whether the named object in the current directory is in use.
    Inuse(&'a [u8]),
    /// `brun <N>%`: stop culling above N% free blocks.
    Brun(u8),
    /// `bcull <N>%`: start culling below N% free blocks.
    Bcull(u8),
    /// `bstop <N>%`: stop allocating below N% free blocks.
    Bstop(u8),
    /// `frun <N>%`: stop culling above N% free files.
    Frun(u8),
    /// `fcull <N>%`: start culling below N% free files.
    Fcull(u8),
    /// `fstop <N>%`: stop allocating below N% free files.
    Fstop(u8),
    /// `debug <mask>`: the cachefiles debug mask.
    Debug(u64),
}

/// The kernel's `isspace` (Latin-1 table, so 0xa0 counts).
fn is_kernel_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0)
}

/// Writes into a slice, counting every byte even past its end.
struct Out<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl Out<'_> {
    fn bytes(&mut self, b: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.len..self.len.saturating_add(b.len())) {
            dst.copy_from_slice(b);
        }
        self.len = self.len.saturating_add(b.len());
    }
}

impl fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

impl<'a> Command<'a> {
    /// The verb, as the kernel spells it.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Dir(_) => "dir",
            Command::Tag(_) => "tag",
            Command::Secctx(_) => "secctx",
            Command::Bind { .. } => "bind",
            Command::Copen { .. } => "copen",
            Command::Restore => "restore",
            Command::Cull(_) => "cull",
            Command::Inuse(_) => "inuse",
            Command::Brun(_) => "brun",
            Command::Bcull(_) => "bcull",
            Command::Bstop(_) => "bstop",
            Command::Frun(_) => "frun",
            Command::Fcull(_) => "fcull",
            Command::Fstop(_) => "fstop",
            Command::Debug(_) => "debug",
        }
    }

    fn check(&self) -> Result<(), EncodeError> {
        let verb = self.verb();
        match *self {
            Command::Dir(arg) | Command::Tag(arg) | Command::Secctx(arg) => {
                check_arg(verb, arg, false)
            }
            Command::Cull(arg) | Command::Inuse(arg) => check_arg(verb, arg, true),
            Command::Brun(p)
            | Command::Bcull(p)
            | Command::Bstop(p)
            | Command::Frun(p)
            | Command::Fcull(p)
            | Command::Fstop(p) => {
                if p >= 100 {
                    Err(EncodeError::PercentOutOfRange { percent: p })
                } else {
                    Ok(())
                }
            }
            Command::Copen {
                reply: OpenReply::Size(size),
                ..
            } if size > i64::MAX as u64 => Err(EncodeError::SizeOutOfRange { size }),
            _ => Ok(()),
        }
    }

    fn write_to(&self, out: &mut Out<'_>) {
        out.bytes(self.verb().as_bytes());
        // `Out` never fails, so the `write!` results are always `Ok`.
        let _ = match *self {
            Command::Dir(arg)
            | Command::Tag(arg)
            | Command::Secctx(arg)
            | Command::Cull(arg)
            | Command::Inuse(arg) => {
                out.bytes(b" ");
                out.bytes(arg);
                Ok(())
            }
            Command::Bind { ondemand: true } => {
                out.bytes(b" ondemand");
                Ok(())
            }
            Command::Bind { ondemand: false } | Command::Restore => Ok(()),
            Command::Copen {
                msg_id,
                reply: OpenReply::Size(size),
            } => {
                write!(out, " {},{}", msg_id.0, size)
            }
            Command::Copen {
                msg_id,
                reply: OpenReply::Error(e),
            } => {
                write!(out, " {},-{}", msg_id.0, e.get())
            }
            Command::Brun(p)
            | Command::Bcull(p)
            | Command::Bstop(p)
            | Command::Frun(p)
            | Command::Fcull(p)
            | Command::Fstop(p) => write!(out, " {p}%"),
            Command::Debug(mask) => write!(out, " {mask}"),
        };
    }

    /// Length of the encoded command (without validating it).
    pub fn encoded_len(&self) -> usize {
        let mut out = Out {
            buf: &mut [],
            len: 0,
        };
        self.write_to(&mut out);
        out.len
    }

    /// Encode the command into the front of `buf`; returns its length. Write exactly those
    /// bytes with one `write()`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::BufferTooSmall`] (with the length needed), or an argument the kernel
    /// would refuse or misread.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        self.check()?;
        let len = self.encoded_len();
        if len > COMMAND_MAX_LEN {
            return Err(EncodeError::CommandTooLong {
                len,
                max: COMMAND_MAX_LEN,
            });
        }
        if len > buf.len() {
            return Err(EncodeError::BufferTooSmall {
                needed: len,
                available: buf.len(),
            });
        }
        let mut out = Out { buf, len: 0 };
        self.write_to(&mut out);
        Ok(len)
    }

    /// Decode a command the way the kernel parses it: the first newline ends it, the verb runs
    /// to the first whitespace, the arguments start after the following spaces.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] for what the kernel would refuse (it answers those with `EINVAL`,
    /// `EOPNOTSUPP` or a parse error). Checks that need the cache's state (a second `dir`,
    /// culling limits that must be ordered) are the kernel's alone.
    pub fn decode(data: &'a [u8]) -> Result<Self, DecodeError> {
        if data.len() > COMMAND_MAX_LEN {
            return Err(DecodeError::CommandTooLong {
                len: data.len(),
                max: COMMAND_MAX_LEN,
            });
        }
        if let Some(position) = data.iter().position(|&b| b == 0) {
            return Err(DecodeError::CommandNul { position });
        }
        let line = match data.iter().position(|&b| b == b'\n') {
            Some(0) => return Err(DecodeError::EmptyCommand),
            Some(n) => &data[..n],
            None => data,
        };
        if line.is_empty() {
            return Err(DecodeError::EmptyCommand);
        }
        let (verb, args) = match line.iter().position(|&b| is_kernel_space(b)) {
            Some(0) => return Err(DecodeError::LeadingWhitespace),
            Some(n) => {
                let rest = &line[n + 1..];
                let skip = rest.iter().take_while(|&&b| is_kernel_space(b)).count();
                (&line[..n], &rest[skip..])
            }
            None => (line, &line[line.len()..]),
        };
        let nonempty = |verb: &'static str| {
            if args.is_empty() {
                Err(DecodeError::BadArgument { verb })
            } else {
                Ok(args)
            }
        };
        let percent = |verb: &'static str| -> Result<u8, DecodeError> {
            let digits = args
                .strip_suffix(b"%")
                .ok_or(DecodeError::BadArgument { verb })?;
            if digits.is_empty() {
                return Err(DecodeError::BadArgument { verb });
            }
            let value = parse_radix(digits, 10).map_err(|e| e.with(verb))?;
            u8::try_from(value)
                .ok()
                .filter(|&p| p < 100)
                .ok_or(DecodeError::NumberOutOfRange { verb })
        };
        Ok(match verb {
            b"dir" => Command::Dir(nonempty("dir")?),
            b"tag" => Command::Tag(nonempty("tag")?),
            b"secctx" => Command::Secctx(nonempty("secctx")?),
            b"bind" => match args {
                b"" => Command::Bind { ondemand: false },
                b"ondemand" => Command::Bind { ondemand: true },
                _ => return Err(DecodeError::BadArgument { verb: "bind" }),
            },
            b"copen" => {
                let verb = "copen";
                let comma = args
                    .iter()
                    .position(|&b| b == b',')
                    .ok_or(DecodeError::BadArgument { verb })?;
                let id = parse_base0(&args[..comma]).map_err(|e| e.with(verb))?;
                let id = u32::try_from(id).map_err(|_| DecodeError::NumberOutOfRange { verb })?;
                let size = &args[comma + 1..];
                let reply = match size.strip_prefix(b"-") {
                    Some(neg) => {
                        let v = parse_base0(neg).map_err(|e| e.with(verb))?;
                        let errno = i32::try_from(v)
                            .ok()
                            .and_then(Errno::new)
                            .ok_or(DecodeError::NumberOutOfRange { verb })?;
                        OpenReply::Error(errno)
                    }
                    None => {
                        let v = parse_base0(size).map_err(|e| e.with(verb))?;
                        if v > i64::MAX as u64 {
                            return Err(DecodeError::NumberOutOfRange { verb });
                        }
                        OpenReply::Size(v)
                    }
                };
                Command::Copen {
                    msg_id: MsgId(id),
                    reply,
                }
            }
            b"restore" => Command::Restore,
            b"cull" | b"inuse" => {
                let verb = if verb == b"cull" { "cull" } else { "inuse" };
                if args.is_empty() || args.contains(&b'/') {
                    return Err(DecodeError::BadArgument { verb });
                }
                if verb == "cull" {
                    Command::Cull(args)
                } else {
                    Command::Inuse(args)
                }
            }
            b"brun" => Command::Brun(percent("brun")?),
            b"bcull" => Command::Bcull(percent("bcull")?),
            b"bstop" => Command::Bstop(percent("bstop")?),
            b"frun" => Command::Frun(percent("frun")?),
            b"fcull" => Command::Fcull(percent("fcull")?),
            b"fstop" => Command::Fstop(percent("fstop")?),
            b"debug" => {
                // `simple_strtoul(args, 0)` then end of string: an empty mask is 0.
                if args.is_empty() {
                    Command::Debug(0)
                } else {
                    Command::Debug(parse_base0(args).map_err(|e| e.with("debug"))?)
                }
            }
            _ => return Err(DecodeError::UnknownVerb { len: verb.len() }),
        })
    }
}

fn check_arg(verb: &'static str, arg: &[u8], no_slash: bool) -> Result<(), EncodeError> {
    if arg.is_empty() {
        return Err(EncodeError::EmptyArgument { verb });
    }
    let forbidden = |byte: u8, position: usize| EncodeError::ForbiddenByte {
        verb,
        byte,
        position,
    };
    if is_kernel_space(arg[0]) {
        return Err(forbidden(arg[0], 0));
    }
    match arg
        .iter()
        .position(|&b| b == 0 || b == b'\n' || (no_slash && b == b'/'))
    {
        Some(position) => Err(forbidden(arg[position], position)),
        None => Ok(()),
    }
}

/// A number that failed to parse: malformed or too large.
#[derive(Clone, Copy)]
enum NumError {
    Malformed,
    Overflow,
}

impl NumError {
    fn with(self, verb: &'static str) -> DecodeError {
        match self {
            NumError::Malformed => DecodeError::BadArgument { verb },
            NumError::Overflow => DecodeError::NumberOutOfRange { verb },
        }
    }
}

/// `kstrtoull(s, 0)`: optional `+`, then `0x` hex, `0` octal, or decimal; nothing else.
fn parse_base0(s: &[u8]) -> Result<u64, NumError> {
    let s = s.strip_prefix(b"+").unwrap_or(s);
    match s {
        [b'0', b'x' | b'X', rest @ ..] if rest.first().is_some_and(u8::is_ascii_hexdigit) => {
            parse_radix(rest, 16)
        }
        [b'0', ..] => parse_radix(s, 8),
        _ => parse_radix(s, 10),
    }
}

/// Digits in `radix`, at least one, with overflow checks.
fn parse_radix(s: &[u8], radix: u32) -> Result<u64, NumError> {
    if s.is_empty() {
        return Err(NumError::Malformed);
    }
    s.iter().try_fold(0u64, |acc, &b| {
        let d = (b as char).to_digit(radix).ok_or(NumError::Malformed)?;
        acc.checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
            .ok_or(NumError::Overflow)
    })
}

impl fmt::Display for Command<'_> {
    /// The command as text, with non-printable argument bytes escaped (for logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Command::Dir(arg)
            | Command::Tag(arg)
            | Command::Secctx(arg)
            | Command::Cull(arg)
            | Command::Inuse(arg) => write!(f, "{} {}", self.verb(), arg.escape_ascii()),
            Command::Bind { ondemand: true } => f.write_str("bind ondemand"),
            Command::Bind { ondemand: false } => f.write_str("bind"),
            Command::Restore => f.write_str("restore"),
            Command::Copen {
                msg_id,
                reply: OpenReply::Size(size),
            } => {
                write!(f, "copen {msg_id},{size}")
            }
            Command::Copen {
                msg_id,
                reply: OpenReply::Error(e),
            } => {
                write!(f, "copen {msg_id},-{}", e.get())
            }
            Command::Brun(p)
            | Command::Bcull(p)
            | Command::Bstop(p)
            | Command::Frun(p)
            | Command::Fcull(p)
            | Command::Fstop(p) => write!(f, "{} {p}%", self.verb()),
            Command::Debug(mask) => write!(f, "debug {mask}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(c: Command<'_>) -> ([u8; 64], usize) {
        let mut buf = [0u8; 64];
        let n = c.encode(&mut buf).unwrap();
        (buf, n)
    }

    #[test]
    fn encodes_what_the_kernel_expects() {
        let cases: [(Command<'_>, &[u8]); 8] = [
            (Command::Dir(b"/var/cache/x"), b"dir /var/cache/x"),
            (Command::Tag(b"test"), b"tag test"),
            (Command::Bind { ondemand: true }, b"bind ondemand"),
            (Command::Bind { ondemand: false }, b"bind"),
            (
                Command::Copen {
                    msg_id: MsgId(5),
                    reply: OpenReply::Size(8),
                },
                b"copen 5,8",
            ),
            (
                Command::Copen {
                    msg_id: MsgId(0),
                    reply: OpenReply::Error(Errno::EIO),
                },
                b"copen 0,-5",
            ),
            (Command::Bstop(0), b"bstop 0%"),
            (Command::Debug(7), b"debug 7"),
        ];
        for (cmd, want) in cases {
            let (buf, n) = enc(cmd);
            assert_eq!(&buf[..n], want, "{cmd:?}");
            assert_eq!(Command::decode(want), Ok(cmd));
            assert_eq!(cmd.encoded_len(), want.len());
        }
    }

    #[test]
    fn decodes_like_the_kernel() {
        // A leading zero is octal, 0x is hex (kstrtol base 0).
        assert_eq!(
            Command::decode(b"copen 5,010"),
            Ok(Command::Copen {
                msg_id: MsgId(5),
                reply: OpenReply::Size(8)
            })
        );
        assert_eq!(
            Command::decode(b"copen 0x10,0x1000\ntrailing ignored"),
            Ok(Command::Copen {
                msg_id: MsgId(16),
                reply: OpenReply::Size(4096)
            })
        );
        assert_eq!(
            Command::decode(b"copen 5,-99999"),
            Err(DecodeError::NumberOutOfRange { verb: "copen" })
        );
        assert_eq!(
            Command::decode(b"copen 5,abc"),
            Err(DecodeError::BadArgument { verb: "copen" })
        );
        assert_eq!(
            Command::decode(b"copen 5"),
            Err(DecodeError::BadArgument { verb: "copen" })
        );
        assert_eq!(
            Command::decode(b"copen 4294967296,1"),
            Err(DecodeError::NumberOutOfRange { verb: "copen" })
        );
        assert_eq!(
            Command::decode(b"bind foo"),
            Err(DecodeError::BadArgument { verb: "bind" })
        );
        assert_eq!(
            Command::decode(b"bind   "),
            Ok(Command::Bind { ondemand: false })
        );
        assert_eq!(
            Command::decode(b" bind"),
            Err(DecodeError::LeadingWhitespace)
        );
        assert_eq!(Command::decode(b"\nbind"), Err(DecodeError::EmptyCommand));
        assert_eq!(
            Command::decode(b"bi\0nd"),
            Err(DecodeError::CommandNul { position: 2 })
        );
        assert_eq!(
            Command::decode(b"frobnicate"),
            Err(DecodeError::UnknownVerb { len: 10 })
        );
        assert_eq!(
            Command::decode(b"dir"),
            Err(DecodeError::BadArgument { verb: "dir" })
        );
        assert_eq!(Command::decode(b"dir \t /x "), Ok(Command::Dir(b"/x ")));
        assert_eq!(
            Command::decode(b"cull a/b"),
            Err(DecodeError::BadArgument { verb: "cull" })
        );
        assert_eq!(
            Command::decode(b"brun 100%"),
            Err(DecodeError::NumberOutOfRange { verb: "brun" })
        );
        assert_eq!(
            Command::decode(b"brun 10"),
            Err(DecodeError::BadArgument { verb: "brun" })
        );
        assert_eq!(Command::decode(b"restore whatever"), Ok(Command::Restore));
        assert_eq!(Command::decode(b"debug"), Ok(Command::Debug(0)));
        let long = [b'a'; COMMAND_MAX_LEN + 1];
        assert_eq!(
            Command::decode(&long),
            Err(DecodeError::CommandTooLong {
                len: 4096,
                max: 4095
            })
        );
    }

    #[test]
    fn refuses_what_the_kernel_would_misread() {
        let mut buf = [0u8; 64];
        assert_eq!(
            Command::Dir(b"").encode(&mut buf),
            Err(EncodeError::EmptyArgument { verb: "dir" })
        );
        assert_eq!(
            Command::Dir(b" x").encode(&mut buf),
            Err(EncodeError::ForbiddenByte {
                verb: "dir",
                byte: b' ',
                position: 0
            })
        );
        assert_eq!(
            Command::Tag(b"a\nb").encode(&mut buf),
            Err(EncodeError::ForbiddenByte {
                verb: "tag",
                byte: b'\n',
                position: 1
            })
        );
        assert_eq!(
            Command::Inuse(b"a/b").encode(&mut buf),
            Err(EncodeError::ForbiddenByte {
                verb: "inuse",
                byte: b'/',
                position: 1
            })
        );
        assert_eq!(
            Command::Frun(100).encode(&mut buf),
            Err(EncodeError::PercentOutOfRange { percent: 100 })
        );
        assert_eq!(
            Command::Copen {
                msg_id: MsgId(1),
                reply: OpenReply::Size(u64::MAX)
            }
            .encode(&mut buf),
            Err(EncodeError::SizeOutOfRange { size: u64::MAX })
        );
        assert_eq!(
            Command::Dir(b"/a/long/path").encode(&mut buf[..4]),
            Err(EncodeError::BufferTooSmall {
                needed: 16,
                available: 4
            })
        );
        assert_eq!(Errno::new(0), None);
        assert_eq!(Errno::new(4096), None);
        assert_eq!(Errno::new(4095).map(Errno::get), Some(4095));
    }

    #[test]
    fn displays_for_logs() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(
            Command::Copen {
                msg_id: MsgId(3),
                reply: OpenReply::Size(4096)
            }
            .to_string(),
            "copen 3,4096"
        );
        assert_eq!(Command::Tag(b"a\x01").to_string(), "tag a\\x01");
    }
}
