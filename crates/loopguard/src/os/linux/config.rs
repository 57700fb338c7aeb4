//! The numbers that tie guarded sockets to the policy rules: mark, mask, table, priority.

use std::fmt;

/// Mark, mask, routing table and rule priority shared by the Linux guard and
/// [`TunnelRoutes`](super::TunnelRoutes).
///
/// Marks collide (Kubernetes uses `0x4000` and `0x8000`, other VPNs and router firmware use
/// their own), so every number is configurable. Sockets carry `mark`; the policy rule matches
/// `fwmark mark/mask`, so bits another program ORs in outside `mask` do not break matching.
///
/// The rules sit at two adjacent priorities:
/// `priority`: `lookup main suppress_prefixlength 0` (the main table except its default
/// routes), and `priority + 1`: `not fwmark mark/mask lookup table` (everything unmarked goes
/// to the tunnel's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    mark: u32,
    mask: u32,
    table: u32,
    priority: u32,
}

/// A [`GuardConfig`] value that cannot work, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Mark 0 is what every unmarked packet carries: it cannot tell guarded sockets apart.
    #[error("mark 0 is invalid: every unmarked packet has mark 0")]
    ZeroMark,
    /// The mask selects no bits.
    #[error("mask 0 is invalid: it would match every packet")]
    ZeroMask,
    /// The mark has bits outside the mask, so the rule could never match it exactly.
    #[error("mark {mark:#x} has bits outside mask {mask:#x}")]
    MarkOutsideMask {
        /// The mark.
        mark: u32,
        /// The mask.
        mask: u32,
    },
    /// Tables 0 and 253 to 255 belong to the kernel (unspec, default, main, local).
    #[error("table {0} is reserved by the kernel (0, 253, 254 and 255 are)")]
    ReservedTable(u32),
    /// Priority 0 belongs to the `local` rule, and `priority + 1` must still fit.
    #[error(
        "priority {0} is invalid: use 1 to 32765 so both rules sit before `lookup main` (32766)"
    )]
    BadPriority(u32),
}

impl GuardConfig {
    /// The default mark, `0x3047`: inside [`DEFAULT_MASK`](Self::DEFAULT_MASK).
    pub const DEFAULT_MARK: u32 = 0x3047;
    /// The default mask, `0x30ff`: bits 0 to 7, 12 and 13, which the common users of marks
    /// leave alone: Kubernetes' kube-proxy ORs in `0x4000` and `0x8000`, Cilium uses
    /// `0x0f00`, Calico `0xffff0000` and Tailscale `0xff0000`. Bits those programs set on a
    /// guarded packet therefore do not break the match. WireGuard's `0xca6c` is compared as a
    /// whole value by wg-quick and differs from ours. Router firmware often uses the low
    /// byte: change the mark and mask there.
    pub const DEFAULT_MASK: u32 = 0x30ff;
    /// The default table number, `19527` (`0x4c47`, "LG").
    pub const DEFAULT_TABLE: u32 = 0x4c47;
    /// The default priority of the first rule; wg-quick's rules land at 32764 and 32765.
    pub const DEFAULT_PRIORITY: u32 = 32_000;

    /// Checks and builds a configuration.
    pub fn new(mark: u32, mask: u32, table: u32, priority: u32) -> Result<Self, ConfigError> {
        if mark == 0 {
            return Err(ConfigError::ZeroMark);
        }
        if mask == 0 {
            return Err(ConfigError::ZeroMask);
        }
        if mark & !mask != 0 {
            return Err(ConfigError::MarkOutsideMask { mark, mask });
        }
        if matches!(table, 0 | 253..=255) {
            return Err(ConfigError::ReservedTable(table));
        }
        if priority == 0 || priority > 32_765 {
            return Err(ConfigError::BadPriority(priority));
        }
        Ok(GuardConfig {
            mark,
            mask,
            table,
            priority,
        })
    }

    /// The mark every guarded socket carries.
    pub fn mark(&self) -> u32 {
        self.mark
    }

    /// The bits of the mark the policy rule compares.
    pub fn mask(&self) -> u32 {
        self.mask
    }

    /// The routing table that holds the tunnel's routes.
    pub fn table(&self) -> u32 {
        self.table
    }

    /// Priority of the `suppress_prefixlength 0` rule; the fwmark rule sits at `priority + 1`.
    pub fn priority(&self) -> u32 {
        self.priority
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            mark: Self::DEFAULT_MARK,
            mask: Self::DEFAULT_MASK,
            table: Self::DEFAULT_TABLE,
            priority: Self::DEFAULT_PRIORITY,
        }
    }
}

impl fmt::Display for GuardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mark {:#x}/{:#x}, table {}, priorities {} and {}",
            self.mark,
            self.mask,
            self.table,
            self.priority,
            self.priority + 1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_values_that_cannot_work() {
        assert_eq!(
            GuardConfig::new(0, 0xff, 100, 100),
            Err(ConfigError::ZeroMark)
        );
        assert_eq!(GuardConfig::new(1, 0, 100, 100), Err(ConfigError::ZeroMask));
        assert_eq!(
            GuardConfig::new(0x100, 0xff, 100, 100),
            Err(ConfigError::MarkOutsideMask {
                mark: 0x100,
                mask: 0xff
            })
        );
        assert_eq!(
            GuardConfig::new(1, 1, 254, 100),
            Err(ConfigError::ReservedTable(254))
        );
        assert_eq!(
            GuardConfig::new(1, 1, 100, 0),
            Err(ConfigError::BadPriority(0))
        );
        assert_eq!(
            GuardConfig::new(1, 1, 100, 32_766),
            Err(ConfigError::BadPriority(32_766))
        );
    }

    #[test]
    fn accepts_a_masked_mark_and_keeps_every_number() {
        let c = GuardConfig::new(0x10, 0xf0, 1000, 500).unwrap();
        assert_eq!(
            (c.mark(), c.mask(), c.table(), c.priority()),
            (0x10, 0xf0, 1000, 500)
        );
        assert_eq!(
            c.to_string(),
            "mark 0x10/0xf0, table 1000, priorities 500 and 501"
        );
    }

    #[test]
    fn default_is_valid() {
        let d = GuardConfig::default();
        assert_eq!(
            GuardConfig::new(d.mark(), d.mask(), d.table(), d.priority()),
            Ok(d)
        );
    }
}
