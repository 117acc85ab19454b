//! The listener's sockets: bound with a large receive buffer and ICMP errors turned on, read a
//! batch of datagrams per system call (`recvmmsg`), their error queues and their kernel drop
//! counters; the senders' sockets ([`bind_sender`], for `ncrx send` and `ncrx oops send`).
//! Nothing here knows the protocol: bytes and addresses in, bytes and addresses out.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, recvmsg, setsockopt,
    sockopt,
};

use crate::error::Failure;

/// Datagrams read by one `recvmmsg` call at most.
pub(crate) const BATCH: usize = 64;
/// Bytes kept for each datagram of a batch: any UDP datagram but an IPv6 jumbogram (at most
/// 65,507 bytes of payload over IPv4, 65,527 over IPv6). A kernel's netconsole datagram is at
/// most `MAX_PRINT_CHUNK` (1000) bytes of payload plus a header, but any size is taken.
pub(crate) const SLOT: usize = 64 * 1024;
/// The distance between two slots: a cache line more than [`SLOT`], so that the starts of the
/// slots, where short datagrams lie, do not all fall in the same cache sets.
const STRIDE: usize = SLOT + 64;

/// A socket the listener receives on.
pub(crate) struct Listening {
    /// The address it is bound to.
    pub(crate) addr: SocketAddr,
    pub(crate) socket: UdpSocket,
    /// The receive buffer the kernel granted, in bytes (what `SO_RCVBUF` reads back).
    pub(crate) granted_buffer: usize,
    /// The socket's inode, to find its drop counter in `/proc/self/net/udp{,6}`.
    inode: Option<u64>,
}

/// Binds `addr` for the listener: `SO_REUSEPORT` when several threads share it, IPv4 too on
/// `[::]`, then [`prepare`]d. Its `addr` is the address bound (with the port chosen, for
/// port 0).
pub(crate) fn bind_listener(
    addr: SocketAddr,
    reuse_port: bool,
    buffer: usize,
) -> Result<Listening, Failure> {
    let fail = |what, source| Failure::Socket { what, addr, source };
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .map_err(|e| fail("cannot open a socket for", e))?;
    if reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(|e| fail("cannot share (SO_REUSEPORT)", e))?;
    }
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket
            .set_only_v6(false)
            .map_err(|e| fail("cannot accept IPv4 on", e))?;
    }
    socket
        .bind(&addr.into())
        .map_err(|e| fail("cannot bind", e))?;
    // The port the kernel chose when asked for port 0.
    let bound = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    prepare(socket.into(), bound, buffer)
}

/// A UDP socket to send from, bound to `local`, as netconsole's netpoll sends: an IPv6 socket
/// is IPv6 only (`IPV6_V6ONLY`), so that an IPv4 target and an IPv6 target can both send from
/// the same port (the kernel sends both from 6665); an IPv4 socket may send to a broadcast
/// address (`SO_BROADCAST`; the kernel's default target MAC is broadcast, and
/// `255.255.255.255` or a subnet's broadcast address are valid targets).
pub(crate) fn bind_sender(local: SocketAddr) -> Result<UdpSocket, Failure> {
    let fail = |what, source| Failure::Socket {
        what,
        addr: local,
        source,
    };
    let domain = socket2::Domain::for_address(local);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .map_err(|e| fail("cannot open a socket for", e))?;
    if local.is_ipv6() {
        socket
            .set_only_v6(true)
            .map_err(|e| fail("cannot make IPv6-only (IPV6_V6ONLY)", e))?;
    } else {
        socket
            .set_broadcast(true)
            .map_err(|e| fail("cannot allow broadcast (SO_BROADCAST) on", e))?;
    }
    socket
        .bind(&local.into())
        .map_err(|e| fail("cannot bind", e))?;
    Ok(socket.into())
}

/// Takes a socket bound by someone else (systemd's socket activation): the options that can
/// be set after binding are set as [`bind_listener`] sets them.
pub(crate) fn adopt(socket: UdpSocket, buffer: usize) -> Result<Listening, Failure> {
    let addr = socket.local_addr().map_err(|source| Failure::Socket {
        what: "cannot read the address of a passed socket,",
        addr: SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
        source,
    })?;
    prepare(socket, addr, buffer)
}

