//! What the benches share.

/// `size` bytes of printable text that does not compress (a xorshift
/// stream), in lines of 100: log tails that cost what real ones do.
pub fn noisy(size: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if i % 100 == 99 {
                b'\n'
            } else {
                b' ' + (state % 94) as u8
            }
        })
        .collect()
}
