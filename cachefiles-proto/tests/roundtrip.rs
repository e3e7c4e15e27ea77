//! Property tests: decode(encode(x)) == x for every request and command, and no byte string
//! makes a decoder panic.

use cachefiles_proto::msg::MSG_MAX_SIZE;
use cachefiles_proto::{
    COMMAND_MAX_LEN, CloseRequest, Command, Errno, MsgId, ObjectId, OpenReply, OpenRequest,
    ReadRequest, Request,
};
use proptest::prelude::*;

/// Owned data a `Request` can borrow from.
#[derive(Debug, Clone)]
enum OwnedRequest {
    Open {
        msg_id: u32,
        object_id: u32,
        volume: Vec<u8>,
        cookie: Vec<u8>,
        fd: u32,
        flags: u32,
    },
    Close {
        msg_id: u32,
        object_id: u32,
    },
    Read {
        msg_id: u32,
        object_id: u32,
        off: u64,
        len: u64,
    },
}

impl OwnedRequest {
    fn borrow(&self) -> Request<'_> {
        match self {
            OwnedRequest::Open {
                msg_id,
                object_id,
                volume,
                cookie,
                fd,
                flags,
            } => Request::Open(OpenRequest {
                msg_id: MsgId(*msg_id),
                object_id: ObjectId(*object_id),
                volume_key: volume,
                cookie_key: cookie,
                fd: *fd,
                flags: *flags,
            }),
            OwnedRequest::Close { msg_id, object_id } => Request::Close(CloseRequest {
                msg_id: MsgId(*msg_id),
                object_id: ObjectId(*object_id),
            }),
            OwnedRequest::Read {
                msg_id,
                object_id,
                off,
                len,
            } => Request::Read(ReadRequest {
                msg_id: MsgId(*msg_id),
                object_id: ObjectId(*object_id),
                off: *off,
                len: *len,
            }),
        }
    }
}

fn request() -> impl Strategy<Value = OwnedRequest> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(1u8..=255, 0..=255),
            proptest::collection::vec(any::<u8>(), 0..=255),
            0..=i32::MAX as u32,
            any::<u32>()
        )
            .prop_map(|(msg_id, object_id, volume, cookie, fd, flags)| {
                OwnedRequest::Open {
                    msg_id,
                    object_id,
                    volume,
                    cookie,
                    fd,
                    flags,
                }
            }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(msg_id, object_id)| OwnedRequest::Close { msg_id, object_id }),
        (
            any::<u32>(),
            any::<u32>(),
            0..=i64::MAX as u64,
            any::<u64>()
        )
            .prop_map(|(msg_id, object_id, off, len)| OwnedRequest::Read {
                msg_id,
                object_id,
                off,
                len: len % (i64::MAX as u64 - off + 1),
            }),
    ]
}

/// Owned data a `Command` can borrow from.
#[derive(Debug, Clone)]
struct OwnedCommand {
    kind: u8,
    arg: Vec<u8>,
    num: u64,
    percent: u8,
    errno: Option<i32>,
}

impl OwnedCommand {
    fn borrow(&self) -> Command<'_> {
        match self.kind {
            0 => Command::Dir(&self.arg),
            1 => Command::Tag(&self.arg),
            2 => Command::Secctx(&self.arg),
            3 => Command::Bind {
                ondemand: self.num.is_multiple_of(2),
            },
            4 => Command::Copen {
                msg_id: MsgId(self.num as u32),
                reply: match self.errno.and_then(Errno::new) {
                    Some(e) => OpenReply::Error(e),
                    None => OpenReply::Size(self.num >> 1),
                },
            },
            5 => Command::Restore,
            6 => Command::Cull(&self.arg),
            7 => Command::Inuse(&self.arg),
            8 => Command::Brun(self.percent),
            9 => Command::Bcull(self.percent),
            10 => Command::Bstop(self.percent),
            11 => Command::Frun(self.percent),
            12 => Command::Fcull(self.percent),
            13 => Command::Fstop(self.percent),
            _ => Command::Debug(self.num),
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0)
}

fn command() -> impl Strategy<Value = OwnedCommand> {
    (
        0u8..15,
        // First byte: not whitespace, not `/`; the rest: anything but NUL, `\n` and `/`.
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)),
        any::<u64>(),
        0u8..100,
        proptest::option::of(1..=4095i32),
    )
        .prop_map(|(kind, (first, rest), num, percent, errno)| {
            let first = if first == 0 || first == b'/' || is_space(first) {
                b'a'
            } else {
                first
            };
            let mut arg = vec![first];
            arg.extend(
                rest.into_iter()
                    .filter(|&b| b != 0 && b != b'\n' && b != b'/'),
            );
            OwnedCommand {
                kind,
                arg,
                num,
                percent,
                errno,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn request_round_trips(owned in request()) {
        let req = owned.borrow();
        let mut buf = [0u8; MSG_MAX_SIZE];
        let n = req.encode(&mut buf).unwrap();
        prop_assert_eq!(n, req.encoded_len());
        prop_assert_eq!(Request::decode(&buf[..n]), Ok(req));
        // Any shorter or longer buffer is refused, not misread.
        prop_assert!(Request::decode(&buf[..n - 1]).is_err());
        prop_assert!(Request::decode(&buf[..n + 1]).is_err());
    }

    #[test]
    fn command_round_trips(owned in command()) {
        let cmd = owned.borrow();
        let mut buf = [0u8; COMMAND_MAX_LEN];
        let n = cmd.encode(&mut buf).unwrap();
        prop_assert_eq!(n, cmd.encoded_len());
        prop_assert_eq!(Command::decode(&buf[..n]), Ok(cmd));
        // A trailing newline (and anything after it) changes nothing.
        let mut line = buf[..n].to_vec();
        line.extend_from_slice(b"\nignored");
        prop_assert_eq!(Command::decode(&line), Ok(cmd));
    }

    #[test]
    fn request_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
        let _ = Request::decode(&bytes);
    }

    #[test]
    fn request_decode_never_panics_on_plausible_headers(
        opcode in 0u32..4,
        vks in 0u32..300,
        cks in 0u32..300,
        tail in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        // A self-consistent `len`, so the checks past the header run too.
        let len = (32 + tail.len()) as u32;
        let mut bytes = Vec::new();
        for v in [1, opcode, len, 1, vks, cks, 3, 0] {
            bytes.extend_from_slice(&v.to_ne_bytes());
        }
        bytes.extend_from_slice(&tail);
        if let Ok(req) = Request::decode(&bytes) {
            let mut again = vec![0u8; bytes.len()];
            prop_assert_eq!(req.encode(&mut again), Ok(bytes.len()));
            prop_assert_eq!(again, bytes);
        }
    }

    #[test]
    fn command_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
        if let Ok(cmd) = Command::decode(&bytes) {
            // Whatever decodes re-encodes to something that decodes the same.
            let mut buf = [0u8; COMMAND_MAX_LEN];
            if let Ok(n) = cmd.encode(&mut buf) {
                prop_assert_eq!(Command::decode(&buf[..n]), Ok(cmd));
            }
        }
    }

    #[test]
    fn command_decode_never_panics_on_verbs(
        verb in prop_oneof![Just("copen "), Just("brun "), Just("debug "), Just("bind "), Just("cull ")],
        rest in "[0-9a-fxX,+%/ -]{0,30}",
    ) {
        let line = format!("{verb}{rest}");
        let _ = Command::decode(line.as_bytes());
    }
}
