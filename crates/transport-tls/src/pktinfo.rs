//! UDP sockets, and what a socket bound to the unspecified address (0.0.0.0, `[::]`) needs
//! to answer correctly: the address each datagram was sent to.
//!
//! Such a socket takes datagrams for every address of the host, and `recv_from` does not
//! say which one a datagram came to, while `send_to` leaves from whatever source the
//! kernel's routing picks. RFC 3581 §4 wants a response sent from the address and port
//! its request arrived at: a client with a connected UDP socket, or a NAT, drops it from
//! another address. On Linux the socket asks for `IP_PKTINFO` (IPv4) or
//! `IPV6_RECVPKTINFO` (IPv6, and IPv4 on a dual-stack socket, given IPv4-mapped), reads
//! with `recvmsg` to learn each datagram's destination, and answers with `sendmsg`
//! carrying that address as the source.
//!
//! Hand-written with `nix`: tokio has no API for ancillary data, and the workspace forbids
//! unsafe code of its own, so `nix`'s safe wrappers run inside tokio's readiness API
//! (`async_io`, `try_io`). A socket bound to a given address keeps plain `recv_from` and
//! `send_to`. On other systems every socket does, and a wildcard socket behaves as before:
//! the local address reported is the wildcard, and the kernel picks the source.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// A bound UDP socket and what is known of it once, not per datagram.
#[derive(Debug)]
pub(crate) struct UdpEndpoint {
    /// Private: every send and receive goes through the methods, which choose the source.
    sock: UdpSocket,
    /// Its bound address (the port the system chose for port 0).
    pub bound: SocketAddr,
    /// Whether datagrams come with their destination address and answers take it as their
    /// source: bound to the unspecified address, on Linux, and the option was accepted.
    pktinfo: bool,
}

