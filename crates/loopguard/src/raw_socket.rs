//! The raw-socket borrowing traits of the guarded types; what a borrower must not do is in
//! the crate's "Raw sockets" section.

/// Implements the raw-socket borrowing traits for `$ty` by delegating to its field
/// `$field`, which already implements them.
macro_rules! borrow_raw_socket {
    ($ty:ty, $field:ident) => {
        #[cfg(unix)]
        impl std::os::fd::AsFd for $ty {
            /// Borrows the socket; see the crate's "Raw sockets" section for what not to do
            /// with it.
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                self.$field.as_fd()
            }
        }

        #[cfg(unix)]
        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.$field.as_raw_fd()
            }
        }

        #[cfg(windows)]
        impl std::os::windows::io::AsSocket for $ty {
            /// Borrows the socket; see the crate's "Raw sockets" section for what not to do
            /// with it.
            fn as_socket(&self) -> std::os::windows::io::BorrowedSocket<'_> {
                self.$field.as_socket()
            }
        }

        #[cfg(windows)]
        impl std::os::windows::io::AsRawSocket for $ty {
            fn as_raw_socket(&self) -> std::os::windows::io::RawSocket {
                self.$field.as_raw_socket()
            }
        }
    };
}

pub(crate) use borrow_raw_socket;
