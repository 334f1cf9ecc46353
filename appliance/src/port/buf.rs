//! Frame buffers and the per-core pool they come from.

/// Default capacity of a frame buffer: a standard 1500-byte MTU frame with VLAN tags fits,
/// with room to spare for encapsulation.
pub const DEFAULT_FRAME_CAPACITY: usize = 2048;

/// An owned frame buffer: `capacity` bytes of storage, the first `len` of which are the frame.
///
/// The storage is either nflet's own heap memory or, for frames received from a DPDK port,
/// the DPDK packet buffer itself (zero copy: NFs rewrite the frame where the NIC wrote it).
#[derive(Debug)]
pub struct PktBuf {
    store: Store,
}

#[derive(Debug)]
enum Store {
    Heap {
        data: Box<[u8]>,
        len: usize,
    },
    #[cfg(feature = "dpdk")]
    Mbuf(super::dpdk::Mbuf),
}

impl PktBuf {
    pub fn with_capacity(capacity: usize) -> PktBuf {
        PktBuf { store: Store::Heap { data: vec![0u8; capacity].into_boxed_slice(), len: 0 } }
    }

    /// A frame held in a DPDK packet buffer.
    #[cfg(feature = "dpdk")]
    #[inline]
    pub fn from_mbuf(m: super::dpdk::Mbuf) -> PktBuf {
        PktBuf { store: Store::Mbuf(m) }
    }

    /// The DPDK packet buffer holding the frame, or the buffer back when it is heap memory.
    #[cfg(feature = "dpdk")]
    #[inline]
    pub fn into_mbuf(self) -> Result<super::dpdk::Mbuf, PktBuf> {
        match self.store {
            Store::Mbuf(m) => Ok(m),
            heap @ Store::Heap { .. } => Err(PktBuf { store: heap }),
        }
    }

    /// The frame.
    #[inline]
    pub fn data(&self) -> &[u8] {
        match &self.store {
            Store::Heap { data, len } => data.get(..*len).unwrap_or(&[]),
            #[cfg(feature = "dpdk")]
            Store::Mbuf(m) => m.data(),
        }
    }

    /// The frame, writable in place.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        match &mut self.store {
            Store::Heap { data, len } => data.get_mut(..*len).unwrap_or(&mut []),
            #[cfg(feature = "dpdk")]
            Store::Mbuf(m) => m.data_mut(),
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Heap { len, .. } => *len,
            #[cfg(feature = "dpdk")]
            Store::Mbuf(m) => m.len(),
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        match &self.store {
            Store::Heap { data, .. } => data.len(),
            #[cfg(feature = "dpdk")]
            Store::Mbuf(m) => m.room(),
        }
    }

    /// The whole storage, for a receive path to fill before calling [`PktBuf::set_len`].
    #[inline]
    pub fn storage_mut(&mut self) -> &mut [u8] {
        match &mut self.store {
            Store::Heap { data, .. } => data,
            #[cfg(feature = "dpdk")]
            Store::Mbuf(m) => m.room_mut(),
        }
    }

    /// Sets the frame length, clamped to the capacity.
    #[inline]
    pub fn set_len(&mut self, new: usize) {
        match &mut self.store {
            Store::Heap { data, len } => *len = new.min(data.len()),
            #[cfg(feature = "dpdk")]
            Store::Mbuf(m) => m.set_len(new),
        }
    }

    /// Replaces the frame with a copy of `frame`; returns false (and leaves the buffer empty)
    /// when it does not fit.
    #[inline]
    pub fn fill(&mut self, frame: &[u8]) -> bool {
        match self.storage_mut().get_mut(..frame.len()) {
            Some(dst) => {
                dst.copy_from_slice(frame);
                self.set_len(frame.len());
                true
            }
            None => {
                self.set_len(0);
                false
            }
        }
    }
}

/// Buffers in transit between pools: software steering moves frames (and so buffers) from
/// the receiving core to the processing core; surplus flows back through here.
pub type BufExchange = std::sync::Arc<crossbeam_queue::ArrayQueue<PktBuf>>;

/// A core's pool of frame buffers, allocated once at start-up.
#[derive(Debug)]
pub struct BufPool {
    free: Vec<PktBuf>,
    capacity: usize,
    frame_capacity: usize,
    exchange: Option<BufExchange>,
}

impl BufPool {
    pub fn new(buffers: usize, frame_capacity: usize) -> BufPool {
        let free = (0..buffers).map(|_| PktBuf::with_capacity(frame_capacity)).collect();
        BufPool { free, capacity: buffers, frame_capacity, exchange: None }
    }

    /// A pool that trades surplus and shortage with other cores' pools through `exchange`.
    pub fn with_exchange(buffers: usize, frame_capacity: usize, exchange: BufExchange) -> BufPool {
        BufPool { exchange: Some(exchange), ..BufPool::new(buffers, frame_capacity) }
    }

    /// A buffer with length zero, or `None` when all are in flight.
    #[inline]
    pub fn get(&mut self) -> Option<PktBuf> {
        let mut b = match self.free.pop() {
            Some(b) => b,
            None => self.exchange.as_ref()?.pop()?,
        };
        b.set_len(0);
        Some(b)
    }

    /// Returns a buffer to the pool. Buffers from other pools are accepted (software steering
    /// moves frames between cores); past its initial size the pool hands surplus to the
    /// exchange, or frees it when it has none. A DPDK buffer goes back to DPDK's pool.
    #[inline]
    pub fn put(&mut self, buf: PktBuf) {
        #[cfg(feature = "dpdk")]
        if let Store::Mbuf(_) = buf.store {
            return;
        }
        if self.free.len() < self.capacity {
            self.free.push(buf);
        } else if let Some(x) = &self.exchange {
            let _ = x.push(buf);
        }
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    pub fn frame_capacity(&self) -> usize {
        self.frame_capacity
    }
}

impl AsMut<[u8]> for PktBuf {
    #[inline]
    fn as_mut(&mut self) -> &mut [u8] {
        self.data_mut()
    }
}

impl nflet_nfs::frame::Frame for PktBuf {
    #[inline]
    fn room(&self) -> usize {
        self.capacity()
    }

    #[inline]
    fn set_frame_len(&mut self, len: usize) -> Result<(), nflet_nfs::frame::NoRoom> {
        let room = self.capacity();
        if len > room {
            return Err(nflet_nfs::frame::NoRoom { wanted: len, room });
        }
        self.set_len(len);
        Ok(())
    }
}

impl AsRef<[u8]> for PktBuf {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_hands_out_and_takes_back() {
        let mut p = BufPool::new(2, 64);
        let mut a = p.get().unwrap();
        let b = p.get().unwrap();
        assert!(p.get().is_none());
        assert!(a.fill(&[1, 2, 3]));
        assert_eq!(a.data(), &[1, 2, 3]);
        assert!(!a.fill(&[0u8; 65]));
        assert!(a.is_empty());
        p.put(a);
        p.put(b);
        p.put(PktBuf::with_capacity(64));
        assert_eq!(p.available(), 2);
    }
}
