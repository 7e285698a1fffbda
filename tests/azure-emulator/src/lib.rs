//! A spec-faithful local Azure emulator for siteflow tests and the sandbox.
