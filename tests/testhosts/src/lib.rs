//! Real OpenSSH test hosts, each in its own network and mount namespace.