/// A receive buffer of `buffer` bytes (with `SO_RCVBUFFORCE` when the process may, so that
/// `net.core.rmem_max` does not cap it), ICMP errors queued (`IP_RECVERR`/`IPV6_RECVERR`),
/// non-blocking.
fn prepare(socket: UdpSocket, addr: SocketAddr, buffer: usize) -> Result<Listening, Failure> {
    let fail = |what, source| Failure::Socket { what, addr, source };
    let socket = socket2::Socket::from(socket);
    let wanted = buffer.min(i32::MAX as usize);
    // The privileged option first; without CAP_NET_ADMIN the ordinary one, capped by
    // net.core.rmem_max. Either way the granted size is read back and reported.
    if setsockopt(&socket, sockopt::RcvBufForce, &wanted).is_err() {
        let _ = socket.set_recv_buffer_size(buffer);
    }
    let granted_buffer = socket.recv_buffer_size().unwrap_or(0);
    // ICMP errors (port unreachable from a sender that does not listen for requests) are
    // queued instead of being lost. On a dual-stack socket IPv4 senders' errors come
    // through IP_RECVERR, so both are asked for; failing only loses that information.
    if addr.is_ipv6() {
        let _ = setsockopt(&socket, sockopt::Ipv6RecvErr, &true);
    }
    let _ = setsockopt(&socket, sockopt::Ipv4RecvErr, &true);
    socket
        .set_nonblocking(true)
        .map_err(|e| fail("cannot make non-blocking", e))?;
    let socket: UdpSocket = socket.into();
    let inode = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd()))
        .ok()
        .and_then(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        });
    Ok(Listening {
        addr,
        socket,
        granted_buffer,
        inode,
    })
}

/// Whether some other socket already receives on `addr` (bound without `SO_REUSEPORT`, or
/// with it: a plain bind fails either way). Checked before a group of `SO_REUSEPORT`
/// sockets is bound, so that the listener never silently shares another program's traffic.
pub(crate) fn in_use(addr: SocketAddr) -> Option<io::Error> {
    let domain = socket2::Domain::for_address(addr);
    let socket =
        socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP)).ok()?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        let _ = socket.set_only_v6(false);
    }
    socket
        .bind(&addr.into())
        .err()
        .filter(|e| e.kind() == io::ErrorKind::AddrInUse)
}

/// A sender as the receiver keys it: IPv4 senders seen on a dual-stack socket are shown and
/// keyed as IPv4, not as `::ffff:a.b.c.d`.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            // A link-local sender keeps its interface (`%3`): it is how to answer it.
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

fn std_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        Some(SocketAddr::V4(SocketAddrV4::from(*v4)))
    } else {
        addr.as_sockaddr_in6()
            .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
    }
}

/// One datagram of a batch: where it came from and how long it was.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    pub(crate) from: SocketAddr,
    pub(crate) len: usize,
    /// The datagram was longer than [`SLOT`] and was cut.
    pub(crate) cut: bool,
}

/// Buffers for one batch, reused for every call (nothing is allocated per datagram).
pub(crate) struct Batch {
    /// The message headers for IPv4 sockets and for IPv6 ones, apart: the kernel leaves in
    /// each header the length of the address it wrote, and nix does not reset it, so a
    /// header that once took an IPv4 address (16 bytes) would cut the next IPv6 one (28) to
    /// its first 64 bits.
    headers_v4: MultiHeaders<SockaddrStorage>,
    headers_v6: MultiHeaders<SockaddrStorage>,
    buffers: Vec<u8>,
    received: Vec<Received>,
}

impl Batch {
    pub(crate) fn new() -> Self {
        Batch {
            headers_v4: MultiHeaders::preallocate(BATCH, None),
            headers_v6: MultiHeaders::preallocate(BATCH, None),
            buffers: vec![0; BATCH * STRIDE],
            received: Vec::with_capacity(BATCH),
        }
    }

    /// Reads what `listening` has queued, up to [`BATCH`] datagrams, without waiting.
    /// `Ok(0)` when nothing was there.
    pub(crate) fn receive(&mut self, listening: &Listening) -> io::Result<usize> {
        self.received.clear();
        let mut chunks = self.buffers.chunks_exact_mut(STRIDE);
        let mut slices: [[io::IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [io::IoSliceMut::new(
                &mut chunks.next().expect("BATCH chunks of STRIDE bytes")[..SLOT],
            )]
        });
        let headers = if listening.addr.is_ipv6() {
            &mut self.headers_v6
        } else {
            &mut self.headers_v4
        };
        let results = match recvmmsg(
            listening.socket.as_raw_fd(),
            headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(results) => results,
            Err(Errno::EAGAIN) => return Ok(0),
            Err(errno) => return Err(io::Error::from(errno)),
        };
        for message in results {
            let Some(from) = message.address.as_ref().and_then(std_addr) else {
                continue;
            };
            self.received.push(Received {
                from,
                len: message.bytes.min(SLOT),
                cut: message.flags.contains(MsgFlags::MSG_TRUNC),
            });
        }
        Ok(self.received.len())
    }

