//! Runs the HTTP/2 streams of one downstream connection inside that connection's own task,
//! instead of one tokio task per stream.
//!
//! hyper hands every accepted HTTP/2 stream (the proxy request future and the response body
//! pipe) to an executor. `ConnectionStreams` is that executor for one connection: `execute`
//! queues the boxed stream future, and `serve` polls the connection future together with a
//! `FuturesUnordered` of its streams: queued streams are taken up, ready streams are polled (they
//! queue response frames), then the connection is polled (it reads new requests, which queue new
//! streams, and writes out the frames in one flush). That saves the per-stream task spawn
//! (allocation, the owned-task list, scheduling, and several copies of a future of several KiB)
//! and lets the frames of every stream finished in one poll leave in one TLS record.
//!
//! hyper calls `execute` only while the connection is being polled (new streams from reading
//! requests, upgrade tasks from a stream's poll), that is from inside `serve`'s poll, which looks
//! at the queue again before it waits; so the queue needs no waker.
//!
//! A stream that panics is dropped alone (as a panicking task would be); the connection and its
//! other streams go on. Streams still running when the connection future ends (the client went
//! away) run to completion, as spawned tasks would; the connection future itself is dropped
//! first, so a graceful shutdown does not wait for them.
use std::{
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
};

use futures::{
    stream::{FuturesUnordered, StreamExt as _},
    FutureExt as _,
};

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Rounds of (streams, connection) in one poll before yielding to the other tasks.
const ROUNDS_PER_POLL: usize = 4;

/// The executor hyper spawns one connection's HTTP/2 streams with (cheap to clone: shared).
#[derive(Clone, Default)]
pub struct ConnectionStreams {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Set when `queued` is not empty: lets `serve` skip the lock on the common path.
    has_queued: AtomicBool,
    queued: Mutex<Vec<StreamFuture>>,
}

impl std::fmt::Debug for ConnectionStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionStreams").finish_non_exhaustive()
    }
}

impl<F> hyper::rt::Executor<F> for ConnectionStreams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let mut queued = self.shared.queued.lock().unwrap_or_else(|e| e.into_inner());
        queued.push(Box::pin(fut));
        self.shared.has_queued.store(true, Ordering::Release);
    }
}

impl ConnectionStreams {
    /// Moves the queued streams into `running`; false if there were none.
    fn take_queued(&self, running: &mut FuturesUnordered<StreamFuture>) -> bool {
        if !self.shared.has_queued.load(Ordering::Acquire) {
            return false;
        }
        let mut queued = self.shared.queued.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.has_queued.store(false, Ordering::Relaxed);
        let any = !queued.is_empty();
        for stream in queued.drain(..) {
            running.push(Box::pin(AssertUnwindSafe(stream).catch_unwind().map(
                |result| {
                    if result.is_err() {
                        tracing::error!("an HTTP/2 stream panicked; it was dropped");
                    }
                },
            )));
        }
        any
    }

    /// Drives `conn` (a connection served with this executor) and its streams; returns the
    /// connection's output once it has ended and its remaining streams have finished.
    pub async fn serve<C: Future>(self, conn: C) -> C::Output {
        let mut conn = Box::pin(conn);
        let mut running = FuturesUnordered::new();
        let out = std::future::poll_fn(|cx| self.poll_round(cx, conn.as_mut(), &mut running)).await;
        drop(conn);
        self.take_queued(&mut running);
        while running.next().await.is_some() {}
        out
    }

    fn poll_round<C: Future>(
        &self,
        cx: &mut Context<'_>,
        mut conn: Pin<&mut C>,
        running: &mut FuturesUnordered<StreamFuture>,
    ) -> Poll<C::Output> {
        for _ in 0..ROUNDS_PER_POLL {
            self.take_queued(running);
            while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
            if let Poll::Ready(out) = conn.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            // New streams from this connection poll: start them now (their upstream requests
            // go out in this round); otherwise wait.
            if !self.shared.has_queued.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use hyper::rt::Executor as _;

    use super::*;

    #[tokio::test]
    async fn streams_run_in_the_connection_task_and_outlive_the_connection() {
        let streams = ConnectionStreams::default();
        let exec = streams.clone();
        let done = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let counted = done.clone();
        // The "connection" starts two streams and ends before the second one can finish.
        let conn = async move {
            let first = counted.clone();
            exec.execute(async move {
                first.fetch_add(1, Ordering::SeqCst);
            });
            exec.execute(async move {
                let _ = released.await;
                counted.fetch_add(1, Ordering::SeqCst);
            });
            tokio::task::yield_now().await;
            7
        };
        let served = tokio::spawn(streams.serve(conn));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(done.load(Ordering::SeqCst), 1, "the first stream ran");
        assert!(!served.is_finished(), "serve waits for the running stream");
        release.send(()).unwrap();
        assert_eq!(served.await.unwrap(), 7);
        assert_eq!(done.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panicking_stream_is_dropped_alone() {
        let streams = ConnectionStreams::default();
        let exec = streams.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<&'static str>();
        let conn = async move {
            exec.execute(async { panic!("a bug in one stream") });
            exec.execute(async move {
                tokio::task::yield_now().await;
                let _ = tx.send("the other stream ran");
            });
            rx.await.unwrap()
        };
        assert_eq!(streams.serve(conn).await, "the other stream ran");
    }
}
