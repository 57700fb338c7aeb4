//! The Linux mark strategy on real sockets: the mark is on every socket the factory makes, and
//! without CAP_NET_ADMIN no socket is handed out.
#![cfg(target_os = "linux")]

use std::os::fd::AsRawFd;

use loopguard::{Error, GuardConfig, LinuxMark, SocketFactory};

fn mark_of(fd: &impl AsRawFd) -> u32 {
    int_option(fd, libc::SOL_SOCKET, libc::SO_MARK)
}

fn int_option(fd: &impl AsRawFd, level: libc::c_int, option: libc::c_int) -> u32 {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes; len holds value's size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(
        rc,
        0,
        "getsockopt(SO_MARK): {}",
        std::io::Error::last_os_error()
    );
    value as u32
}

/// Removes CAP_NET_ADMIN and CAP_NET_RAW (either lets a socket set a mark since Linux 5.17)
/// from the calling thread's effective set. Capabilities are per thread on Linux, so the rest
/// of the test process keeps its own.
fn drop_net_admin_on_this_thread() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_NET_RAW: u32 = 13;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: header and data have the layout capget/capset expect for version 3.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !((1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW));
        assert_eq!(
            libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
            0
        );
    }
}

#[tokio::test]
async fn every_socket_carries_the_configured_mark() {
    if loopguard_lab::skip_unprivileged("every_socket_carries_the_configured_mark") {
        return;
    }
    let config = GuardConfig::new(0x1234, 0xffff, 4321, 4000).unwrap();
    let factory = SocketFactory::new(LinuxMark::new(config));
    let udp4 = factory.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let udp6 = factory.bind("[::1]:0".parse().unwrap()).unwrap();
    assert_eq!(mark_of(&udp4), 0x1234);
    assert_eq!(mark_of(&udp6), 0x1234);
    // IPv6 sockets prefer stable source addresses over temporary ones.
    let preferences = int_option(&udp6, libc::IPPROTO_IPV6, libc::IPV6_ADDR_PREFERENCES);
    assert_ne!(
        preferences & libc::IPV6_PREFER_SRC_PUBLIC as u32,
        0,
        "{preferences:#x}"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = factory
        .connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    assert_eq!(mark_of(&tcp.into_inner()), 0x1234);
}

#[test]
fn without_cap_net_admin_no_socket_is_made_and_the_error_names_the_capability() {
    let result = std::thread::spawn(|| {
        drop_net_admin_on_this_thread();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let factory = SocketFactory::new(LinuxMark::new(GuardConfig::default()));
            let udp = factory.bind("127.0.0.1:0".parse().unwrap()).map(drop);
            let tcp = factory
                .connect("127.0.0.1:9".parse().unwrap())
                .await
                .map(drop);
            (udp, tcp)
        })
    })
    .join()
    .unwrap();
    for outcome in [result.0, result.1] {
        let err = outcome.expect_err("a socket was made without CAP_NET_ADMIN");
        assert!(err.is_fatal());
        let Error::Protection(protection) = &err else {
            panic!("untyped error: {err:?}")
        };
        assert_eq!(protection.os_error().raw_os_error(), Some(libc::EPERM));
        assert!(err.to_string().contains("CAP_NET_ADMIN"), "{err}");
    }
}
