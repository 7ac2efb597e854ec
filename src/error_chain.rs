//! An error and its causes as one line, each cause once. Libraries repeat their source's text in
//! their own message at times (reqwest, hyper), so a plain walk would print it twice.

use std::error::Error;

/// The error's own message, then each distinct cause: "a: b: c".
pub fn display(err: &(dyn Error + 'static)) -> String {
    join(vec![err.to_string()], err.source())
}

/// Only the causes below the error, or its own message when it has none. For wrappers whose own
/// text says nothing an operator can act on ("error sending request for url").
pub fn below(err: &(dyn Error + 'static)) -> String {
    match err.source() {
        Some(cause) => display(cause),
        None => err.to_string(),
    }
}

fn join(mut parts: Vec<String>, mut next: Option<&(dyn Error + 'static)>) -> String {
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct E {
        text: &'static str,
        #[source]
        source: Option<Box<E>>,
    }

    fn e(text: &'static str, source: Option<E>) -> E {
        E {
            text,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn each_cause_once() {
        let err = e(
            "send",
            Some(e("connect", Some(e("connect", Some(e("refused", None)))))),
        );
        assert_eq!(display(&err), "send: connect: refused");
        assert_eq!(below(&err), "connect: refused");
        assert_eq!(below(&e("alone", None)), "alone");
        assert_eq!(display(&e("alone", None)), "alone");
    }
}
