//! The one check of a name that is about to become a file name inside a directory.

/// Whether `name` can name a file inside a directory without leaving it: not empty, not `.`
/// or `..`, and without `/` or NUL. Device tags, blob ids, cookie keys and directory entries
/// that become paths all pass through this check.
///
/// ```
/// use erofs_reader::is_plain_name;
/// assert!(is_plain_name(b"a") && is_plain_name(b"..."));
/// for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0"] {
///     assert!(!is_plain_name(bad));
/// }
/// ```
pub fn is_plain_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.iter().any(|&b| b == b'/' || b == 0)
}
