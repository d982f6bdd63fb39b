//! The web server's listener, bounded: a cap on connections, an idle timeout, and room kept for
//! whoever is actually talking.
//!
//! In: TCP connections, any number, from anyone who can reach the address. Out: at most
//! [`Limits::max`] open at once. When a new connection arrives at the cap, the connection that
//! has been silent longest is closed to make room, so thousands of idle sockets cannot keep an
//! operator's request out; a connection silent (nothing read, nothing written) for
//! [`Limits::idle`] is closed. Never: an accept error that ends serving (no descriptors left,
//! the listener waits and goes on).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How many connections, and how long a silent one is kept.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max: usize,
    /// A connection with nothing read or written for this long is closed.
    pub idle: Duration,
    /// A connection that has sent nothing at all this long after it opened is closed.
    pub first_bytes: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max: 512,
            idle: Duration::from_secs(60),
            first_bytes: Duration::from_secs(10),
        }
    }
}

/// One connection's shared state: when it last moved, and whether it was told to close.
#[derive(Debug)]
struct Conn {
    opened: u64,
    spoke: AtomicBool,
    last: AtomicU64,
    closed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Conn {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut w) = self.waker.lock()
            && let Some(w) = w.take()
        {
            w.wake();
        }
    }
}

/// The listener: a TCP listener plus the registry of open connections.
#[derive(Debug)]
pub struct Guarded {
    inner: TcpListener,
    limits: Limits,
    conns: Arc<Mutex<Vec<Weak<Conn>>>>,
    epoch: Instant,
}

impl Guarded {
    /// Wraps `inner`; a sweeper closing silent connections runs on the current runtime.
    pub fn new(inner: TcpListener, limits: Limits) -> Guarded {
        let g = Guarded {
            inner,
            limits,
            conns: Arc::new(Mutex::new(Vec::new())),
            epoch: Instant::now(),
        };
        let (conns, epoch) = (Arc::clone(&g.conns), g.epoch);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let now = epoch.elapsed().as_millis() as u64;
                let idle = limits.idle.as_millis() as u64;
                let first = limits.first_bytes.as_millis() as u64;
                let Ok(mut list) = conns.lock() else { return };
                list.retain(|w| match w.upgrade() {
                    Some(c)
                        if now.saturating_sub(c.last.load(Ordering::Relaxed)) > idle
                            || (!c.spoke.load(Ordering::Relaxed)
                                && now.saturating_sub(c.opened) > first) =>
                    {
                        c.close();
                        false
                    }
                    Some(_) => true,
                    None => false,
                });
            }
        });
        g
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Registers a new connection. At the cap, room is made: first by closing the oldest
    /// connection that never sent a byte (an idle socket, not a client), else the one silent
    /// longest.
    fn admit(&self) -> Arc<Conn> {
        let now = self.now();
        let conn = Arc::new(Conn {
            opened: now,
            spoke: AtomicBool::new(false),
            last: AtomicU64::new(now),
            closed: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        if let Ok(mut list) = self.conns.lock() {
            list.retain(|w| w.strong_count() > 0);
            while list.len() >= self.limits.max {
                let oldest = list
                    .iter()
                    .enumerate()
                    .filter_map(|(i, w)| w.upgrade().map(|c| (i, c)))
                    .min_by_key(|(_, c)| {
                        (
                            c.spoke.load(Ordering::Relaxed),
                            c.last.load(Ordering::Relaxed),
                        )
                    });
                match oldest {
                    Some((i, c)) => {
                        c.close();
                        list.swap_remove(i);
                    }
                    None => break,
                }
            }
            list.push(Arc::downgrade(&conn));
        }
        conn
    }
}

impl Listener for Guarded {
    type Io = Guard;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let conn = self.admit();
                    let io = Guard {
                        stream,
                        conn,
                        epoch: self.epoch,
                    };
                    return (io, addr);
                }
                Err(e) => {
                    // No descriptor left, or a connection reset before it was taken: wait a
                    // moment rather than spin, and go on.
                    tracing::warn!(error = %e, "web: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The peer's address, as handlers see it (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, Guarded>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Guarded>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// A connection that moves its clock on every byte and ends when told to close.
#[derive(Debug)]
pub struct Guard {
    stream: TcpStream,
    conn: Arc<Conn>,
    epoch: Instant,
}

impl Guard {
    fn check(&self, cx: &Context<'_>) -> Option<io::Error> {
        if self.conn.closed.load(Ordering::SeqCst) {
            return Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed: idle, or room made for another connection",
            ));
        }
        if let Ok(mut w) = self.conn.waker.lock() {
            *w = Some(cx.waker().clone());
        }
        None
    }

    fn moved(&self) {
        self.conn
            .last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Guard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.spoke.store(true, Ordering::Relaxed);
            this.moved();
        }
        r
    }
}

impl AsyncWrite for Guard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        let r = Pin::new(&mut this.stream).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.moved();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
