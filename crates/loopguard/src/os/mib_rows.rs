//! The rows of an IP Helper table (`MIB_IPFORWARD_TABLE2`, `MIB_UNICASTIPADDRESS_TABLE`, ...):
//! `{ ULONG NumEntries; ROW Table[ANY_SIZE]; }`, declared in Rust as `Table: [ROW; 1]`.
//!
//! The rows must be reached through a raw-pointer projection of the table pointer
//! (`addr_of!((*table).Table)`), never through `(*table).Table.as_ptr()`: that creates a
//! reference to a one-element array, whose provenance covers one row, so reading
//! `NumEntries` rows through it is undefined behaviour. Portable (a macro over any such
//! struct) so its test runs on every OS.

/// A slice over the `NumEntries` rows of the table `$table` points to.
///
/// # Safety
/// `$table` must be a `*const` or `*mut` to a live table as the IP Helper API returns it
/// (`NumEntries` contiguous rows starting at `Table`), alive for the slice's lifetime.
#[cfg_attr(not(windows), allow(unused_macros))]
macro_rules! mib_rows {
    ($table:expr) => {{
        let table = $table;
        let first = ::std::ptr::addr_of!((*table).Table).cast();
        ::std::slice::from_raw_parts(first, (*table).NumEntries as usize)
    }};
}
#[cfg_attr(not(windows), allow(unused_imports))]
pub(crate) use mib_rows;

#[cfg(test)]
mod tests {
    #[allow(non_snake_case)]
    #[repr(C)]
    struct FakeTable {
        NumEntries: u32,
        Table: [u64; 1],
    }

    #[test]
    fn every_row_is_read_through_the_table_pointer() {
        // Room for three rows after the count, like the API's allocation.
        let mut storage = vec![0u64; 4];
        let base = storage.as_mut_ptr();
        // SAFETY: `storage` holds a u32 count, padding, then three u64 rows, laid out as
        // `FakeTable` with `Table` extended to three entries.
        let rows: &[u64] = unsafe {
            let table = base.cast::<FakeTable>();
            (*table).NumEntries = 3;
            let first = std::ptr::addr_of_mut!((*table).Table).cast::<u64>();
            for i in 0..3 {
                first.add(i).write(10 + i as u64);
            }
            mib_rows!(table as *const FakeTable)
        };
        assert_eq!(rows, &[10, 11, 12]);
        drop(storage);
    }
}
