//! Installs the process-wide rustls crypto provider (ring) exactly once, before any TLS client is built.

use std::sync::Once;

static INSTALL: Once = Once::new();

/// Safe to call any number of times, from any thread.
pub fn install_crypto_provider() {
    INSTALL.call_once(|| {
        // An error means a provider is installed already (by a test harness): that one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
