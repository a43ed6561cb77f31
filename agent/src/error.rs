//! Error text for people: an error with its chain of sources, the one
//! formatter every layer uses (logs, gRPC messages, capability details).

/// The error and its sources, so an io::Error's text (e.g. "Permission
/// denied") reaches the reader. A source whose text the error already
/// carries is not repeated.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("opening cgroup /x")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("opening cgroup /x: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn sources_are_appended_once() {
        let io = || std::io::Error::from_raw_os_error(libc::EACCES);
        let text = error_chain(&Outer(io()));
        assert!(
            text.starts_with("opening cgroup /x: ") && text.contains("ermission denied"),
            "{text}"
        );
        let text = error_chain(&Repeats(io()));
        assert_eq!(text.matches("ermission denied").count(), 1, "{text}");
    }
}