    /// The datagrams of the last [`Batch::receive`], with their bytes.
    pub(crate) fn datagrams(&self) -> impl Iterator<Item = (Received, &[u8])> {
        self.received
            .iter()
            .zip(self.buffers.chunks_exact(STRIDE))
            .map(|(r, slot)| (*r, &slot[..r.len]))
    }
}

/// Waits until one of `sockets` is readable (or has an error queued) or `timeout` passes.
/// Returns, per socket, whether it has an error queued.
pub(crate) fn wait(
    sockets: &[Listening],
    timeout: Duration,
    errors: &mut [bool],
) -> io::Result<()> {
    let millis = u32::try_from(timeout.as_millis().clamp(1, 60_000)).unwrap_or(60_000);
    let Some(first) = sockets.first() else {
        std::thread::sleep(timeout);
        return Ok(());
    };
    // On the stack for the usual few sockets (nothing allocated per wake-up); the unused
    // entries repeat the first socket and are not passed to poll.
    let mut few: [PollFd<'_>; 8];
    let mut many: Vec<PollFd<'_>>;
    let fds: &mut [PollFd<'_>] = if sockets.len() <= 8 {
        few = std::array::from_fn(|i| {
            PollFd::new(
                sockets.get(i).unwrap_or(first).socket.as_fd(),
                PollFlags::POLLIN,
            )
        });
        &mut few[..sockets.len()]
    } else {
        many = sockets
            .iter()
            .map(|s| PollFd::new(s.socket.as_fd(), PollFlags::POLLIN))
            .collect();
        &mut many
    };
    match poll(
        fds,
        PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(errno) => return Err(io::Error::from(errno)),
    }
    for (fd, error) in fds.iter().zip(errors.iter_mut()) {
        *error = fd.revents().is_some_and(|r| r.contains(PollFlags::POLLERR));
    }
    Ok(())
}

/// Takes the ICMP errors queued on `socket` and calls `unreachable` with each destination
/// that answered "port unreachable" (the address a response was sent to). Other errors are
/// counted in the return value's second part.
pub(crate) fn take_errors(
    socket: &UdpSocket,
    mut unreachable: impl FnMut(SocketAddr),
) -> (u64, u64) {
    let mut control = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
    let mut payload = [0u8; 64];
    let (mut port_unreachable, mut other) = (0, 0);
    // A bound on the work per call: the queue is itself bounded by the receive buffer.
    for _ in 0..1024 {
        let mut iov = [io::IoSliceMut::new(&mut payload)];
        let Ok(message) = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        ) else {
            break;
        };
        let destination = message.address.as_ref().and_then(std_addr);
        let Ok(cmsgs) = message.cmsgs() else {
            other += 1;
            continue;
        };
        for cmsg in cmsgs {
            let closed = match cmsg {
                ControlMessageOwned::Ipv4RecvErr(err, _) => {
                    err.ee_origin == libc::SO_EE_ORIGIN_ICMP && err.ee_type == 3 && err.ee_code == 3
                }
                ControlMessageOwned::Ipv6RecvErr(err, _) => {
                    err.ee_origin == libc::SO_EE_ORIGIN_ICMP6
                        && err.ee_type == 1
                        && err.ee_code == 4
                }
                _ => continue,
            };
            match destination {
                Some(to) if closed => {
                    port_unreachable += 1;
                    unreachable(canonical(to));
                }
                _ => other += 1,
            }
        }
    }
    (port_unreachable, other)
}

impl Listening {
    /// The kernel's count of datagrams it dropped for this socket (its receive buffer was
    /// full): the counter `SO_RXQ_OVFL` reports, read from `/proc/self/net/udp` or `udp6`
    /// by the socket's inode, so that it is known even when no datagram follows the drops.
    /// `/proc/self/net` is the process's own view of `/proc/net`, and stays visible where
    /// `/proc/net` is hidden (systemd's `ProcSubset=pid`). An error says why it cannot be
    /// read (no `/proc` at all).
    pub(crate) fn kernel_drops(&self) -> io::Result<u64> {
        let table = if self.addr.is_ipv6() {
            "/proc/self/net/udp6"
        } else {
            "/proc/self/net/udp"
        };
        let inode = self
            .inode
            .ok_or_else(|| io::Error::other("its inode is unknown (/proc/self/fd)"))?
            .to_string();
        let text = std::fs::read_to_string(table)
            .map_err(|error| io::Error::new(error.kind(), format!("{table}: {error}")))?;
        text.lines()
            .skip(1)
            .find_map(|line| {
                // Fields: sl local rem st queues tr:when retrnsmt uid timeout inode ref
                // pointer drops.
                let mut fields = line.split_whitespace().skip(9);
                if fields.next() != Some(inode.as_str()) {
                    return None;
                }
                fields.nth(2).and_then(drops_field)
            })
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("socket inode {inode} is not in {table}"),
                )
            })
    }
}

