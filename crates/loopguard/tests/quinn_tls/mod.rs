//! Shared by the quinn tests: a self-signed certificate for one server name, the server and
//! client configurations that trust it, and a stream echo on the server side.
// Each test file uses a part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The name the certificate is issued for and the clients ask for.
pub const SERVER_NAME: &str = "quinn.lab.invalid";

/// A server configuration with a fresh self-signed certificate, and a client configuration
/// that trusts exactly that certificate; both give up a silent peer after `idle`.
pub fn configs(idle: Duration) -> (quinn::ServerConfig, quinn::ClientConfig) {
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()]).unwrap();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut server = quinn::ServerConfig::with_single_cert(vec![cert.clone()], key).unwrap();
    server.transport_config(transport(idle));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();
    client.transport_config(transport(idle));
    (server, client)
}

fn transport(idle: Duration) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(idle.try_into().unwrap()));
    Arc::new(transport)
}

/// Accepts connections until the endpoint is closed; on each, echoes every bidirectional
/// stream (read to its end, written back, finished). Returns the peers it served, in order.
pub async fn echo_server(endpoint: quinn::Endpoint) -> Vec<std::net::SocketAddr> {
    let mut peers = Vec::new();
    while let Some(incoming) = endpoint.accept().await {
        let Ok(connection) = incoming.await else {
            continue;
        };
        peers.push(connection.remote_address());
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                let Ok(data) = recv.read_to_end(1 << 20).await else {
                    return;
                };
                let _ = send.write_all(&data).await;
                let _ = send.finish();
            }
        });
    }
    peers
}

/// Opens a bidirectional stream on `connection`, writes `payload`, finishes, and returns
/// what came back.
pub async fn echo_once(connection: &quinn::Connection, payload: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = connection.open_bi().await.expect("open a stream");
    send.write_all(payload).await.expect("write the stream");
    send.finish().expect("finish the stream");
    recv.read_to_end(1 << 20).await.expect("read the echo")
}

/// `len` bytes that are not all alike.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}