impl UdpEndpoint {
    /// Binds a UDP socket on `addr`, asking for destination addresses when `addr` is the
    /// unspecified address (Linux). Should the system refuse that, the socket still works
    /// as it did before: the wildcard is reported as the local address.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let sock = UdpSocket::bind(addr).await?;
        let bound = sock.local_addr()?;
        let pktinfo = bound.ip().is_unspecified() && imp::enable(&sock, bound);
        Ok(Self {
            sock,
            bound,
            pktinfo,
        })
    }

    /// A buffer for the control message [`recv`](Self::recv) reads (empty when the socket
    /// reads none).
    pub fn control_buffer(&self) -> Vec<u8> {
        if self.pktinfo {
            imp::control_buffer()
        } else {
            Vec::new()
        }
    }

    /// Receives a datagram into `buf`: its length, its source, and our address it arrived
    /// at: the destination address with our port for a socket that reads it, else (and
    /// for a datagram without the control message) the bound address.
    ///
    /// Cancel safety: cancel safe (nothing is read before the socket is ready).
    pub async fn recv(
        &self,
        buf: &mut [u8],
        control: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, SocketAddr)> {
        if self.pktinfo {
            return imp::recv(&self.sock, self.bound, buf, control).await;
        }
        let (n, remote) = self.sock.recv_from(buf).await?;
        Ok((n, remote, self.bound))
    }

    /// The source to give a datagram that should leave from `from`: `Some` when `from` is
    /// a concrete address this wildcard socket needs to be told of, `None` when the socket
    /// sends from it anyway (bound there, or the kernel's choice is wanted).
    fn source(&self, from: SocketAddr) -> Option<SocketAddr> {
        (self.pktinfo && !from.ip().is_unspecified()).then_some(from)
    }

    /// Sends `bytes` to `to`, leaving from `from` (a [`recv`](Self::recv) local address, or
    /// the bound address for the kernel's choice of source).
    ///
    /// Cancel safety: cancel safe (if cancelled, the datagram was not sent).
    pub async fn send_from(
        &self,
        bytes: &[u8],
        to: SocketAddr,
        from: SocketAddr,
    ) -> io::Result<()> {
        match self.source(from) {
            Some(src) => imp::send(&self.sock, bytes, to, src).await,
            None => self.sock.send_to(bytes, to).await.map(|_| ()),
        }
    }

    /// As [`send_from`](Self::send_from), without waiting: fails when the socket's send
    /// buffer is full.
    pub fn try_send_from(&self, bytes: &[u8], to: SocketAddr, from: SocketAddr) -> io::Result<()> {
        match self.source(from) {
            Some(src) => imp::try_send(&self.sock, bytes, to, src),
            None => self.sock.try_send_to(bytes, to).map(|_| ()),
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
    use std::os::fd::AsRawFd;

    use nix::libc;
    use nix::sys::socket::{
        recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
        SockaddrStorage,
    };
    use tokio::io::Interest;
    use tokio::net::UdpSocket;

    /// Asks the kernel for each datagram's destination address; `false` (logged) if it
    /// refuses.
    pub fn enable(sock: &UdpSocket, bound: SocketAddr) -> bool {
        let r = match bound {
            SocketAddr::V4(_) => setsockopt(sock, sockopt::Ipv4PacketInfo, &true),
            SocketAddr::V6(_) => setsockopt(sock, sockopt::Ipv6RecvPacketInfo, &true),
        };
        match r {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%bound, error = %e, "no destination addresses on this UDP socket: \
                    responses leave from the address the kernel picks");
                false
            }
        }
    }

    /// Room for one control message of either family (the socket asks for one only).
    pub fn control_buffer() -> Vec<u8> {
        nix::cmsg_space!(libc::in6_pktinfo)
    }

    pub async fn recv(
        sock: &UdpSocket,
        bound: SocketAddr,
        buf: &mut [u8],
        control: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, SocketAddr)> {
        sock.async_io(Interest::READABLE, || recv_now(sock, bound, buf, control))
            .await
    }

    fn recv_now(
        sock: &UdpSocket,
        bound: SocketAddr,
        buf: &mut [u8],
        control: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, SocketAddr)> {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            sock.as_raw_fd(),
            &mut iov,
            Some(control),
            MsgFlags::empty(),
        )?;
        let remote = msg
            .address
            .as_ref()
            .and_then(socket_addr)
            .ok_or_else(|| io::Error::other("datagram without a source address"))?;
        // A truncated or missing control message leaves the bound address.
        let dst = msg
            .cmsgs()
            .ok()
            .and_then(|mut c| c.find_map(destination))
            .map(|(ip, scope)| match ip {
                IpAddr::V4(v4) => SocketAddr::from((v4, bound.port())),
                IpAddr::V6(v6) => SocketAddrV6::new(v6, bound.port(), 0, scope).into(),
            });
        if dst.is_none() {
            tracing::debug!(%remote, "datagram without its destination address");
        }
        Ok((msg.bytes, remote, dst.unwrap_or(bound)))
    }

    fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = a.as_sockaddr_in() {
            return Some((*v4).into());
        }
        a.as_sockaddr_in6().map(|v6| (*v6).into())
    }

    /// The address a datagram was sent to, and for an IPv6 link-local one the interface
    /// (its scope id, needed to send from it again). A multicast or broadcast destination
    /// cannot be a source: IPv4 gives the interface's address for it (`ipi_spec_dst`), IPv6
    /// nothing, so the bound address stands.
    pub(super) fn destination(c: ControlMessageOwned) -> Option<(IpAddr, u32)> {
        let ip = match c {
            ControlMessageOwned::Ipv4PacketInfo(i) => {
                let spec = Ipv4Addr::from(u32::from_be(i.ipi_spec_dst.s_addr));
                let addr = Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr));
                IpAddr::V4(if spec.is_unspecified() { addr } else { spec })
            }
            ControlMessageOwned::Ipv6PacketInfo(i) => {
                let v6 = Ipv6Addr::from(i.ipi6_addr.s6_addr);
                if v6.is_unicast_link_local() {
                    return Some((IpAddr::V6(v6), i.ipi6_ifindex));
                }
                IpAddr::V6(v6)
            }
            _ => return None,
        };
        let v4 = match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        };
        let unusable = ip.is_unspecified()
            || ip.is_multicast()
            || v4.is_some_and(|v4| v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified());
        (!unusable).then_some((ip, 0))
    }

    pub async fn send(
        sock: &UdpSocket,
        bytes: &[u8],
        to: SocketAddr,
        src: SocketAddr,
    ) -> io::Result<()> {
        sock.async_io(Interest::WRITABLE, || send_now(sock, bytes, to, src))
            .await
    }

    pub fn try_send(
        sock: &UdpSocket,
        bytes: &[u8],
        to: SocketAddr,
        src: SocketAddr,
    ) -> io::Result<()> {
        sock.try_io(Interest::WRITABLE, || send_now(sock, bytes, to, src))
    }

    /// One `sendmsg` whose control message sets the source address: `ipi_spec_dst` for
    /// IPv4, `ipi6_addr` for IPv6 (an IPv4-mapped one on a dual-stack socket), with the
    /// interface only for a link-local address. The port is the socket's.
    fn send_now(sock: &UdpSocket, bytes: &[u8], to: SocketAddr, src: SocketAddr) -> io::Result<()> {
        let iov = [IoSlice::new(bytes)];
        let fd = sock.as_raw_fd();
        let dest = SockaddrStorage::from(to);
        let sent = match src {
            SocketAddr::V4(s) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(*s.ip()).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
                sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&dest))
            }
            SocketAddr::V6(s) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: s.ip().octets(),
                    },
                    ipi6_ifindex: s.scope_id(),
                };
                let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
                sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&dest))
            }
        };
        sent.map(|_| ()).map_err(io::Error::from)
    }
}

