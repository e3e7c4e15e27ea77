//! [`RangeSet`]: a set of byte offsets kept as sorted, disjoint, non-adjacent half-open ranges.
//! The daemon uses it per object for what is written, what is being filled, and what a scan
//! of the cache file found present.

use std::fmt;
use std::ops::Range;

/// Sorted, disjoint, non-adjacent, non-empty ranges.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range<u64>>,
}

impl fmt::Debug for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.ranges.iter()).finish()
    }
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The ranges, sorted.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of bytes in the set.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// Index of the first range that ends at or after `pos` (may touch it).
    fn first_touching(&self, pos: u64) -> usize {
        self.ranges.partition_point(|r| r.end < pos)
    }

    /// Add `r`.
    pub fn insert(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        let i = self.first_touching(r.start);
        let mut j = i;
        let (mut start, mut end) = (r.start, r.end);
        while j < self.ranges.len() && self.ranges[j].start <= end {
            start = start.min(self.ranges[j].start);
            end = end.max(self.ranges[j].end);
            j += 1;
        }
        self.ranges.splice(i..j, std::iter::once(start..end));
    }

    /// Remove `r`.
    pub fn remove(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        let i = self.ranges.partition_point(|x| x.end <= r.start);
        let mut j = i;
        let mut keep = Vec::with_capacity(2);
        while j < self.ranges.len() && self.ranges[j].start < r.end {
            let x = &self.ranges[j];
            if x.start < r.start {
                keep.push(x.start..r.start);
            }
            if x.end > r.end {
                keep.push(r.end..x.end);
            }
            j += 1;
        }
        self.ranges.splice(i..j, keep);
    }

    /// The parts of `r` in the set, in order.
    pub fn intersection(&self, r: Range<u64>) -> Vec<Range<u64>> {
        let i = self.ranges.partition_point(|x| x.end <= r.start);
        self.ranges[i..]
            .iter()
            .take_while(|x| x.start < r.end)
            .map(|x| x.start.max(r.start)..x.end.min(r.end))
            .filter(|x| x.start < x.end)
            .collect()
    }

    /// Number of bytes of `r` in the set.
    pub fn intersection_len(&self, r: Range<u64>) -> u64 {
        self.intersection(r).iter().map(|x| x.end - x.start).sum()
    }

    /// Whether any byte of `r` is in the set.
    pub fn intersects(&self, r: Range<u64>) -> bool {
        !self.intersection(r).is_empty()
    }

    /// The parts of `r` not in the set, in order.
    pub fn gaps(&self, r: Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut pos = r.start;
        for x in self.intersection(r.clone()) {
            if x.start > pos {
                out.push(pos..x.start);
            }
            pos = x.end;
        }
        if pos < r.end {
            out.push(pos..r.end);
        }
        out
    }

    /// The whole `block`-sized blocks inside `ranges` (a partial block at either end of a
    /// range is left out): what data extents reported by `SEEK_DATA`/`SEEK_HOLE` prove
    /// present at block granularity.
    pub fn whole_blocks(ranges: impl IntoIterator<Item = Range<u64>>, block: u64) -> RangeSet {
        let block = block.max(1);
        ranges
            .into_iter()
            .map(|r| r.start.div_ceil(block).saturating_mul(block)..r.end / block * block)
            .filter(|r| r.start < r.end)
            .collect()
    }

    /// Add every range of `other`.
    pub fn extend(&mut self, other: &RangeSet) {
        for r in &other.ranges {
            self.insert(r.clone());
        }
    }
}

impl FromIterator<Range<u64>> for RangeSet {
    fn from_iter<I: IntoIterator<Item = Range<u64>>>(iter: I) -> Self {
        let mut s = RangeSet::new();
        for r in iter {
            s.insert(r);
        }
        s
    }
}

#[cfg(test)]
// Expected range lists with one element are what they look like.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_remove_splits() {
        let mut s = RangeSet::new();
        s.insert(10..20);
        s.insert(30..40);
        s.insert(20..25);
        assert_eq!(s.ranges(), [10..25, 30..40]);
        s.insert(5..35);
        assert_eq!(s.ranges(), [5..40]);
        s.remove(10..12);
        assert_eq!(s.ranges(), [5..10, 12..40]);
        s.remove(0..100);
        assert!(s.is_empty());
        s.insert(3..3);
        assert!(s.is_empty());
    }

    #[test]
    fn gaps_and_intersections() {
        let s: RangeSet = [10..20, 30..40].into_iter().collect();
        assert_eq!(s.gaps(0..50), [0..10, 20..30, 40..50]);
        assert_eq!(s.gaps(12..18), Vec::<Range<u64>>::new());
        assert_eq!(s.intersection(15..35), [15..20, 30..35]);
        assert_eq!(s.intersection_len(15..35), 10);
        assert!(s.intersects(19..21));
        assert!(!s.intersects(20..30));
        assert_eq!(s.len(), 20);
    }

    proptest::proptest! {
        #[test]
        fn behaves_like_a_bitmap(
            ops in proptest::collection::vec((proptest::bool::ANY, 0u64..200, 0u64..60), 0..40),
            probe in (0u64..200, 0u64..60),
        ) {
            let mut set = RangeSet::new();
            let mut bits = [false; 260];
            for (add, start, len) in ops {
                let r = start..start + len;
                if add { set.insert(r.clone()) } else { set.remove(r.clone()) }
                for b in &mut bits[r.start as usize..r.end as usize] { *b = add; }
                // Invariants: sorted, disjoint, non-adjacent, non-empty.
                for w in set.ranges().windows(2) {
                    proptest::prop_assert!(w[0].end < w[1].start);
                }
                proptest::prop_assert!(set.ranges().iter().all(|r| r.start < r.end));
            }
            let expect: u64 = bits.iter().filter(|&&b| b).count() as u64;
            proptest::prop_assert_eq!(set.len(), expect);
            let r = probe.0..probe.0 + probe.1;
            let inside: u64 = bits[r.start as usize..r.end as usize].iter().filter(|&&b| b).count() as u64;
            proptest::prop_assert_eq!(set.intersection_len(r.clone()), inside);
            let gaps: u64 = set.gaps(r.clone()).iter().map(|g| g.end - g.start).sum();
            proptest::prop_assert_eq!(gaps, (r.end - r.start) - inside);
            for g in set.gaps(r.clone()) {
                proptest::prop_assert!(bits[g.start as usize..g.end as usize].iter().all(|&b| !b));
            }
        }
    }
}
