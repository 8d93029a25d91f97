//! Error messages with their whole cause chain, so a log line or a readiness answer says
//! *why* (connection refused, DNS failure, TLS, timeout), not just that a request failed.

use std::error::Error;

/// `err` followed by each of its sources, joined by `": "`; a source whose text the
/// previous message already contains is skipped, so nothing is said twice.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<dyn Error + 'static>>);
    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref()
        }
    }

    #[test]
    fn every_cause_is_named_once_in_order() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err = Layer(
            "error sending request",
            Some(Box::new(Layer(
                "client error (Connect)",
                Some(Box::new(Layer("tcp connect error", Some(Box::new(io))))),
            ))),
        );
        assert_eq!(
            chain(&err),
            "error sending request: client error (Connect): tcp connect error: connection refused"
        );
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let err = Layer(
            "timed out: deadline has elapsed",
            Some(Box::new(Layer("deadline has elapsed", None))),
        );
        assert_eq!(chain(&err), "timed out: deadline has elapsed");
    }
}
