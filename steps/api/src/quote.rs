//! POSIX shell quoting: the one function every interpolated value goes through.

/// Quotes `value` so a POSIX shell reads it back as exactly one word, byte for byte.
///
/// Words made only of characters no shell treats specially are returned as they are
/// (for readable logs); everything else is wrapped in single quotes, inside which
/// nothing is special except the single quote itself, written as `'\''`.
pub fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if plain {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Whether `name` can be an environment variable name in a POSIX shell.
pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Has a real `sh` parse the quoted word and print it back.
    fn round_trip(value: &str) -> String {
        let script = format!("printf '%s' {}", shell_quote(value));
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "sh failed on {script:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    const AWKWARD: &[&str] = &[
        "",
        "plain",
        "it's",
        "'",
        "''",
        "a'b'c",
        "$HOME",
        "${PATH}",
        "$(id)",
        "`id`",
        "a;b",
        "; rm -rf /",
        "a && b || c",
        "line1\nline2\n",
        "tab\there",
        "back\\slash",
        "\"double\"",
        "*?[]~#!",
        "-n",
        "--",
        "grüße, 日本語, emoji 🚀",
        " leading and trailing ",
    ];

    #[test]
    fn real_shell_reads_back_every_value() {
        for v in AWKWARD {
            assert_eq!(
                round_trip(v),
                *v,
                "value {v:?} quoted as {}",
                shell_quote(v)
            );
        }
    }

    #[test]
    fn quoting_shapes() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("abc/def.txt"), "abc/def.txt");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$x"), "'$x'");
        assert_eq!(shell_quote("a\nb"), "'a\nb'");
        // Quoting cannot stop option parsing; `--` does.
        assert_eq!(shell_quote("-rf"), "-rf");
        assert_eq!(shell_quote("ü"), "'ü'");
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("K3S_TOKEN"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("1A"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name("A B"));
    }
}
