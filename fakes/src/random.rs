//! Random tokens shaped like Twitch's: lowercase letters and digits.

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `len` characters drawn uniformly from `[a-z0-9]` with the operating system's generator.
pub(crate) fn lowercase_alphanumeric(len: usize) -> Result<String, getrandom::Error> {
    // 252 is the largest multiple of 36 below 256; rejecting bytes above it keeps every
    // character equally likely.
    const LIMIT: u8 = 252;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf)?;
        for &byte in buf.iter().filter(|&&b| b < LIMIT) {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(byte % 36)]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::lowercase_alphanumeric;

    #[test]
    fn tokens_have_the_requested_length_and_alphabet() {
        for len in [0, 1, 30, 50, 200] {
            let token = lowercase_alphanumeric(len).expect("OS random source");
            assert_eq!(token.len(), len);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            );
        }
    }

    #[test]
    fn two_tokens_differ() {
        let a = lowercase_alphanumeric(30).expect("OS random source");
        let b = lowercase_alphanumeric(30).expect("OS random source");
        assert_ne!(a, b);
    }
}
