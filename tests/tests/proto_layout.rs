//! The Rust structs of `cachefiles-proto` against the kernel's own uapi layout: a small C
//! program compiled with `cc` prints `sizeof`/`offsetof` of `struct cachefiles_msg`,
//! `cachefiles_open`, `cachefiles_read` and the value of `CACHEFILES_IOC_READ_COMPLETE`, and the
//! test compares them with the Rust side.
//!
//! The C program includes `<linux/cachefiles.h>` when the machine has it (Debian's
//! `linux-libc-dev`); otherwise it declares the structs as `kernel-abi.md` §2.4 gives them and
//! takes `_IOW` from `<linux/ioctl.h>`, so the ioctl number still comes from the kernel's macros.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::process::Command;

use cachefiles_proto::ioctl::CACHEFILES_IOC_READ_COMPLETE;
use cachefiles_proto::msg::{
    CACHEFILES_OP_CLOSE, CACHEFILES_OP_OPEN, CACHEFILES_OP_READ, MSG_MAX_SIZE, MsgHeader,
    OpenPayload, ReadPayload,
};

const PROGRAM: &str = r#"
#include <stddef.h>
#include <stdio.h>
#if __has_include(<linux/cachefiles.h>)
#include <linux/cachefiles.h>
#define SOURCE "linux/cachefiles.h"
#else
#include <linux/types.h>
#include <linux/ioctl.h>
#define SOURCE "kernel-abi.md"
#define CACHEFILES_MSG_MAX_SIZE 1024
enum cachefiles_opcode { CACHEFILES_OP_OPEN, CACHEFILES_OP_CLOSE, CACHEFILES_OP_READ };
struct cachefiles_msg { __u32 msg_id; __u32 opcode; __u32 len; __u32 object_id; __u8 data[]; };
struct cachefiles_open { __u32 volume_key_size; __u32 cookie_key_size; __u32 fd; __u32 flags; __u8 data[]; };
struct cachefiles_read { __u64 off; __u64 len; };
#define CACHEFILES_IOC_READ_COMPLETE _IOW(0x98, 1, int)
#endif
#define P(name, value) printf("%s %llu\n", name, (unsigned long long)(value))
int main(void) {
    printf("source %s\n", SOURCE);
    P("msg.size", sizeof(struct cachefiles_msg));
    P("msg.msg_id", offsetof(struct cachefiles_msg, msg_id));
    P("msg.opcode", offsetof(struct cachefiles_msg, opcode));
    P("msg.len", offsetof(struct cachefiles_msg, len));
    P("msg.object_id", offsetof(struct cachefiles_msg, object_id));
    P("msg.data", offsetof(struct cachefiles_msg, data));
    P("open.size", sizeof(struct cachefiles_open));
    P("open.volume_key_size", offsetof(struct cachefiles_open, volume_key_size));
    P("open.cookie_key_size", offsetof(struct cachefiles_open, cookie_key_size));
    P("open.fd", offsetof(struct cachefiles_open, fd));
    P("open.flags", offsetof(struct cachefiles_open, flags));
    P("open.data", offsetof(struct cachefiles_open, data));
    P("read.size", sizeof(struct cachefiles_read));
    P("read.off", offsetof(struct cachefiles_read, off));
    P("read.len", offsetof(struct cachefiles_read, len));
    P("op.open", CACHEFILES_OP_OPEN);
    P("op.close", CACHEFILES_OP_CLOSE);
    P("op.read", CACHEFILES_OP_READ);
    P("msg_max_size", CACHEFILES_MSG_MAX_SIZE);
    P("ioc_read_complete", CACHEFILES_IOC_READ_COMPLETE);
    return 0;
}
"#;

#[test]
fn rust_structs_match_the_kernel_uapi_layout() {
    let Some(cc) = tests::require_tool("cc") else {
        return;
    };
    let dir = tests::scratch_dir("proto_layout");
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&src, PROGRAM).unwrap();
    tests::run(
        Command::new(&cc)
            .arg("-std=gnu11")
            .arg("-o")
            .arg(&exe)
            .arg(&src),
    );
    let out = tests::run(&mut Command::new(&exe));

    let mut c: BTreeMap<&str, u64> = BTreeMap::new();
    let mut source = "";
    for line in out.lines() {
        let (k, v) = line.split_once(' ').expect("key value");
        if k == "source" {
            source = v;
        } else {
            c.insert(k, v.parse().expect("number"));
        }
    }
    eprintln!("layout from {source}: {c:?}");

    let rust: [(&str, u64); 20] = [
        ("msg.size", size_of::<MsgHeader>() as u64),
        ("msg.msg_id", offset_of!(MsgHeader, msg_id) as u64),
        ("msg.opcode", offset_of!(MsgHeader, opcode) as u64),
        ("msg.len", offset_of!(MsgHeader, len) as u64),
        ("msg.object_id", offset_of!(MsgHeader, object_id) as u64),
        // The flexible array starts right after the header.
        ("msg.data", size_of::<MsgHeader>() as u64),
        ("open.size", size_of::<OpenPayload>() as u64),
        (
            "open.volume_key_size",
            offset_of!(OpenPayload, volume_key_size) as u64,
        ),
        (
            "open.cookie_key_size",
            offset_of!(OpenPayload, cookie_key_size) as u64,
        ),
        ("open.fd", offset_of!(OpenPayload, fd) as u64),
        ("open.flags", offset_of!(OpenPayload, flags) as u64),
        ("open.data", size_of::<OpenPayload>() as u64),
        ("read.size", size_of::<ReadPayload>() as u64),
        ("read.off", offset_of!(ReadPayload, off) as u64),
        ("read.len", offset_of!(ReadPayload, len) as u64),
        ("op.open", u64::from(CACHEFILES_OP_OPEN)),
        ("op.close", u64::from(CACHEFILES_OP_CLOSE)),
        ("op.read", u64::from(CACHEFILES_OP_READ)),
        ("msg_max_size", MSG_MAX_SIZE as u64),
        ("ioc_read_complete", u64::from(CACHEFILES_IOC_READ_COMPLETE)),
    ];
    for (key, value) in rust {
        assert_eq!(c.get(key), Some(&value), "{key}: C (from {source}) vs Rust");
    }
    assert_eq!(c.len(), rust.len(), "every C fact is compared");
    #[cfg(target_arch = "x86_64")]
    assert_eq!(c["ioc_read_complete"], 0x4004_9801);
}
