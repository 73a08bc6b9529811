//! Small state cells for calls: an idle call must stay small (the budget is
//! 4 KiB per idle conversation), and tokio's channels allocate up front (a `watch` about
//! 340 bytes, an `mpsc` about 800). These compose std and tokio primitives so the cost is
//! paid only when used.

use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::{watch, Notify};

/// A value with a `watch` channel made only when somebody subscribes.
#[derive(Debug)]
pub(crate) struct LazyWatch<T: Copy + PartialEq + Send + Sync + 'static> {
    inner: Mutex<(T, Option<watch::Sender<T>>)>,
}

impl<T: Copy + PartialEq + Send + Sync + 'static> LazyWatch<T> {
    pub(crate) fn new(value: T) -> Self {
        LazyWatch {
            inner: Mutex::new((value, None)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (T, Option<watch::Sender<T>>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self) -> T {
        self.lock().0
    }

    pub(crate) fn set(&self, value: T) {
        let mut g = self.lock();
        g.0 = value;
        if let Some(tx) = &g.1 {
            tx.send_if_modified(|v| {
                let changed = *v != value;
                *v = value;
                changed
            });
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<T> {
        let mut g = self.lock();
        let value = g.0;
        g.1.get_or_insert_with(|| watch::Sender::new(value))
            .subscribe()
    }
}

/// Why a message was not queued.
pub(crate) enum PushError {
    /// The queue holds its capacity: the reader is behind.
    Full,
    /// The call ended.
    Closed,
}

/// The received messages of a call, read by one flow: a bounded queue that costs nothing
/// while empty.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    state: Mutex<InboxState<T>>,
    ready: Notify,
    capacity: usize,
}

#[derive(Debug)]
struct InboxState<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> Inbox<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Inbox {
            state: Mutex::new(InboxState {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, item: T) -> Result<(), PushError> {
        {
            let mut s = self.lock();
            if s.closed {
                return Err(PushError::Closed);
            }
            if s.items.len() >= self.capacity {
                return Err(PushError::Full);
            }
            s.items.push_back(item);
        }
        // One reader: a stored permit wakes it even if it is not waiting yet.
        self.ready.notify_one();
        Ok(())
    }

    /// No more messages after those queued.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// The next message; `None` once closed and empty. One reader at a time.
    pub(crate) async fn recv(&self) -> Option<T> {
        loop {
            {
                let mut s = self.lock();
                if let Some(item) = s.items.pop_front() {
                    if s.items.is_empty() && s.items.capacity() > 64 {
                        s.items.shrink_to(8);
                    }
                    return Some(item);
                }
                if s.closed {
                    // Keep the permit for a later call (it returns None again).
                    self.ready.notify_one();
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inbox_delivers_in_order_refuses_when_full_and_ends_when_closed() {
        let inbox = std::sync::Arc::new(Inbox::new(2));
        assert!(inbox.push(1).is_ok());
        assert!(inbox.push(2).is_ok());
        assert!(matches!(inbox.push(3), Err(PushError::Full)));
        assert_eq!(inbox.recv().await, Some(1));
        let reader = {
            let inbox = inbox.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(x) = inbox.recv().await {
                    got.push(x);
                }
                got
            })
        };
        tokio::task::yield_now().await;
        assert!(inbox.push(4).is_ok());
        inbox.close();
        assert!(matches!(inbox.push(5), Err(PushError::Closed)));
        assert_eq!(reader.await.unwrap(), vec![2, 4]);
        assert_eq!(inbox.recv().await, None);
    }

    #[tokio::test]
    async fn lazy_watch_subscribers_see_later_changes_only_once() {
        let w = LazyWatch::new(1u8);
        w.set(2);
        let mut rx = w.subscribe();
        assert_eq!(*rx.borrow_and_update(), 2);
        w.set(2);
        assert!(!rx.has_changed().unwrap());
        w.set(3);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 3);
        assert_eq!(w.get(), 3);
    }
}
