//! Hashing for the balancers: a stable (same on every node and release) 64-bit hash for keys and
//! ring points, the consistent-hash `Ring`, SipHash-2-4 keyed by the daemon's `SessionKey` for
//! sticky cookies, and a seeded mixer for random draws.
use std::fmt;

/// The golden-ratio increment of splitmix64.
pub const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The splitmix64 finalizer: a bijective 64-bit mix.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 64 random bits from the OS (the clock if that fails): seeds for random draws and tokens.
pub fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most bytes.len() bytes into bytes.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n == bytes.len() as isize {
        return u64::from_le_bytes(bytes);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    mix(t.as_nanos() as u64)
}

/// FNV-1a 64 with a splitmix finalizer: stable across nodes, processes and Rust releases
/// (unlike `std`'s `DefaultHasher`), so every node maps a key to the same endpoint.
#[derive(Clone, Copy, Debug)]
pub struct StableHasher(u64);

impl StableHasher {
    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn finish(self) -> u64 {
        mix(self.0)
    }
}

/// A consistent-hash ring: `VNODES` points per member, each at the stable hash of the member's
/// identity and the point number. A key belongs to the first point at or after its hash.
#[derive(Debug, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    pub const VNODES: u32 = 160;

    /// A ring over members identified (stably, e.g. by address) by `identities`, in order.
    pub fn new(identities: impl IntoIterator<Item = String>) -> Self {
        let mut points = Vec::new();
        for (member, id) in identities.into_iter().enumerate() {
            let member = u32::try_from(member).expect("fewer than 4 billion members");
            for v in 0..Self::VNODES {
                let mut h = StableHasher::new();
                h.write(id.as_bytes());
                h.write(b"#");
                h.write(&v.to_le_bytes());
                points.push((h.finish(), member));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The member owning `key` (the ring must not be empty).
    pub fn lookup(&self, key: u64) -> u32 {
        let at = self.points.partition_point(|p| p.0 < key);
        self.points[at % self.points.len()].1
    }
}

/// The secret that keys sticky-cookie values (`--session-cookie-key`, else random per start).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionKey(pub [u8; 16]);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// 128 random bits.
    pub fn random() -> Self {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&seed().to_le_bytes());
        key[8..].copy_from_slice(&seed().to_le_bytes());
        Self(key)
    }

    /// From 32 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("expected 32 hex digits (128 bits)".to_owned());
        }
        let mut key = [0u8; 16];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Self(key))
    }

    /// SipHash-2-4 of `data` under this key.
    pub fn sign(&self, data: &[u8]) -> u64 {
        let k0 = u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"));
        let k1 = u64::from_le_bytes(self.0[8..].try_into().expect("8 bytes"));
        siphash24(k0, k1, data)
    }
}

fn siphash24(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut v = [
        0x736f_6d65_7073_6575 ^ k0,
        0x646f_7261_6e64_6f6d ^ k1,
        0x6c79_6765_6e65_7261 ^ k0,
        0x7465_6462_7974_6573 ^ k1,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut chunks = data.chunks_exact(8);
    for chunk in chunks.by_ref() {
        let m = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = (data.len() as u64) << 56;
    for (i, &b) in chunks.remainder().iter().enumerate() {
        last |= u64::from(b) << (8 * i);
    }
    v[3] ^= last;
    round(&mut v);
    round(&mut v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_matches_the_reference_vectors() {
        let key = SessionKey(core::array::from_fn(|i| i as u8));
        assert_eq!(key.sign(b""), 0x726f_db47_dd0e_0e31);
        let fifteen: Vec<u8> = (0..15).collect();
        assert_eq!(key.sign(&fifteen), 0xa129_ca61_49be_45e5);
        let eight: Vec<u8> = (0..8).collect();
        assert_eq!(key.sign(&eight), 0x93f5_f579_9a93_2462);
    }

    #[test]
    fn session_keys_parse_from_hex_only() {
        let k = SessionKey::from_hex("000102030405060708090a0b0c0d0e0F").unwrap();
        assert_eq!(k.0, core::array::from_fn(|i| i as u8));
        assert!(SessionKey::from_hex("00").is_err());
        assert!(SessionKey::from_hex(&"zz".repeat(16)).is_err());
        assert_eq!(format!("{k:?}"), "SessionKey(..)");
    }

    #[test]
    fn stable_hash_is_pinned() {
        // Changing the hash would move every consistent-hash key: this pins it.
        let mut h = StableHasher::new();
        h.write(b"10.0.0.1:8080");
        assert_eq!(h.finish(), 0xe6be_330c_3d44_a2e2);
        let mut empty = StableHasher::new();
        empty.write(b"");
        assert_eq!(empty.finish(), mix(0xcbf2_9ce4_8422_2325));
    }
}
