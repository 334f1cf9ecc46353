//! Frame buffers and the per-core pool they come from.

/// Default capacity of a frame buffer: a standard 1500-byte MTU frame with VLAN tags fits,
/// with room to spare for encapsulation.
pub const DEFAULT_FRAME_CAPACITY: usize = 2048;

/// An owned frame buffer: `capacity` bytes of storage, the first `len` of which are the frame.
#[derive(Debug)]
pub struct PktBuf {
    data: Box<[u8]>,
    len: usize,
}

impl PktBuf {
    pub fn with_capacity(capacity: usize) -> PktBuf {
        PktBuf { data: vec![0u8; capacity].into_boxed_slice(), len: 0 }
    }

    /// The frame.
    #[inline]
    pub fn data(&self) -> &[u8] {
        self.data.get(..self.len).unwrap_or(&[])
    }

    /// The frame, writable in place.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        self.data.get_mut(..len).unwrap_or(&mut [])
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// The whole storage, for a receive path to fill before calling [`PktBuf::set_len`].
    #[inline]
    pub fn storage_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Sets the frame length, clamped to the capacity.
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.data.len());
    }

    /// Replaces the frame with a copy of `frame`; returns false (and leaves the buffer empty)
    /// when it does not fit.
    #[inline]
    pub fn fill(&mut self, frame: &[u8]) -> bool {
        match self.data.get_mut(..frame.len()) {
            Some(dst) => {
                dst.copy_from_slice(frame);
                self.len = frame.len();
                true
            }
            None => {
                self.len = 0;
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
        b.len = 0;
        Some(b)
    }

    /// Returns a buffer to the pool. Buffers from other pools are accepted (software steering
    /// moves frames between cores); past its initial size the pool hands surplus to the
    /// exchange, or frees it when it has none.
    #[inline]
    pub fn put(&mut self, buf: PktBuf) {
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
