//! The debouncer: raw notifications in, coalesced batches out. Pure (time is passed in), so
//! bursts, storms and quiet periods are tested with synthetic timestamps.

use std::time::{Duration, Instant};

use super::{Batch, Change};

/// Collects changes until the network has been quiet for `quiet`, or `max_delay` has passed
/// since the first pending change, whichever comes first.
///
/// The second bound is what keeps a storm (a flapping link, an address rotation every few
/// milliseconds) from starving the application: it still gets a batch every `max_delay`.
#[derive(Debug, Clone)]
pub struct Debouncer {
    quiet: Duration,
    max_delay: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
    pending: Vec<Change>,
    raw: u64,
}

impl Debouncer {
    /// A debouncer waiting for `quiet` of silence, at most `max_delay` (raised to `quiet`
    /// when smaller) after the first change of a batch.
    pub fn new(quiet: Duration, max_delay: Duration) -> Self {
        Debouncer {
            quiet,
            max_delay: max_delay.max(quiet),
            first: None,
            last: None,
            pending: Vec::new(),
            raw: 0,
        }
    }

    /// Records one raw change seen at `now`. Changes of the same kind on the same interface
    /// (and table) are merged; the merged change counts them.
    pub fn push(&mut self, now: Instant, change: Change) {
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.raw += 1;
        let count = change.count.max(1);
        match self.pending.iter_mut().find(|c| c.merges_with(&change)) {
            Some(existing) => existing.count = existing.count.saturating_add(count),
            None => self.pending.push(Change { count, ..change }),
        }
    }

    /// When the pending batch is due, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.quiet).min(first + self.max_delay))
    }

    /// The pending batch if it is due at `now`; the debouncer is then empty again.
    pub fn take_due(&mut self, now: Instant) -> Option<Batch> {
        if now < self.deadline()? {
            return None;
        }
        self.flush()
    }

    /// The pending batch, due or not (the source of changes ended).
    pub fn flush(&mut self) -> Option<Batch> {
        if self.pending.is_empty() {
            return None;
        }
        self.first = None;
        self.last = None;
        let raw_events = std::mem::take(&mut self.raw);
        Some(Batch {
            changes: std::mem::take(&mut self.pending),
            raw_events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::ChangeKind;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn addr(index: u32) -> Change {
        Change::new(ChangeKind::AddressAdded).with_interface(index, None)
    }

    #[test]
    fn a_burst_becomes_one_batch_after_the_quiet_time() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(200), ms(1000));
        assert_eq!(d.deadline(), None);
        assert!(d.take_due(t0).is_none());
        for i in 0..100 {
            d.push(t0 + ms(i), addr(2));
        }
        assert_eq!(d.deadline(), Some(t0 + ms(99 + 200)));
        assert!(d.take_due(t0 + ms(298)).is_none());
        let batch = d.take_due(t0 + ms(299)).expect("due");
        assert_eq!(batch.raw_events, 100);
        assert_eq!(batch.changes.len(), 1, "merged: {batch:?}");
        assert_eq!(batch.changes[0].count, 100);
        assert_eq!(d.deadline(), None, "nothing pending after the batch");
        assert!(d.take_due(t0 + ms(5000)).is_none());
    }

    #[test]
    fn a_storm_still_yields_a_batch_every_max_delay() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(200), ms(1000));
        let mut batches = Vec::new();
        // A change every 50 ms for 5 s: never 200 ms of quiet.
        for i in 0..100u64 {
            let now = t0 + ms(i * 50);
            if let Some(b) = d.take_due(now) {
                batches.push((now, b));
            }
            d.push(now, addr(2));
        }
        assert!(batches.len() >= 4, "{} batches", batches.len());
        let mut previous = t0;
        for (at, b) in &batches {
            assert!(
                *at - previous <= ms(1050),
                "a batch came {:?} late",
                *at - previous
            );
            assert!(b.changes[0].count >= 19);
            previous = *at;
        }
    }

    #[test]
    fn different_kinds_and_interfaces_stay_apart() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(100));
        d.push(t0, addr(2));
        d.push(t0, addr(3));
        d.push(
            t0,
            Change::new(ChangeKind::LinkDown).with_interface(2, Some("eth0".into())),
        );
        d.push(t0, addr(2));
        let b = d.take_due(t0 + ms(100)).unwrap();
        assert_eq!(b.raw_events, 4);
        let counts: Vec<_> = b
            .changes
            .iter()
            .map(|c| (c.kind, c.interface_index, c.count))
            .collect();
        assert_eq!(
            counts,
            [
                (ChangeKind::AddressAdded, Some(2), 2),
                (ChangeKind::AddressAdded, Some(3), 1),
                (ChangeKind::LinkDown, Some(2), 1)
            ]
        );
    }

    #[test]
    fn max_delay_below_quiet_is_raised_and_flush_empties() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(300), ms(10));
        d.push(t0, addr(1));
        assert_eq!(d.deadline(), Some(t0 + ms(300)));
        assert!(d.flush().is_some());
        assert!(d.flush().is_none());
    }
}
