//! Frames as network functions see them: bytes an NF may rewrite in place and, when it
//! encapsulates or decapsulates (IPsec ESP, VXLAN), lengthen or shorten.
//!
//! An NF never learns what holds the bytes (a DPDK packet buffer, a heap buffer, a `Vec` in a
//! unit test); it only learns how far the frame can grow ([`Frame::room`]). Growing never
//! reallocates on the fast path: a frame that does not fit is the NF's counted drop.

/// The frame cannot grow to the requested length: its buffer is too small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom {
    pub wanted: usize,
    pub room: usize,
}

/// A frame buffer whose length an NF may change.
pub trait Frame: AsRef<[u8]> + AsMut<[u8]> {
    /// The largest length the frame can take.
    fn room(&self) -> usize;

    /// Makes the frame `len` bytes long. Bytes that appear at the tail are unspecified (the
    /// NF writes them). Fails, leaving the frame unchanged, when `len` exceeds [`Frame::room`].
    fn set_frame_len(&mut self, len: usize) -> Result<(), NoRoom>;

    /// Opens a gap of `n` bytes at offset `at`, moving the bytes from `at` on towards the
    /// tail; the gap's contents are unspecified. `at` past the end is clamped to the end.
    fn insert_gap(&mut self, at: usize, n: usize) -> Result<(), NoRoom> {
        let old = self.as_ref().len();
        let at = at.min(old);
        let new = old.checked_add(n).ok_or(NoRoom { wanted: usize::MAX, room: self.room() })?;
        self.set_frame_len(new)?;
        self.as_mut().copy_within(at..old, at + n);
        Ok(())
    }

    /// Removes `n` bytes at offset `at`, moving the tail up. Removing past the end removes
    /// what is there.
    fn remove_range(&mut self, at: usize, n: usize) {
        let old = self.as_ref().len();
        let at = at.min(old);
        let n = n.min(old - at);
        self.as_mut().copy_within(at + n..old, at);
        // Shrinking always fits.
        let _ = self.set_frame_len(old - n);
    }
}

/// Test and tool frames: a `Vec` grows up to the largest IPv4 datagram plus link headers.
impl Frame for Vec<u8> {
    fn room(&self) -> usize {
        MAX_VEC_FRAME
    }

    fn set_frame_len(&mut self, len: usize) -> Result<(), NoRoom> {
        if len > MAX_VEC_FRAME {
            return Err(NoRoom { wanted: len, room: MAX_VEC_FRAME });
        }
        self.resize(len, 0);
        Ok(())
    }
}

/// The most a `Vec` frame may hold: a 64 KiB datagram plus Ethernet and two VLAN tags.
pub const MAX_VEC_FRAME: usize = 65_535 + 22;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_open_and_close() {
        let mut f: Vec<u8> = vec![1, 2, 3, 4];
        f.insert_gap(1, 2).unwrap();
        assert_eq!(f.len(), 6);
        assert_eq!((f[0], f[3], f[4], f[5]), (1, 2, 3, 4));
        f.remove_range(1, 2);
        assert_eq!(f, vec![1, 2, 3, 4]);
        f.insert_gap(99, 1).unwrap();
        assert_eq!(f.len(), 5);
        f.remove_range(3, 99);
        assert_eq!(f, vec![1, 2, 3]);
        assert_eq!(
            f.set_frame_len(MAX_VEC_FRAME + 1),
            Err(NoRoom { wanted: MAX_VEC_FRAME + 1, room: MAX_VEC_FRAME })
        );
        assert_eq!(f, vec![1, 2, 3]);
    }
}
