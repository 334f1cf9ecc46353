//! nflet's OS boundary for AF_PACKET: every `unsafe` of the af_packet port is in this file.
//!
//! It wraps the syscalls the port needs (socket, setsockopt/getsockopt, bind, mmap/munmap,
//! send, ioctl, if_nametoindex) in safe functions, and owns the memory the kernel shares with
//! us through [`RingMap`]. Callers compute ring offsets in safe code; `RingMap` bounds-checks
//! every access, so a wrong offset yields `None`, never a read outside the mapping. Ring
//! headers are never cast to Rust structs: fields are read at the offsets in [`off`], which
//! tests check against the `libc` definitions of the kernel's structs.
//!
//! Memory ordering follows the TPACKET protocol (Documentation/networking/packet_mmap.rst):
//! the status word of a block or frame is loaded with Acquire before its contents are read,
//! and stored with Release after its contents are written, handing it to the other side.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

/// Byte offsets of the ring header fields nflet uses (`linux/if_packet.h`).
pub(super) mod off {
    /// `struct tpacket_block_desc`: `hdr.bh1.block_status` (V3 RX block).
    pub const BLOCK_STATUS: usize = 8;
    /// `hdr.bh1.num_pkts`.
    pub const BLOCK_NUM_PKTS: usize = 12;
    /// `hdr.bh1.offset_to_first_pkt`.
    pub const BLOCK_FIRST_PKT: usize = 16;
    /// `struct tpacket3_hdr` (one V3 RX packet).
    pub const T3_NEXT_OFFSET: usize = 0;
    pub const T3_SNAPLEN: usize = 12;
    pub const T3_LEN: usize = 16;
    pub const T3_STATUS: usize = 20;
    pub const T3_MAC: usize = 24;
    pub const T3_VLAN_TCI: usize = 32;
    pub const T3_VLAN_TPID: usize = 36;
    /// `struct tpacket2_hdr` (one V2 TX frame).
    pub const T2_STATUS: usize = 0;
    pub const T2_LEN: usize = 4;
    /// Where a TX frame's data starts without PACKET_TX_HAS_OFF:
    /// `TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)`.
    pub const T2_DATA: usize = 32;
}

/// The system page size (ring blocks must be multiples of it).
pub(super) fn page_size() -> usize {
    // SAFETY: sysconf only reads a configuration value; _SC_PAGESIZE is always valid.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

/// The index of interface `name` in the calling thread's network namespace.
pub(super) fn if_nametoindex(name: &str) -> io::Result<u32> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call, which only
    // reads it.
    let idx = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if idx == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(idx)
    }
}

/// An AF_PACKET socket (non-blocking, close-on-exec), closed on drop.
#[derive(Debug)]
pub(super) struct PacketSocket {
    fd: OwnedFd,
}

