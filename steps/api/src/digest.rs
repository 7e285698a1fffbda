//! Content digests: the hex SHA-256 by which steps compare files, inputs and cache keys.

use sha2::Digest;

/// Hex SHA-256 of `bytes` (lower case, 64 characters).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_digest() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
