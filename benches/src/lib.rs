//! Benchmarks live in `benches/`; this library holds what several of them share.

/// Reads a plain-loop specification `<who>:<bytes>:<count>` (the `*_LOOP` variables that run
/// a bench's calls in a loop for callgrind instead of criterion): returns `who`, `bytes` and
/// `count`.
///
/// # Panics
/// When `spec` is not of that form; `var` names the variable in the message.
#[must_use]
pub fn loop_spec<'a>(spec: &'a str, var: &str) -> (&'a str, usize, usize) {
    let mut parts = spec.split(':');
    let who = parts.next().unwrap_or_default();
    let mut number = || -> usize {
        parts
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{var}=<who>:<bytes>:<count>, not {spec:?}"))
    };
    let (bytes, count) = (number(), number());
    (who, bytes, count)
}

#[cfg(test)]
mod tests {
    #[test]
    fn loop_spec_reads_three_fields() {
        assert_eq!(
            super::loop_spec("smoltcp:1500:20000", "X"),
            ("smoltcp", 1500, 20000)
        );
    }

    #[test]
    #[should_panic(expected = "X=<who>:<bytes>:<count>")]
    fn loop_spec_refuses_a_short_one() {
        let _ = super::loop_spec("smoltcp:1500", "X");
    }
}
