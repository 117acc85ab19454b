//! Records far from the window, buffered as out of order (libncrx's rule), and what
//! becomes of them (the rules as a caller sees them are in [`Stream`]'s documentation).

#[allow(
    clippy::wildcard_imports,
    reason = "a part of the stream: it shares the stream module's private items"
)]
use super::*;

#[derive(Debug, Clone)]
pub(super) struct OutOfOrder {
    pub(super) at: Instant,
    pub(super) seq: u64,
    pub(super) ts_usec: u64,
    /// Records the stream had taken other than as out of order when this one arrived
    /// ([`Stream::taken`]): how much it went on since is the difference.
    pub(super) taken: u64,
    pub(super) datagram: Box<[u8]>,
}

/// What becomes of a buffered out-of-order record at or ahead of the window when it leaves
/// the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Release {
    /// Placed there (flush: nothing follows).
    Place,
    /// Placed there only if the far records outnumber what the stream took meanwhile
    /// (buffer overflow, timeout); else dropped and counted.
    Judge,
    /// Dropped to free bytes, counted as over budget.
    Shed,
}

impl Stream {
    pub(super) fn out_of_order(&mut self, record: &ExtRecord<'_>, datagram: &[u8]) {
        let (seq, ts_usec) = (record.header.fields.seq, record.header.fields.ts_usec);
        self.far_arrivals += 1;
        for entry in self.oos.iter().filter(|e| e.seq == seq) {
            if entry.ts_usec == ts_usec && *entry.datagram == *datagram {
                self.stats.duplicates += 1;
                return;
            }
            // Fragments of one record differ in their bytes; anything else claiming a
            // buffered number is another record. Neither is placed yet, so nothing tells a
            // restart from a stray: the first claim stands.
            let fragments = record.is_fragment()
                && entry.ts_usec == ts_usec
                && matches!(
                    Datagram::parse(&entry.datagram),
                    Ok(Datagram::Extended(old)) if old.is_fragment()
                );
            if !fragments {
                self.stats.conflicts += 1;
                return;
            }
        }
        self.stats.out_of_order += 1;
        self.oos_history |= 1;
        if self.oos_history.count_ones() >= self.config.out_of_order_threshold {
            self.restart(RestartReason::OutOfOrder, record, datagram);
            return;
        }
        if !self.make_room(datagram.len(), None) {
            self.stats.over_budget += 1;
            return;
        }
        self.held_bytes += datagram.len();
        self.oos.push_back(OutOfOrder {
            at: self.now,
            seq: record.header.fields.seq,
            ts_usec: record.header.fields.ts_usec,
            taken: self.taken(),
            datagram: Box::from(datagram),
        });
        if self.oos.len() > OUT_OF_ORDER_MAX {
            self.release_oldest_oos(Release::Judge);
        }
    }

    /// Records taken other than as out of order so far (in the window, ahead of it, behind
    /// it, duplicates of those): the stream's own traffic, as far as far-away records are
    /// concerned.
    #[inline]
    pub(super) fn taken(&self) -> u64 {
        self.stats.datagrams - self.far_arrivals
    }

    /// Whether the oldest buffered record (at or ahead of the window) is to be followed
    /// there: it and the buffered records near it (within `slots`) outnumber what the stream
    /// took since it arrived in the ratio of the out-of-order threshold (19 of 32 by
    /// default). A stream that went silent is followed; one that keeps going is not
    /// abandoned for far records arriving beside it, however consistent they are (one of
    /// two kernels behind one address, or a peer sending them on purpose). At most
    /// [`OUT_OF_ORDER_MAX`] entries are looked at.
    pub(super) fn follows_oldest_oos(&self) -> bool {
        let Some(oldest) = self.oos.front() else {
            return false;
        };
        let slots = self.config.slots as u64;
        let near = self
            .oos
            .iter()
            .filter(|e| e.seq.abs_diff(oldest.seq) <= slots)
            .count() as u64;
        let taken = self.taken() - oldest.taken;
        near * 32 >= u64::from(self.config.out_of_order_threshold) * (near + taken)
    }

    /// Releases the oldest buffered out-of-order record: it did not restart the stream, so it
    /// is taken as if it arrived now, except that it no longer waits as out of order.
    ///
    /// - At or ahead of the window (`place`): it is placed there. The numbers between the
    ///   window and it are a hole the receiver learned of when the record arrived: given up
    ///   on (an [`Event::Lost`]) `message_timeout` after that, or at once where the window
    ///   overflows, and the record then comes out in order. Delivering it late and forgetting
    ///   it would let the same number be delivered again when the window reaches it.
    ///   With [`Release::Judge`], only if the far records outnumber what the stream took
    ///   meanwhile ([`Stream::follows_oldest_oos`]); else it is dropped and counted in
    ///   [`StreamStats::out_of_order_dropped`], and the stream goes on where it is.
    /// - At or ahead of the window with [`Release::Shed`] (to free bytes): dropped, counted
    ///   as over budget; it is still missing there, so it is asked for and given up on as any
    ///   hole.
    /// - Behind the tail: delivered late once, or dropped as a duplicate or a conflict.
    pub(super) fn release_oldest_oos(&mut self, release: Release) {
        let follow = match self.oos.front() {
            None => return,
            Some(front) if front.seq >= self.head && release == Release::Judge => {
                self.follows_oldest_oos()
            }
            Some(_) => true,
        };
        let Some(entry) = self.oos.pop_front() else {
            return;
        };
        self.held_bytes -= entry.datagram.len();
        let Ok(Datagram::Extended(record)) = Datagram::parse(&entry.datagram) else {
            return;
        };
        let seq = entry.seq;
        if seq >= self.tail {
            if release == Release::Shed {
                self.stats.over_budget += 1;
            } else if !follow {
                self.stats.out_of_order_dropped += 1;
            } else if seq < self.head {
                self.place_in_window(&record, &entry.datagram);
            } else if entry.ts_usec.saturating_add(self.ts_back_usec()) >= self.newest_ts {
                // Runs time out in sequence order (one give-up deadline, the tail's): not
                // before the last open one.
                let learned_at = self
                    .runs
                    .last(self.tail, self.head)
                    .map_or(entry.at, |(_, run)| entry.at.max(run.learned_at));
                self.place_ahead_at(&record, &entry.datagram, learned_at);
            } else {
                // Ahead in sequence yet far back in time: not this boot's continuation; had
                // it arrived now it would restart the stream.
                self.restart(RestartReason::Timestamp, &record, &entry.datagram);
            }
            return;
        }
        self.late_once(&record, &entry.datagram);
    }
}
