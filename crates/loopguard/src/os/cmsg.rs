//! A control-message buffer for `sendmsg` / `WSASendMsg`, laid out in plain bytes so every
//! OS's encoder ([`darwin_control`](super::darwin_control), `wsa_control`,
//! [`linux_control`](super::linux_control)) is tested byte by byte on every OS.
//!
//! The systems differ only in the header's `cmsg_len` field and in the alignment; a
//! [`Layout`] holds both. Each message is `{ len; int level; int type; }`, then the data at
//! the header size rounded up to the alignment, then padding to the alignment;
//! `cmsg_len` counts the header (with its padding) and the data, never the trailing padding
//! (what `CMSG_LEN` gives on every one of these systems).

/// How one system lays out a control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Bytes of the `cmsg_len` field: `socklen_t` (4) on Darwin, `size_t` on Linux and
    /// Windows.
    pub(crate) len_size: usize,
    /// Alignment of the data and of each message (a power of two).
    pub(crate) align: usize,
}

impl Layout {
    /// `sizeof(struct cmsghdr)`: the length field and two `int`s.
    pub(crate) const fn header(self) -> usize {
        self.len_size + 8
    }

    /// Rounds `n` up to the alignment (`CMSG_ALIGN`).
    pub(crate) const fn align(self, n: usize) -> usize {
        (n + self.align - 1) & !(self.align - 1)
    }

    /// Where a message's data starts, from the message's start.
    pub(crate) const fn data_offset(self) -> usize {
        self.align(self.header())
    }

    /// `CMSG_LEN(data)`: what a message's `cmsg_len` holds.
    pub(crate) const fn len(self, data: usize) -> usize {
        self.data_offset() + data
    }

    /// `CMSG_SPACE(data)`: how far the next message starts.
    pub(crate) const fn space(self, data: usize) -> usize {
        self.data_offset() + self.align(data)
    }
}

/// Bytes a [`Control`] holds: enough for packet info, ECN and a segment size with their
/// headers on every layout (Linux IPv6: 40 + 24 + 24).
pub(crate) const CAPACITY: usize = 128;

/// A control buffer; `u64` words keep it aligned for any `struct cmsghdr`.
#[derive(Clone, Debug)]
pub(crate) struct Control {
    layout: Layout,
    buf: [u64; CAPACITY / 8],
    len: usize,
}

impl Control {
    /// An empty buffer for `layout`.
    pub(crate) fn new(layout: Layout) -> Self {
        Control {
            layout,
            buf: [0; CAPACITY / 8],
            len: 0,
        }
    }

    /// Appends one message. The encoders write at most three small messages, which always
    /// fit (checked in debug builds).
    pub(crate) fn push(&mut self, level: i32, ty: i32, data: &[u8]) {
        let layout = self.layout;
        let start = self.len;
        let end = start + layout.space(data.len());
        debug_assert!(end <= CAPACITY);
        let len = layout.len(data.len());
        let data_at = start + layout.data_offset();
        let bytes = self.bytes_mut();
        let at = start + layout.len_size;
        if layout.len_size == 4 {
            bytes[start..at].copy_from_slice(&(len as u32).to_ne_bytes());
        } else {
            bytes[start..at].copy_from_slice(&(len as u64).to_ne_bytes()[..layout.len_size]);
        }
        bytes[at..at + 4].copy_from_slice(&level.to_ne_bytes());
        bytes[at + 4..at + 8].copy_from_slice(&ty.to_ne_bytes());
        bytes[data_at..data_at + data.len()].copy_from_slice(data);
        self.len = end;
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `[u64; N]` is `8 * N` initialised bytes; u8 has no alignment or validity
        // requirements.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr().cast::<u8>(), CAPACITY) }
    }

    /// The encoded messages (empty when there are none).
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: as in `bytes_mut`; `len` never exceeds the array.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<u8>(), self.len) }
    }

    /// The buffer for `msg_control` (no kernel writes to it on send).
    #[allow(dead_code)] // Unused where no OS send path of ours is compiled (Android, BSDs).
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.buf.as_mut_ptr().cast()
    }
}

/// (level, type, data) of each message of `bytes`, walked the way `CMSG_NXTHDR` does; panics
/// on trailing bytes. For the encoders' tests.
#[cfg(test)]
pub(crate) fn decode(layout: Layout, bytes: &[u8]) -> Vec<(i32, i32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + layout.header() <= bytes.len() {
        let mut len = [0u8; 8];
        len[..layout.len_size].copy_from_slice(&bytes[at..at + layout.len_size]);
        let len = if layout.len_size == 4 {
            u32::from_ne_bytes(len[..4].try_into().unwrap()) as usize
        } else {
            u64::from_ne_bytes(len) as usize
        };
        let f = at + layout.len_size;
        let level = i32::from_ne_bytes(bytes[f..f + 4].try_into().unwrap());
        let ty = i32::from_ne_bytes(bytes[f + 4..f + 8].try_into().unwrap());
        out.push((
            level,
            ty,
            bytes[at + layout.data_offset()..at + len].to_vec(),
        ));
        at += layout.align(len);
    }
    assert_eq!(at, bytes.len(), "trailing bytes in the control buffer");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_header_data_and_padding_with_len_counting_no_padding() {
        let l = Layout {
            len_size: 8,
            align: 8,
        };
        let mut c = Control::new(l);
        c.push(17, 103, &1200u16.to_ne_bytes());
        c.push(0, 1, &2i32.to_ne_bytes());
        let b = c.bytes();
        assert_eq!(b.len(), 24 + 24);
        assert_eq!(u64::from_ne_bytes(b[..8].try_into().unwrap()), 18);
        assert_eq!(&b[18..24], &[0; 6]);
        assert_eq!(
            decode(l, b),
            vec![
                (17, 103, 1200u16.to_ne_bytes().to_vec()),
                (0, 1, 2i32.to_ne_bytes().to_vec())
            ]
        );
        let small = Layout {
            len_size: 4,
            align: 4,
        };
        let mut c = Control::new(small);
        c.push(41, 36, &[1, 0, 0, 0]);
        assert_eq!(c.bytes().len(), 16);
        assert_eq!(u32::from_ne_bytes(c.bytes()[..4].try_into().unwrap()), 16);
    }
}
