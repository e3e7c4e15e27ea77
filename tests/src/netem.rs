//! An emulated network link on 127.0.0.1: a TCP proxy that delays every byte by half a
//! round trip in each direction and shares one bandwidth per direction among all its
//! connections (a full-duplex FIFO link, like `netem delay` + `tbf rate` on both ends of a
//! wire).
//!
//! Put it in front of a [`Registry`](crate::registry::Registry) and point a client at
//! [`Link::host`] to measure what a client makes of a WAN link.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The link's shape.
#[derive(Debug, Clone, Copy)]
pub struct LinkSpec {
    /// Round-trip time added (half each way).
    pub rtt: Duration,
    /// Bandwidth in bytes per second, each direction (client → upstream and back).
    pub bytes_per_sec: u64,
}

/// A running link; stops accepting on drop (connections in flight finish).
#[derive(Debug)]
pub struct Link {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    downstream: Arc<AtomicU64>,
}

/// One direction of the link, shared by every connection: when it is next free.
struct Wire {
    next_free: Mutex<Instant>,
    bytes_per_sec: u64,
}

impl Wire {
    /// Queue `n` bytes arriving at `at` behind what the link holds already (FIFO): when
    /// their last bit is sent.
    fn reserve(&self, at: Instant, n: usize) -> Instant {
        let tx = Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64);
        let mut next = self.next_free.lock().unwrap();
        let start = (*next).max(at);
        *next = start + tx;
        *next
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

impl Link {
    /// Start a link to `upstream`.
    pub fn start(upstream: SocketAddr, spec: LinkSpec) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let downstream = Arc::new(AtomicU64::new(0));
        let wire = || {
            Arc::new(Wire {
                next_free: Mutex::new(Instant::now()),
                bytes_per_sec: spec.bytes_per_sec.max(1),
            })
        };
        let (up, down) = (wire(), wire());
        let (s, d) = (stop.clone(), downstream.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let half = spec.rtt / 2;
                        pipe(
                            client.try_clone().unwrap(),
                            server.try_clone().unwrap(),
                            half,
                            up.clone(),
                            None,
                        );
                        pipe(server, client, half, down.clone(), Some(d.clone()));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Link {
            addr,
            stop,
            downstream,
        }
    }

    /// `127.0.0.1:PORT` of the link's client side.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Bytes sent downstream so far (handed to the client side's socket: every byte a client
    /// has read is in it).
    pub fn downstream_bytes(&self) -> u64 {
        self.downstream.load(Ordering::Relaxed)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copy `from` → `to` through the shared `wire`, then a delay line of `delay`.
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Duration,
    wire: Arc<Wire>,
    count: Option<Arc<AtomicU64>>,
) {
    // The reader stamps each chunk with when it leaves the link (queued on the shared wire,
    // then the propagation delay); the writer delivers it then. Stamps only grow, so the
    // line is pipelined: a chunk's delay overlaps the next one's transmission.
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let now = Instant::now();
                    let sent = wire.reserve(now, n);
                    if tx.send((sent + delay, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (at, chunk) in rx {
            sleep_until(at);
            // Counted before the write: a client that has read a byte finds it counted (counted
            // after, the last chunk raced the client's read and the count came up short).
            if let Some(c) = &count {
                c.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            if to.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lower bounds only (a loaded machine is slower, never faster): a round trip takes at
    /// least the link's, and both an upload and a download of N bytes take N / rate.
    #[test]
    fn delays_and_limits_both_directions() {
        const N: usize = 400_000;
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = server.local_addr().unwrap();
        // Echo one byte, then read N bytes and answer with N bytes.
        std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
            let mut buf = vec![0u8; N];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let spec = LinkSpec {
            rtt: Duration::from_millis(40),
            bytes_per_sec: 2_000_000,
        };
        let link = Link::start(upstream, spec);
        let mut c = TcpStream::connect(link.host()).unwrap();
        let t = Instant::now();
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert!(t.elapsed() >= spec.rtt, "round trip {:?}", t.elapsed());
        let t = Instant::now();
        c.write_all(&vec![7u8; N]).unwrap();
        let mut buf = vec![0u8; N];
        c.read_exact(&mut buf).unwrap();
        // Up and down in turn: 2 × N / rate, plus a round trip.
        let floor = Duration::from_secs_f64(2.0 * N as f64 / spec.bytes_per_sec as f64) + spec.rtt;
        assert!(t.elapsed() >= floor, "{:?} < {floor:?}", t.elapsed());
        assert!(buf.iter().all(|&x| x == 7));
        assert_eq!(link.downstream_bytes(), N as u64 + 1);
    }
}