/// `struct ifreq` as the two ioctls below use it: a name, then a union whose first bytes hold
/// `ifr_flags` (short) or `ifr_mtu` (int). 40 bytes on 64-bit Linux.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl PacketSocket {
    /// `socket(AF_PACKET, SOCK_RAW, htons(protocol))`. Protocol 0 receives nothing, which is
    /// what a transmit-only socket wants.
    pub fn open(protocol: u16) -> io::Result<PacketSocket> {
        let ty = libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: socket(2) takes only integers and returns a new descriptor or -1.
        let fd = unsafe { libc::socket(libc::AF_PACKET, ty, i32::from(protocol.to_be())) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2): it is open and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PacketSocket { fd })
    }

    /// setsockopt with a plain-data value the kernel copies in.
    fn setsockopt<T: Copy>(&self, level: i32, name: i32, val: &T) -> io::Result<()> {
        let len = std::mem::size_of::<T>() as libc::socklen_t;
        // SAFETY: the kernel reads `len` bytes from `val`, a live reference of exactly that
        // size, and writes nothing.
        let rc =
            unsafe { libc::setsockopt(self.fd.as_raw_fd(), level, name, ptr::from_ref(val).cast(), len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// getsockopt into a byte buffer; returns how many bytes the kernel wrote.
    fn getsockopt(&self, level: i32, name: i32, buf: &mut [u8]) -> io::Result<usize> {
        let mut len = libc::socklen_t::try_from(buf.len()).unwrap_or(libc::socklen_t::MAX);
        // SAFETY: the kernel writes at most `len` bytes into `buf`, which is valid for writes
        // of `buf.len() >= len` bytes, and stores the written length in `len`.
        let rc =
            unsafe { libc::getsockopt(self.fd.as_raw_fd(), level, name, buf.as_mut_ptr().cast(), &mut len) };
        if rc == 0 {
            Ok(len as usize)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn set_int(&self, level: i32, name: i32, val: i32) -> io::Result<()> {
        self.setsockopt(level, name, &val)
    }

    pub fn get_int(&self, level: i32, name: i32) -> io::Result<i32> {
        let mut buf = [0u8; 4];
        self.getsockopt(level, name, &mut buf)?;
        Ok(i32::from_ne_bytes(buf))
    }

    pub fn set_rx_ring_v3(&self, req: &libc::tpacket_req3) -> io::Result<()> {
        self.setsockopt(libc::SOL_PACKET, libc::PACKET_RX_RING, req)
    }

    pub fn set_tx_ring(&self, req: &libc::tpacket_req) -> io::Result<()> {
        self.setsockopt(libc::SOL_PACKET, libc::PACKET_TX_RING, req)
    }

    pub fn add_promisc(&self, ifindex: u32) -> io::Result<()> {
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as i32,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        self.setsockopt(libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
    }

    /// Attaches a classic BPF program of one instruction, `ret #0`: the socket drops
    /// everything until [`PacketSocket::detach_filter`].
    pub fn attach_drop_all(&self) -> io::Result<()> {
        let mut insn = [libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0 }]; // BPF_RET|BPF_K
        let prog = libc::sock_fprog { len: 1, filter: insn.as_mut_ptr() };
        // The kernel copies the program during the call; `insn` outlives it.
        self.setsockopt(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
    }

    pub fn detach_filter(&self) -> io::Result<()> {
        self.set_int(libc::SOL_SOCKET, libc::SO_DETACH_FILTER, 0)
    }

    pub fn bind(&self, ifindex: u32, protocol: u16) -> io::Result<()> {
        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: protocol.to_be(),
            sll_ifindex: ifindex as i32,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `sll` is a valid sockaddr_ll of `len` bytes that outlives the call; the
        // kernel only reads it.
        let rc = unsafe { libc::bind(self.fd.as_raw_fd(), ptr::from_ref(&sll).cast(), len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// PACKET_STATISTICS (V3 layout): (packets, drops) since the previous call; the kernel
    /// resets the counters on every read.
    pub fn take_stats(&self) -> io::Result<(u32, u32)> {
        let mut buf = [0u8; 12]; // struct tpacket_stats_v3
        self.getsockopt(libc::SOL_PACKET, libc::PACKET_STATISTICS, &mut buf)?;
        let word = |i: usize| buf.get(i..i + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_ne_bytes);
        Ok((word(0), word(4)))
    }

    /// Asks the kernel to transmit the TX ring frames marked SEND_REQUEST, without waiting.
    pub fn kick_tx(&self) -> io::Result<()> {
        // SAFETY: a null buffer of length 0: the kernel reads no user memory through it. On a
        // socket with a TX ring, this send means "transmit the pending ring frames".
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), ptr::null(), 0, libc::MSG_DONTWAIT) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Interface flags (`IFF_*`) of `name`.
    pub fn iface_flags(&self, name: &str) -> io::Result<u32> {
        let d = self.ifreq(libc::SIOCGIFFLAGS, name)?;
        Ok(u32::from(u16::from_ne_bytes([d[0], d[1]])))
    }

    /// MTU of interface `name`.
    pub fn iface_mtu(&self, name: &str) -> io::Result<u32> {
        let d = self.ifreq(libc::SIOCGIFMTU, name)?;
        Ok(u32::from_ne_bytes([d[0], d[1], d[2], d[3]]))
    }

    fn ifreq(&self, request: libc::Ioctl, name: &str) -> io::Result<[u8; 24]> {
        let mut req = IfReq { name: [0; libc::IFNAMSIZ], data: [0; 24] };
        let bytes = name.as_bytes();
        // Leave room for the terminating NUL.
        let dst = req.name.get_mut(..bytes.len()).filter(|_| bytes.len() < libc::IFNAMSIZ);
        dst.ok_or(io::Error::from(io::ErrorKind::InvalidInput))?.copy_from_slice(bytes);
        // SAFETY: `req` has the size and layout of struct ifreq; SIOCGIFFLAGS and SIOCGIFMTU
        // read the NUL-terminated name and write at most 4 bytes of the union.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), request, ptr::from_mut(&mut req)) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(req.data)
        }
    }

    /// Maps the socket's ring(s): `len` bytes, shared with the kernel.
    pub fn map_ring(&self, len: usize) -> io::Result<RingMap> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_SHARED | libc::MAP_POPULATE;
        // SAFETY: a new mapping at an address the kernel picks (NULL hint), so it overlaps no
        // existing Rust object; the result is checked against MAP_FAILED below.
        let p = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, self.fd.as_raw_fd(), 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or(io::Error::from(io::ErrorKind::Other))?;
        Ok(RingMap { base, len })
    }
}

/// A ring mapped from a packet socket: `len` bytes at `base`, unmapped on drop.
///
/// No Rust reference into the mapping is ever handed out (the kernel writes to it): accessors
/// copy values and bytes in and out through raw pointers, after checking bounds.
#[derive(Debug)]
pub(super) struct RingMap {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain process memory owned by this value alone; nothing ties it to
// the thread that created it, and all access goes through `&self`/`&mut self` methods.
unsafe impl Send for RingMap {}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned, and no pointer into the mapping
        // outlives `self` (accessors never return references into it).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

impl RingMap {
    pub fn len(&self) -> usize {
        self.len
    }

    /// A pointer to `n` bytes at `off`, when they lie inside the mapping.
    fn at(&self, off: usize, n: usize) -> Option<*mut u8> {
        if off.checked_add(n)? > self.len {
            return None;
        }
        Some(self.base.as_ptr().wrapping_add(off))
    }

    /// The status word at `off` (4-byte aligned) as an atomic.
    fn status(&self, off: usize) -> Option<&AtomicU32> {
        if off & 3 != 0 {
            return None;
        }
        let p = self.at(off, 4)?;
        // SAFETY: `p` lies inside the live mapping and is 4-byte aligned (the mapping is
        // page-aligned and `off % 4 == 0`), which is the size and alignment of AtomicU32. The
        // reference cannot outlive `self`, hence the mapping. The kernel updates status words
        // with WRITE_ONCE plus barriers, i.e. as atomics too.
        Some(unsafe { AtomicU32::from_ptr(p.cast()) })
    }

    /// Loads a status word with Acquire: what the kernel wrote before handing the block or
    /// frame over is visible afterwards.
    pub fn load_status(&self, off: usize) -> Option<u32> {
        Some(self.status(off)?.load(Ordering::Acquire))
    }

    /// Stores a status word with Release: everything written before is visible to the kernel
    /// once it sees the new status.
    pub fn store_status(&mut self, off: usize, val: u32) -> Option<()> {
        self.status(off)?.store(val, Ordering::Release);
        Some(())
    }

    pub fn read_u32(&self, off: usize) -> Option<u32> {
        let p = self.at(off, 4)?;
        // SAFETY: 4 readable bytes at `p` inside the mapping; read_unaligned needs no alignment.
        Some(unsafe { ptr::read_unaligned(p.cast::<u32>()) })
    }

    pub fn read_u16(&self, off: usize) -> Option<u16> {
        let p = self.at(off, 2)?;
        // SAFETY: 2 readable bytes at `p` inside the mapping; read_unaligned needs no alignment.
        Some(unsafe { ptr::read_unaligned(p.cast::<u16>()) })
    }

    pub fn write_u32(&mut self, off: usize, val: u32) -> Option<()> {
        let p = self.at(off, 4)?;
        // SAFETY: 4 writable bytes at `p` inside the mapping (mapped PROT_WRITE).
        unsafe { ptr::write_unaligned(p.cast::<u32>(), val) };
        Some(())
    }

    /// Copies `dst.len()` bytes at `off` out of the ring.
    pub fn copy_out(&self, off: usize, dst: &mut [u8]) -> Option<()> {
        let p = self.at(off, dst.len())?;
        // SAFETY: `dst.len()` bytes at `p` are inside the mapping; `dst` is a distinct Rust
        // buffer, so the ranges cannot overlap.
        unsafe { ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) };
        Some(())
    }

    /// Copies `src` into the ring at `off`.
    pub fn copy_in(&mut self, off: usize, src: &[u8]) -> Option<()> {
        let p = self.at(off, src.len())?;
        // SAFETY: `src.len()` writable bytes at `p` are inside the mapping; `src` is a
        // distinct Rust buffer, so the ranges cannot overlap.
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
        Some(())
    }
}

/// Moves the calling thread into the network namespace `ns` (a /run/netns file). Tests run
/// their body on a thread of its own, so the rest of the test binary is unaffected.
#[cfg(test)]
pub(super) fn enter_netns(ns: &std::fs::File) -> io::Result<()> {
    // SAFETY: setns(2) takes a descriptor (kept open by `ns` for the call) and a flag.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::off;
    use std::mem::{offset_of, size_of};

    #[test]
    fn ring_offsets_match_the_kernel_structs() {
        let bh1 = offset_of!(libc::tpacket_block_desc, hdr);
        assert_eq!(bh1 + offset_of!(libc::tpacket_hdr_v1, block_status), off::BLOCK_STATUS);
        assert_eq!(bh1 + offset_of!(libc::tpacket_hdr_v1, num_pkts), off::BLOCK_NUM_PKTS);
        assert_eq!(bh1 + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt), off::BLOCK_FIRST_PKT);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_next_offset), off::T3_NEXT_OFFSET);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_snaplen), off::T3_SNAPLEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_len), off::T3_LEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_status), off::T3_STATUS);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_mac), off::T3_MAC);
        let hv1 = offset_of!(libc::tpacket3_hdr, hv1);
        assert_eq!(hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci), off::T3_VLAN_TCI);
        assert_eq!(hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tpid), off::T3_VLAN_TPID);
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_status), off::T2_STATUS);
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_len), off::T2_LEN);
        assert_eq!(libc::TPACKET2_HDRLEN - size_of::<libc::sockaddr_ll>(), off::T2_DATA);
        assert_eq!(size_of::<super::IfReq>(), size_of::<libc::ifreq>());
        assert_eq!(size_of::<libc::tpacket_stats_v3>(), 12);
    }
}