/// Elsewhere no socket reads destination addresses: [`UdpEndpoint`] never calls the rest.
#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::net::SocketAddr;

    use tokio::net::UdpSocket;

    pub fn enable(_: &UdpSocket, _: SocketAddr) -> bool {
        false
    }

    pub fn control_buffer() -> Vec<u8> {
        Vec::new()
    }

    pub async fn recv(
        sock: &UdpSocket,
        bound: SocketAddr,
        buf: &mut [u8],
        _: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, SocketAddr)> {
        let (n, remote) = sock.recv_from(buf).await?;
        Ok((n, remote, bound))
    }

    pub async fn send(
        sock: &UdpSocket,
        bytes: &[u8],
        to: SocketAddr,
        _: SocketAddr,
    ) -> io::Result<()> {
        sock.send_to(bytes, to).await.map(|_| ())
    }

    pub fn try_send(
        sock: &UdpSocket,
        bytes: &[u8],
        to: SocketAddr,
        _: SocketAddr,
    ) -> io::Result<()> {
        sock.try_send_to(bytes, to).map(|_| ())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use nix::libc;
    use nix::sys::socket::ControlMessageOwned;

    use super::imp::destination;

    fn v4(spec: Ipv4Addr, addr: Ipv4Addr) -> ControlMessageOwned {
        ControlMessageOwned::Ipv4PacketInfo(libc::in_pktinfo {
            ipi_ifindex: 1,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from(spec).to_be(),
            },
            ipi_addr: libc::in_addr {
                s_addr: u32::from(addr).to_be(),
            },
        })
    }

    fn v6(addr: Ipv6Addr, ifindex: u32) -> ControlMessageOwned {
        ControlMessageOwned::Ipv6PacketInfo(libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: addr.octets(),
            },
            ipi6_ifindex: ifindex,
        })
    }

    #[test]
    fn an_ipv4_destination_is_the_local_address_the_kernel_names() {
        let local = Ipv4Addr::new(192, 0, 2, 7);
        // A broadcast came to the interface whose address is `ipi_spec_dst`.
        let got = destination(v4(local, Ipv4Addr::BROADCAST));
        assert_eq!(got, Some((IpAddr::V4(local), 0)));
        let got = destination(v4(Ipv4Addr::UNSPECIFIED, local));
        assert_eq!(got, Some((IpAddr::V4(local), 0)));
    }

    #[test]
    fn a_destination_that_cannot_be_a_source_leaves_the_bound_address() {
        let group = Ipv4Addr::new(224, 0, 1, 75);
        assert_eq!(destination(v4(Ipv4Addr::UNSPECIFIED, group)), None);
        assert_eq!(destination(v6("ff02::1".parse().unwrap(), 2)), None);
        assert_eq!(destination(v6(group.to_ipv6_mapped(), 0)), None);
        assert_eq!(destination(v6(Ipv6Addr::UNSPECIFIED, 0)), None);
    }

    #[test]
    fn a_link_local_ipv6_destination_keeps_its_interface() {
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        assert_eq!(destination(v6(ll, 3)), Some((IpAddr::V6(ll), 3)));
        let global: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(destination(v6(global, 3)), Some((IpAddr::V6(global), 0)));
    }
}