/// The `drops` column of `/proc/net/udp`: the kernel prints its 32-bit counter signed, so
/// past 2^31 drops it reads negative.
fn drops_field(field: &str) -> Option<u64> {
    let value: i64 = field.parse().ok()?;
    u64::try_from(value)
        .or_else(|_| u64::try_from(value + (1 << 32)))
        .ok()
}

/// Sends `bytes` to `to` from `socket`, writing a v4-mapped address when `socket` is IPv6.
pub(crate) fn send_from(socket: &Listening, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
    let to = match (socket.addr, to.ip()) {
        (SocketAddr::V6(_), IpAddr::V4(ip)) => {
            SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), to.port())
        }
        _ => to,
    };
    socket.socket.send_to(bytes, to)
}

/// Receives on `socket` until `stop`, handing each datagram to `deliver` (which returns
/// false when nobody takes them any more); then takes what is still queued in the socket, so
/// nothing that arrived before the stop is left behind.
pub(crate) fn receive_until_stopped(
    socket: &UdpSocket,
    addr: SocketAddr,
    stop: &AtomicBool,
    buf: &mut [u8],
    mut deliver: impl FnMut(SocketAddr, &[u8]) -> bool,
) {
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(buf) {
            Ok((len, from)) => {
                if !deliver(canonical(from), &buf[..len]) {
                    return;
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(error) => eprintln!("ncrx: receive error on {addr}: {error}"),
        }
    }
    if socket.set_nonblocking(true).is_err() {
        return;
    }
    while let Ok((len, from)) = socket.recv_from(buf) {
        if !deliver(canonical(from), &buf[..len]) {
            return;
        }
    }
}

/// A flag that SIGINT and SIGTERM set (the listeners then flush and stop).
/// Sets the returned flag on `signals` instead of their default action (which for SIGHUP,
/// SIGUSR1 and SIGUSR2 ends the process without a flush).
pub(crate) fn flag_on_signals(signals: &[i32]) -> Result<std::sync::Arc<AtomicBool>, Failure> {
    let flag = std::sync::Arc::new(AtomicBool::new(false));
    for &signal in signals {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&flag)).map_err(|source| {
            Failure::Stream {
                what: "cannot install a signal handler",
                source,
            }
        })?;
    }
    Ok(flag)
}

pub(crate) fn stop_on_signals() -> Result<std::sync::Arc<AtomicBool>, Failure> {
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&stop)).map_err(|source| {
            Failure::Stream {
                what: "cannot install a signal handler",
                source,
            }
        })?;
    }
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_keyed_as_ipv4_when_mapped_and_keep_their_interface() {
        let key = |text: &str| canonical(text.parse().unwrap()).to_string();
        assert_eq!(key("[::ffff:192.0.2.1]:6665"), "192.0.2.1:6665");
        assert_eq!(key("[fe80::1%3]:6665"), "[fe80::1%3]:6665");
        assert_eq!(key("[2001:db8::1]:6665"), "[2001:db8::1]:6665");
        assert_eq!(key("192.0.2.1:6665"), "192.0.2.1:6665");
    }

    #[test]
    fn the_drops_column_is_read_as_the_kernels_unsigned_counter() {
        assert_eq!(drops_field("0"), Some(0));
        assert_eq!(drops_field("2147483647"), Some(2_147_483_647));
        // Printed with %d: past 2^31 the counter shows negative.
        assert_eq!(drops_field("-2147483648"), Some(2_147_483_648));
        assert_eq!(drops_field("-1"), Some(4_294_967_295));
        assert_eq!(drops_field("x"), None);
    }

    #[test]
    fn a_bound_socket_has_a_drop_counter() {
        let socket = bind_listener("127.0.0.1:0".parse().unwrap(), false, 1 << 20).unwrap();
        assert_eq!(socket.kernel_drops().unwrap(), 0);
    }
}
