//! Argument parsing shared by several commands: numbers in decimal or hex, and the guard's
//! mark, mask, table and priority.

use clap::Args;

/// Parses a `u32` written in decimal (`19527`) or hexadecimal with a `0x` prefix (`0x4c47`).
///
/// Used as a clap value parser, so a bad value is reported by clap together with the option
/// that carried it.
pub fn parse_u32(text: &str) -> Result<u32, String> {
    let trimmed = text.trim();
    let parsed = match trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
    {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => trimmed.parse::<u32>(),
    };
    parsed.map_err(|_| {
        format!("`{text}` is not a 32-bit number (write it in decimal or as 0x-prefixed hex)")
    })
}

/// The guard's numbers as given on the command line; anything left out takes the library's
/// default (see `GuardConfig`).
#[derive(Args, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardArgs {
    /// Socket mark of guarded sockets, decimal or 0x-hex; without --mask the whole mark is
    /// compared (mask 0xffffffff, as `ip rule fwmark` and wg-quick do) [default: 0x3047]
    #[arg(long, value_name = "MARK", value_parser = parse_u32)]
    pub mark: Option<u32>,
    /// Bits of the mark the policy rule compares, decimal or 0x-hex [default: 0x30ff for the
    /// default mark, 0xffffffff with --mark]
    #[arg(long, value_name = "MASK", value_parser = parse_u32)]
    pub mask: Option<u32>,
    /// Routing table that holds the tunnel's routes [default: 19527 (0x4c47)]
    #[arg(long, value_name = "TABLE", value_parser = parse_u32)]
    pub table: Option<u32>,
    /// Priority of the first policy rule; the second sits at PRIORITY+1 [default: 32000]
    #[arg(long, value_name = "PRIORITY", value_parser = parse_u32)]
    pub priority: Option<u32>,
}

/// Only the mark and its mask, for commands that make guarded sockets but install nothing.
#[derive(Args, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarkArg {
    /// Socket mark of guarded sockets, decimal or 0x-hex; without --mask the whole mark is
    /// compared (mask 0xffffffff, as `ip rule fwmark` and wg-quick do) [default: 0x3047]
    #[arg(long, value_name = "MARK", value_parser = parse_u32)]
    pub mark: Option<u32>,
    /// Bits of the mark the policy rule compares, decimal or 0x-hex [default: 0x30ff for the
    /// default mark, 0xffffffff with --mark]
    #[arg(long, value_name = "MASK", value_parser = parse_u32)]
    pub mask: Option<u32>,
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{GuardArgs, MarkArg};
    use loopguard::GuardConfig;

    impl GuardArgs {
        /// The checked configuration, or an error saying which value cannot work.
        pub fn config(&self) -> anyhow::Result<GuardConfig> {
            // A mark given without a mask is compared whole (the builder's rule).
            GuardConfig::builder()
                .set(self.mark, self.mask, self.table, self.priority)
                .build()
                .map_err(|e| {
                    anyhow::Error::new(crate::UsageError(format!("bad guard setting: {e}")))
                })
        }
    }

    impl MarkArg {
        /// The checked configuration with this mark and the library's other defaults.
        pub fn config(&self) -> anyhow::Result<GuardConfig> {
            GuardArgs {
                mark: self.mark,
                mask: self.mask,
                ..GuardArgs::default()
            }
            .config()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_decimal_and_hex() {
        assert_eq!(parse_u32("19527"), Ok(19527));
        assert_eq!(parse_u32("0x4c47"), Ok(0x4c47));
        assert_eq!(parse_u32("0X4C47"), Ok(0x4c47));
        assert_eq!(parse_u32("0xffffffff"), Ok(u32::MAX));
    }

    #[test]
    fn bad_numbers_name_the_value() {
        for bad in ["", "0x", "-1", "0x1_0000_0000", "4294967296", "mark", "12a"] {
            let e = parse_u32(bad).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn defaults_are_the_library_defaults_and_match_the_help_text() {
        use clap::{CommandFactory, Parser};
        use loopguard::GuardConfig;
        assert_eq!(
            GuardArgs::default().config().unwrap(),
            GuardConfig::default()
        );
        assert_eq!(MarkArg::default().config().unwrap(), GuardConfig::default());

        // The help text hard-codes the defaults (the library's are not known on other
        // systems): read it back as a user sees it.
        #[derive(Parser)]
        struct WithGuard {
            #[command(flatten)]
            guard: GuardArgs,
        }
        #[derive(Parser)]
        struct WithMark {
            #[command(flatten)]
            mark: MarkArg,
        }
        let guard_help = WithGuard::command().render_help().to_string();
        let mark_help = WithMark::command().render_help().to_string();
        let mark = format!("[default: {:#x}]", GuardConfig::DEFAULT_MARK);
        for (help, expected) in [
            (&guard_help, mark.clone()),
            (
                &guard_help,
                format!(
                    "[default: {:#x} for the default mark",
                    GuardConfig::DEFAULT_MASK
                ),
            ),
            (
                &mark_help,
                format!(
                    "[default: {:#x} for the default mark",
                    GuardConfig::DEFAULT_MASK
                ),
            ),
            (
                &guard_help,
                format!("[default: {} (", GuardConfig::DEFAULT_TABLE),
            ),
            (
                &guard_help,
                format!("[default: {}]", GuardConfig::DEFAULT_PRIORITY),
            ),
            (&mark_help, mark),
        ] {
            assert!(help.contains(&expected), "help lacks {expected}:\n{help}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_explicit_mark_without_a_mask_is_compared_whole() {
        for mark in [0xca6c, 0xfd00_2021] {
            let c = MarkArg {
                mark: Some(mark),
                mask: None,
            }
            .config()
            .unwrap();
            assert_eq!((c.mark(), c.mask()), (mark, u32::MAX));
            let c = GuardArgs {
                mark: Some(mark),
                table: Some(51_820),
                ..GuardArgs::default()
            }
            .config()
            .unwrap();
            assert_eq!((c.mark(), c.mask(), c.table()), (mark, u32::MAX, 51_820));
        }
        let c = MarkArg {
            mark: Some(0x100),
            mask: Some(0xf00),
        }
        .config()
        .unwrap();
        assert_eq!((c.mark(), c.mask()), (0x100, 0xf00));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn mark_zero_is_a_usage_error_naming_the_mark() {
        let e = MarkArg {
            mark: Some(0),
            mask: None,
        }
        .config()
        .unwrap_err();
        assert!(e.downcast_ref::<crate::UsageError>().is_some());
        assert!(e.to_string().contains("mark 0"), "{e}");
    }
}
