//! Human-readable renderings, as `dump.erofs` prints them: times (in UTC), UUIDs, ratios.

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

struct Civil {
    year: i64,
    month: u32,
    day: u32,
    weekday: u32,
    hour: i64,
    min: i64,
    sec: i64,
}

fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        // 1970-01-01 was a Thursday (4).
        weekday: (days + 4).rem_euclid(7) as u32,
        hour: rem / 3600,
        min: rem % 3600 / 60,
        sec: rem % 60,
    }
}

/// `2026-12-06 01:29:27.545958327` (UTC), as `dump.erofs` prints an inode's timestamp.
pub(crate) fn timestamp(secs: i64, nsec: u32) -> String {
    let c = civil(secs);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{nsec:09}",
        c.year, c.month, c.day, c.hour, c.min, c.sec
    )
}

/// `2026-12-06 01:29` (UTC), the short form of `ls -l`.
pub(crate) fn short_time(secs: i64) -> String {
    let c = civil(secs);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.min
    )
}

/// `Sun Dec  6 01:29:29 2026` (UTC), as `dump.erofs` prints the build time (`ctime`).
pub(crate) fn ctime(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = civil(secs);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        DAYS[c.weekday as usize],
        MONTHS[(c.month - 1) as usize],
        c.day,
        c.hour,
        c.min,
        c.sec,
        c.year
    )
}

/// `6db76d24-abbc-4093-9f7f-b85ce307ee08`.
pub(crate) fn uuid(b: &[u8; 16]) -> String {
    let hex =
        |r: std::ops::Range<usize>| -> String { b[r].iter().map(|x| format!("{x:02x}")).collect() };
    format!(
        "{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

/// Stored bytes as a percentage of the file size, as `dump.erofs` prints the compression
/// ratio (`75.23%`); `-` for an empty file.
pub(crate) fn ratio(on_disk: u64, size: u64) -> String {
    if size == 0 {
        "-".into()
    } else {
        format!("{:.2}%", on_disk as f64 * 100.0 / size as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_dump_erofs_prints_them() {
        // Seen from dump.erofs 1.9.4 with TZ=UTC.
        assert_eq!(ctime(1_796_520_569), "Sun Dec  6 01:29:29 2026");
        assert_eq!(
            timestamp(1_796_520_567, 545_958_327),
            "2026-12-06 01:29:27.545958327"
        );
        assert_eq!(timestamp(0, 0), "1970-01-01 00:00:00.000000000");
        assert_eq!(ctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(timestamp(-1, 0), "1969-12-31 23:59:59.000000000");
        assert_eq!(short_time(951_782_400), "2000-02-29 00:00");
    }

    #[test]
    fn uuid_is_dashed() {
        let b = [
            0x6d, 0xb7, 0x6d, 0x24, 0xab, 0xbc, 0x40, 0x93, 0x9f, 0x7f, 0xb8, 0x5c, 0xe3, 0x07,
            0xee, 0x08,
        ];
        assert_eq!(uuid(&b), "6db76d24-abbc-4093-9f7f-b85ce307ee08");
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(81_920, 108_894), "75.23%");
        assert_eq!(ratio(0, 0), "-");
    }
}
