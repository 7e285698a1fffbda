//! Content digests: the hex SHA-256 by which steps compare files, inputs and cache keys.

use sha2::Digest;
use std::path::Path;

/// Hex SHA-256 of `bytes` (lower case, 64 characters).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Hex SHA-256 and length of a file's content, read in chunks rather than held in memory.
/// Blocking: call it off the async runtime (in [`crate::blocking`]).
pub fn sha256_file_hex(path: &Path) -> std::io::Result<(String, u64)> {
    let mut hasher = sha2::Sha256::new();
    let len = std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), len))
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

    #[test]
    fn file_digest_matches_the_in_memory_one() {
        let dir = std::env::temp_dir().join(format!("siteflow-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data");
        // Larger than one read buffer, not a multiple of it.
        let data: Vec<u8> = (0..300_001u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let got = super::sha256_file_hex(&path);
        let missing = super::sha256_file_hex(&dir.join("missing"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got.unwrap(), (super::sha256_hex(&data), data.len() as u64));
        assert_eq!(missing.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    }
}
