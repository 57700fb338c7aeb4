//! Lab setup beyond the namespaces: loopguard's own tunnel routes on the TUN.

use anyhow::Context;
use loopguard::os::linux::TunnelRoutes;
use loopguard::GuardConfig;
use loopguard_lab::Lab;

/// Installs `0.0.0.0/0` and `::/0` on the TUN with loopguard's own `TunnelRoutes`, inside the
/// client namespace: its netlink sockets and sysctl writes act on the calling thread's
/// namespace. Deleting the namespace later removes the rules, routes and nftables table too.
pub(super) fn install_tunnel_routes(lab: &Lab) -> anyhow::Result<()> {
    let tun = lab.tun();
    lab.client()
        .run(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let routes = TunnelRoutes::new(GuardConfig::default());
                let prefixes: [ipnet::IpNet; 2] = ["0.0.0.0/0".parse()?, "::/0".parse()?];
                routes
                    .apply(tun, &prefixes)
                    .await
                    .context("installing the tunnel routes on the TUN")?;
                Ok(())
            })
        })
        .context("entering the client namespace")?
}
