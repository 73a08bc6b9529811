//! The deadline heap behind [`TransactionLayer::poll_timeout`](super::TransactionLayer).
//!
//! Each transaction has at most two armed timers (a retransmission timer and a lifetime
//! timer), stored in the transaction; the heap holds `(deadline, id, slot)` entries. Re-arming
//! or destroying leaves the old entry in the heap, and it is discarded when it reaches the top
//! (lazy deletion): arming is O(log n), finding the earliest deadline O(1) amortised. The
//! layer [purges](TimerHeap::retain) the heap once most of it is such entries, so it stays
//! proportional to the live transactions however long their timers are.

use super::TransactionId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Which of a transaction's two timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Slot {
    /// A, E, G, or the 100 Trying delay.
    Retransmit,
    /// B, D, F, H, I, J, K, L, M.
    Lifetime,
}

#[derive(Debug, Default)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Reverse<(Instant, TransactionId, Slot)>>,
}

impl TimerHeap {
    pub(crate) fn push(&mut self, at: Instant, id: TransactionId, slot: Slot) {
        self.heap.push(Reverse((at, id, slot)));
    }

    pub(crate) fn peek(&self) -> Option<(Instant, TransactionId, Slot)> {
        self.heap.peek().map(|r| r.0)
    }

    pub(crate) fn pop(&mut self) -> Option<(Instant, TransactionId, Slot)> {
        self.heap.pop().map(|r| r.0)
    }

    /// Keeps only the entries `keep` accepts (O(n), then re-heapified).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(Instant, TransactionId, Slot) -> bool) {
        self.heap
            .retain(|&Reverse((at, id, slot))| keep(at, id, slot));
    }

    /// Gives back spare capacity after a burst.
    pub(crate) fn shrink(&mut self) {
        let len = self.heap.len();
        if self.heap.capacity() > 2 * len + 64 {
            self.heap.shrink_to(len + len / 2);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}
