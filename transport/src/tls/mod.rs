//! Mutual TLS between nodes (rustls with the `ring` provider), an option beside the
//! shared-secret handshake.
//!
//! TLS is a layer between a socket backend and the endpoint, so both backends (io_uring and
//! mio) get it from the same code and the endpoint stays sans-io and unaware of it:
//!
//! ```text
//!   EndpointState (plaintext frames)
//!        ▲ on_data(plaintext)       │ send(plaintext)
//!   TlsLayer: one rustls connection per socket (read_tls / process_new_packets / reader,
//!        ▲ on_data(ciphertext)      │ writer / write_tls)
//!        │                          ▼ send(ciphertext)
//!   Io backend (io_uring or mio)
//! ```
//!
//! **What is checked.** Both sides present a certificate that must chain to the configured CA
//! and be valid now (an expired or not-yet-valid certificate is refused); TLS 1.3 only, no
//! session resumption (every connection verifies the certificates afresh). The layer hands
//! the endpoint no plaintext before the TLS handshake (and with it the verification of the
//! peer's certificate) has succeeded, so a peer that fails it has none of its frames decoded;
//! it is closed after a TLS alert and counted in `NodeStats::rejected`.
//!
//! **Identity rule.** A node's certificate names the IP address peers dial and the node
//! announces, as an IP subject alternative name (the port is not checked):
//! * dialling out, the server's certificate must name the dialled IP (rustls' server-name
//!   check), and the endpoint already insists that the server announce the dialled address;
//! * accepting, the client's certificate must name the IP the client announces in its HELLO
//!   (the layer reads that first frame before handing it on); otherwise the connection closes.
//!
//! **TLS and the secret.** The percore handshake (HELLO / CHALLENGE / RESPONSE, which carries
//! each node's identity and incarnation) still runs, inside TLS. With a secret configured it
//! is proven as well, so both the certificate and the secret are needed; without one, its
//! HMAC uses the empty key and proves nothing: the certificate is the credential. So a node
//! with TLS may listen beyond loopback without a secret.

mod config;
mod layer;

pub use config::{TlsConfig, TlsError};
pub(crate) use layer::TlsLayer;
