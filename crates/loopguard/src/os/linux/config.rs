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
    #[error(
        "mark {mark:#x} has bits outside mask {mask:#x}: give a mask that covers every bit of \
         the mark (mask 0xffffffff compares the whole mark, as `ip rule fwmark` and wg-quick do), \
         or leave the mask out"
    )]
    MarkOutsideMask {
        /// The mark.
        mark: u32,
        /// The mask.
        mask: u32,
    },
    /// Tables 0 and 253 to 255 belong to the kernel (unspec, default, main, local).
    #[error("table {0} is reserved by the kernel (0, 253, 254 and 255 are)")]
    ReservedTable(u32),
    /// Priority 0 belongs to the `local` rule, and both rules (`priority` and
    /// `priority + 1`) must sit before the kernel's `lookup main` rule at 32766: a rule added
    /// at an existing rule's priority goes after it, so `priority + 1 = 32766` would land
    /// after `lookup main` and unmarked traffic would skip the tunnel.
    #[error(
        "priority {0} is invalid: use {min} to {max} so both rules (PRIORITY and PRIORITY+1) \
         sit before the kernel's `from all lookup main` rule at 32766",
        min = GuardConfig::MIN_PRIORITY,
        max = GuardConfig::MAX_PRIORITY
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

    /// The mask used when a mark is given without one: the whole mark is compared, as
    /// `ip rule add fwmark X` and wg-quick do. A user who names a mark means that mark.
    pub const FULL_MASK: u32 = u32::MAX;
    /// The lowest priority accepted: 0 belongs to the kernel's `local` rule.
    pub const MIN_PRIORITY: u32 = 1;
    /// The highest priority accepted: the second rule then sits at 32765, still before the
    /// kernel's `lookup main` at 32766.
    pub const MAX_PRIORITY: u32 = 32_764;

    /// Checks and builds a configuration from all four numbers. To change one value and
    /// keep the defaults of the others, use [`builder`](Self::builder) or
    /// [`with_mark`](Self::with_mark).
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
        if !(Self::MIN_PRIORITY..=Self::MAX_PRIORITY).contains(&priority) {
            return Err(ConfigError::BadPriority(priority));
        }
        Ok(GuardConfig {
            mark,
            mask,
            table,
            priority,
        })
    }

    /// A builder starting from the defaults; see [`GuardConfigBuilder`] for how the mask
    /// follows the mark.
    pub fn builder() -> GuardConfigBuilder {
        GuardConfigBuilder::default()
    }

    /// The defaults with `mark`, compared as a whole (mask [`FULL_MASK`](Self::FULL_MASK)),
    /// as `ip rule fwmark MARK` and wg-quick compare it.
    pub fn with_mark(mark: u32) -> Result<Self, ConfigError> {
        Self::builder().mark(mark).build()
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

/// Builds a [`GuardConfig`] with only the values that differ from the defaults.
///
/// The mask follows the mark: with neither given, the default mark and mask; with a mark
/// and no mask, the whole mark is compared ([`GuardConfig::FULL_MASK`]); with a mask and no
/// mark, the default mark under that mask. [`build`](Self::build) checks the result as
/// [`GuardConfig::new`] does.
///
/// ```
/// # #[cfg(target_os = "linux")] {
/// use loopguard::GuardConfig;
/// let c = GuardConfig::builder().mark(0xca6c).table(51_820).build().unwrap();
/// assert_eq!((c.mark(), c.mask(), c.table()), (0xca6c, 0xffff_ffff, 51_820));
/// assert_eq!(c.priority(), GuardConfig::DEFAULT_PRIORITY);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardConfigBuilder {
    mark: Option<u32>,
    mask: Option<u32>,
    table: Option<u32>,
    priority: Option<u32>,
}

impl GuardConfigBuilder {
    /// The socket mark.
    pub fn mark(mut self, mark: u32) -> Self {
        self.mark = Some(mark);
        self
    }

