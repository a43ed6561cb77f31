//! What init prints on the serial console for xtask: the marker every such
//! line starts with, and the words around a benchmark's result.

/// Prefix of every line init prints for xtask.
pub const MARKER: &str = "FAULTD-VM:";

/// Marker words around a benchmark's JSON result on the console.
pub const RESULT_BEGIN: &str = "result-begin";
pub const RESULT_END: &str = "result-end";

/// Prefix of the lines a test prints to hand a file to xtask: `begin NAME
/// LEN`, then the file in base64 (76 characters a line), then `end NAME`.
pub const ARTIFACT: &str = "FAULTD-ARTIFACT ";

/// The files tests printed on `console`: (name, contents) for each whose
/// decoded length matches what its begin line announced, (name, error)
/// for the others. Kernel messages interleaved with the lines are skipped:
/// only lines carrying the prefix count.
pub fn artifacts(console: &str) -> Vec<(String, Result<Vec<u8>, String>)> {
    let mut out = Vec::new();
    let mut current: Option<(String, usize, String)> = None;
    for line in console.lines() {
        let Some(at) = line.find(ARTIFACT) else {
            continue;
        };
        let rest = line[at + ARTIFACT.len()..].trim_end_matches('\r');
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["begin", name, len] => {
                let len = len.parse().unwrap_or(usize::MAX);
                current = Some(((*name).to_owned(), len, String::new()));
            }
            ["end", name] => {
                if let Some((n, len, text)) = current.take()
                    && n == *name
                {
                    let decoded = decode_base64(&text).and_then(|bytes| {
                        if bytes.len() == len {
                            Ok(bytes)
                        } else {
                            Err(format!("{} bytes arrived, {len} were sent", bytes.len()))
                        }
                    });
                    out.push((n, decoded));
                }
            }
            [chunk] => {
                if let Some((_, _, text)) = current.as_mut() {
                    text.push_str(chunk);
                }
            }
            _ => {}
        }
    }
    out
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let value = |c: u8| -> Result<u32, String> {
        Ok(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("{:?} is not base64", char::from(c))),
        }))
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "{} base64 characters, not a multiple of 4",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for quad in bytes.chunks(4) {
        let pad = quad.iter().rev().take_while(|c| **c == b'=').count();
        let mut n = 0_u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_survive_interleaved_kernel_lines_and_detect_truncation() {
        let console = "boot\n\
            FAULTD-ARTIFACT begin a.bin 5\n\
            [   12.345678] random: crng init done\n\
            FAULTD-ARTIFACT aGVsbG8=\n\
            FAULTD-ARTIFACT end a.bin\n\
            FAULTD-ARTIFACT begin b.bin 6\n\
            FAULTD-ARTIFACT aGVsbG8=\n\
            FAULTD-ARTIFACT end b.bin\n";
        let got = artifacts(console);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], ("a.bin".to_owned(), Ok(b"hello".to_vec())));
        assert!(
            got[1]
                .1
                .as_ref()
                .is_err_and(|e| e.contains("5 bytes arrived"))
        );
        assert_eq!(decode_base64("aGk=").as_deref(), Ok(&b"hi"[..]));
        assert_eq!(decode_base64("aGkh").as_deref(), Ok(&b"hi!"[..]));
    }
}