    /// The bits of the mark the rule compares.
    pub fn mask(mut self, mask: u32) -> Self {
        self.mask = Some(mask);
        self
    }

    /// The tunnel's routing table.
    pub fn table(mut self, table: u32) -> Self {
        self.table = Some(table);
        self
    }

    /// The priority of the first rule.
    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets whichever of the four values are `Some` (command-line options, for example).
    pub fn set(
        self,
        mark: Option<u32>,
        mask: Option<u32>,
        table: Option<u32>,
        priority: Option<u32>,
    ) -> Self {
        GuardConfigBuilder {
            mark: mark.or(self.mark),
            mask: mask.or(self.mask),
            table: table.or(self.table),
            priority: priority.or(self.priority),
        }
    }

    /// The checked configuration.
    pub fn build(self) -> Result<GuardConfig, ConfigError> {
        let (mark, mask) = match (self.mark, self.mask) {
            (None, None) => (GuardConfig::DEFAULT_MARK, GuardConfig::DEFAULT_MASK),
            (Some(mark), None) => (mark, GuardConfig::FULL_MASK),
            (None, Some(mask)) => (GuardConfig::DEFAULT_MARK, mask),
            (Some(mark), Some(mask)) => (mark, mask),
        };
        GuardConfig::new(
            mark,
            mask,
            self.table.unwrap_or(GuardConfig::DEFAULT_TABLE),
            self.priority.unwrap_or(GuardConfig::DEFAULT_PRIORITY),
        )
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
        // 32765 would put the second rule at 32766, after the kernel's `lookup main`.
        assert_eq!(
            GuardConfig::new(1, 1, 100, 32_765),
            Err(ConfigError::BadPriority(32_765))
        );
        assert!(GuardConfig::new(1, 1, 100, 32_764).is_ok());
        let e = GuardConfig::new(1, 1, 100, 32_765).unwrap_err().to_string();
        assert!(e.contains("32765") && e.contains("1 to 32764"), "{e}");
    }

    #[test]
    fn a_mark_given_alone_is_compared_whole() {
        for mark in [0xca6c, 0xfd00_2021, 0x6d6f_6c65] {
            let c = GuardConfig::with_mark(mark).unwrap();
            assert_eq!((c.mark(), c.mask()), (mark, u32::MAX));
            assert_eq!(
                (c.table(), c.priority()),
                (GuardConfig::DEFAULT_TABLE, GuardConfig::DEFAULT_PRIORITY)
            );
        }
        assert_eq!(GuardConfig::with_mark(0), Err(ConfigError::ZeroMark));
    }

    #[test]
    fn the_builder_changes_only_what_it_is_given() {
        assert_eq!(GuardConfig::builder().build(), Ok(GuardConfig::default()));
        let c = GuardConfig::builder().table(51_820).build().unwrap();
        assert_eq!(
            (c.mark(), c.mask(), c.table()),
            (GuardConfig::DEFAULT_MARK, GuardConfig::DEFAULT_MASK, 51_820)
        );
        let c = GuardConfig::builder().mask(0xff).build().unwrap_err();
        assert_eq!(
            c,
            ConfigError::MarkOutsideMask {
                mark: GuardConfig::DEFAULT_MARK,
                mask: 0xff
            }
        );
        let c = GuardConfig::builder()
            .mark(0x100)
            .mask(0xf00)
            .priority(100)
            .build()
            .unwrap();
        assert_eq!((c.mark(), c.mask(), c.priority()), (0x100, 0xf00, 100));
        let c = GuardConfig::builder()
            .set(Some(0xca6c), None, Some(7), None)
            .build()
            .unwrap();
        assert_eq!((c.mark(), c.mask(), c.table()), (0xca6c, u32::MAX, 7));
        let e = GuardConfig::builder()
            .mark(0xca6c)
            .mask(0x30ff)
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("0xca6c") && e.contains("0xffffffff"), "{e}");
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
